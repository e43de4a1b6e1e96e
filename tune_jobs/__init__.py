"""Entry points of the studies (`python tune_jobs/<study>.py`) and the sweep machinery in core/.

A script runs the code of its own checkout or nothing: with two checkouts of this project (a
second clone, a git worktree) and one environment, Python imports the package from wherever it
was installed (`pip install -e`), so `python ../other/tune_jobs/phase1.py` would silently run
this checkout's trainables and runner. Importing the package from a script of another checkout
stops with one line that says which install to make."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent


def _checkout_of(script: str) -> Path | None:
    """The checkout of this project (a folder with pyproject.toml, tune_jobs/ and trainables/)
    that holds the Python file `script`; None for anything else (an installed package's file,
    a study of your own outside any checkout, `-c`)."""
    try:
        path = Path(script).resolve()
        if path.suffix != ".py" or not path.is_file():
            return None
        for folder in path.parents:
            if folder.name in ("site-packages", "dist-packages"):
                return None
            if (
                (folder / "pyproject.toml").is_file()
                and (folder / "tune_jobs" / "__init__.py").is_file()
                and (folder / "trainables").is_dir()
            ):
                return folder
    except (OSError, RuntimeError, ValueError):
        return None
    return None


def _check_same_checkout() -> None:
    script = sys.argv[0] if sys.argv and sys.argv[0] else ""
    root = _checkout_of(script) if script else None
    if root is None or root == _ROOT:
        return
    sys.stderr.write(
        f"error: {script} is in the checkout {root}, but this Python imports the project's code "
        f"from {_ROOT}; install this one into the environment (pip install -e {root}) "
        "or run it with its own environment\n"
    )
    raise SystemExit(2)


_check_same_checkout()
