"""A sweep's description (sweep.json), written beside Ray's experiment state before the first
trial starts and read back by `--resume`, `report.py --replay` and the report: the study and
where it is declared, the experiment file, profile, --quick and overrides, the composed base
config, the planned points and the MLflow URI. A resumed sweep runs exactly what it started
with, whatever has changed in the YAML since. One typed record, read in one place."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tune_jobs.core.errors import ConfigError, one_line

SWEEP_FILE = "sweep.json"


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _name(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _is(check: Callable[[Any], bool], what: str, **default: Any) -> Any:
    """A field of sweep.json with its check and what it must be in words."""
    return field(metadata={"check": check, "what": what}, **default)


@dataclass(frozen=True)
class SweepRecord:
    study: str = _is(_name, "the study's name")
    sweep_id: str = _is(_name, "the sweep's id")
    tracking_uri: str = _is(_name, "the MLflow tracking URI")
    # A replay needs only the three above.
    experiment: str = _is(_text, "a string", default="")
    experiment_file: str = _is(_name, "the experiment file's path", default="")
    profile: str = _is(_name, "a profile's name", default="local")
    # Empty in sweeps recorded before studies were found by module.
    study_module: str = _is(_text, "a string", default="")
    study_file: str = _is(_text, "a path", default="")
    # The script the sweep was started with (empty: from Python).
    entry_script: str = _is(_text, "a path", default="")
    quick: bool = _is(lambda v: isinstance(v, bool), "true or false", default=False)
    overrides: list[str] = _is(
        lambda v: isinstance(v, list) and all(isinstance(o, str) for o in v),
        "a list of key=value strings",
        default_factory=list,
    )
    base: dict[str, Any] = _is(lambda v: isinstance(v, dict), "an object (the composed config)", default_factory=dict)
    points: list[dict[str, Any]] = _is(
        lambda v: isinstance(v, list) and all(isinstance(p, dict) for p in v), "a list of objects", default_factory=list
    )
    git_commit: str = _is(_text, "a string", default="")
    # The newest Tune run's share of an extended sweep (tune_jobs/core/extend.py); {}: all of it.
    extension: dict[str, Any] = _is(lambda v: isinstance(v, dict), "an object", default_factory=dict)
    created: float = _is(
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number", default_factory=time.time
    )

    @property
    def script(self) -> str:
        """The script that runs the sweep's study: the one it was started with, else the file
        declaring it (a study of one's own is its own script), else tune_jobs/<study>.py."""
        if self.entry_script:
            return self.entry_script
        if self.study_file and not self.study_file.endswith("/study.py"):
            return self.study_file
        return f"tune_jobs/{self.study}.py"

    def write(self, sweep_dir: Path) -> None:
        from trainables.common.context import atomic_file

        with atomic_file(sweep_dir / SWEEP_FILE) as tmp:
            Path(tmp).write_text(json.dumps(asdict(self), indent=1, default=str))

    @classmethod
    def read(cls, sweep_dir: Path, *, resume: bool = False) -> SweepRecord:
        """The sweep's record; ConfigError naming the file, the field and the fix when it is
        missing or damaged (not JSON, or a field of the wrong type). A replay and the report
        need the study, the sweep id and the tracking URI only; with `resume`, what recomposes
        the sweep (its experiment file, profile, --quick, overrides, base config and points)
        must be there too."""
        path = sweep_dir / SWEEP_FILE
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"{sweep_dir} is not a sweep folder (no {SWEEP_FILE})") from None
        except OSError as exc:
            raise ConfigError(f"{path} cannot be read ({one_line(exc.strerror or exc)[:120]})") from None
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            what = "empty" if not text.strip() else f"not JSON: {one_line(exc)[:120]}"
            raise ConfigError(f"{path} is damaged ({what}); {DAMAGED_FIX}") from None
        problem = _shape_problem(data, REQUIRED + RESUME_REQUIRED if resume else REQUIRED)
        if problem is not None:
            raise ConfigError(f"{path} is damaged: {problem}; {DAMAGED_FIX}")
        return cls(**{k: v for k, v in data.items() if k in FIELD_KINDS})


# sweep.json is written before the first trial (and again when the sweep is extended); its
# settings are recorded nowhere else.
DAMAGED_FIX = "restore it from a backup, or start the sweep again (its command without --resume)"
REQUIRED = ("study", "sweep_id", "tracking_uri")
RESUME_REQUIRED = ("experiment_file", "profile", "quick", "overrides", "base", "points")


# Every field's check and what it must be in words, as the record declares them.
FIELD_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    f.name: (f.metadata["check"], f.metadata["what"]) for f in fields(SweepRecord)
}


def _found(value: Any) -> str:
    """A JSON value as a user would name it: null, a string ('abc'), a list ([1]) ..."""
    if value is None:
        return "null"
    kind = {bool: "", dict: "an object", list: "a list", str: "a string"}.get(type(value), "a number")
    shown = json.dumps(value, default=str)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return shown if not kind else f"{kind} ({shown})"


def _shape_problem(data: Any, required: tuple[str, ...]) -> str | None:
    """What is wrong with sweep.json's content, None when nothing: the first field missing
    (of `required`) or of the wrong type. Fields it does not know are left alone."""
    if not isinstance(data, dict):
        return f"it holds {_found(data)}, not an object"
    for name, (ok, what) in FIELD_KINDS.items():
        if name not in data:
            if name in required:
                return f"'{name}' is missing" + (" (--resume needs it)" if name in RESUME_REQUIRED else "")
        elif not ok(data[name]):
            return f"'{name}' is {_found(data[name])}, not {what}"
    return None
