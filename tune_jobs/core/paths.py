"""Where a sweep's files go, and names made safe to use as path parts."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SEARCH_SPACES = PROJECT_ROOT / "search_spaces"


def safe_name(name: str) -> str:
    """A user-given name as one path part: no separators, no '..', nothing hidden."""
    cleaned = re.sub(r"[^A-Za-z0-9_.=,+-]+", "_", name).strip("._") or "unnamed"
    return cleaned[:120]


def experiment_file(name_or_path: str) -> Path:
    """`phase2` -> search_spaces/phase2.yaml; a path ending in .yaml/.yml is taken as given."""
    if name_or_path.endswith((".yaml", ".yml")):
        return Path(name_or_path).expanduser().resolve()
    return SEARCH_SPACES / f"{safe_name(name_or_path)}.yaml"


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        commit = out.stdout.strip()
        if not commit:
            return "unknown"
        dirty = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
