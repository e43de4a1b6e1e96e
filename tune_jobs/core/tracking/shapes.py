"""The shapes of a sweep's MLflow files, each declared once and checked in one place: a result
row of the journal (mlflow_journal.jsonl), a trial's start or end (mlflow_trials.jsonl), the
state file (mlflow_runs.json) and a decision of ASHA's rung journal (asha_rungs.jsonl). A line
that is not of its shape is None (torn by a crash, or damaged: the reader skips it); a state
that is not is a problem in words, which names the first key at fault."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainables.common.jsonl import complete_lines
from tune_jobs.core.errors import one_line
from tune_jobs.core.tracking.failures import SweepFileError

RUNG_JOURNAL = "asha_rungs.jsonl"


def _object(line: bytes) -> dict[str, Any] | None:
    try:
        row = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return row if isinstance(row, dict) else None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_row(line: bytes) -> dict[str, Any] | None:
    """One journal line as a result row, None when it is not one (torn or damaged)."""
    row = _object(line)
    ok = (
        row is not None
        and isinstance(row.get("trial"), str)
        and isinstance(row.get("step"), int)
        and isinstance(row.get("ts"), int)
        and isinstance(row.get("metrics"), dict)
        and all(_number(v) for v in row["metrics"].values())
        and isinstance(row.get("run", ""), (str, type(None)))
    )
    return row if ok else None


def parse_trial_event(line: bytes) -> dict[str, Any] | None:
    """One line of the trials file (a trial's start or end), None when it is not one (torn by
    a crash, or damaged)."""
    row = _object(line)
    if not (
        row is not None
        and isinstance(row.get("trial"), str)
        and isinstance(row.get("point"), dict)
        and isinstance(row.get("name"), str)
        and isinstance(row.get("start_ms"), int)
    ):
        return None
    if row.get("event") == "start":
        return row
    ended = (
        isinstance(row.get("status"), str)
        and isinstance(row.get("end_tags"), dict)
        and isinstance(row.get("artifacts"), list)
        and isinstance(row.get("end_ms"), int)
    )
    return row if row.get("event") == "end" and ended else None


def parse_rung_event(line: bytes) -> dict[str, Any] | None:
    """One line of the rungs journal as the decision it records, None when it is not one."""
    event = _object(line)
    if event is None or not isinstance(event.get("trial"), str):
        return None
    rung, score = event.get("rung"), event.get("score")
    at_rung = isinstance(rung, int) and not isinstance(rung, bool) and rung >= 0
    if event.get("event") == "end":
        return event
    if event.get("event") == "promote" and at_rung:
        return event
    if (
        event.get("event") == "rung"
        and at_rung
        and _number(score)
        and isinstance(event.get("result"), (dict, type(None)))
    ):
        return event
    return None


def rung_journal_problem(path: Path) -> str | None:
    """What makes a rungs journal unusable, in words; None when every complete line is a
    decision (a last line a crash tore never reached Tune: the replay skips it)."""
    try:
        lines = list(complete_lines(path))
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    for number, (_, line) in enumerate(lines, 1):
        if line.strip() and parse_rung_event(line) is None:
            shown = line.strip()[:60].decode(errors="replace")
            return f"line {number} is not a rung decision ({shown})"
    return None


_STATE_KEYS = {
    "experiment": str,
    "tags": dict,
    "base": dict,
    "run_prefix": str,
    "start_ms": int,
    "trials": dict,
    "journal_offset": int,
    "parent_cfg_logged": bool,
    "ended": bool,
}
_TRIAL_KEYS = {"name": str, "point": dict, "start_ms": int, "params_logged": bool, "ended": bool}
# Keys a state may lack (older sweeps, hand-made records), of this type when present (None: may be null).
_STATE_OPTIONAL = {
    "experiment_id": (str, None),
    "parent_run_id": (str, None),
    "artifact_location": (str, None),
    "end": (dict, None),
    "trials_offset": (int,),
    "reopen": (bool,),
    "reopen_tags": (dict,),
}
_TRIAL_OPTIONAL = {
    "run_id": (str, None),
    "status": (str,),
    "end_tags": (dict,),
    "artifacts": (list,),
    "end_ms": (int,),
    "node_tags": (dict,),
    "node_tagged": (bool,),
    "interrupted": (bool,),
    "reopen": (bool,),
    "stale_tags": (list,),
}


def _shape_problem(
    data: Mapping[str, Any], required: Mapping[str, type], optional: Mapping[str, tuple[Any, ...]]
) -> str | None:
    """The first key of `required` that `data` lacks or holds with the wrong type, else the first
    key of `optional` it holds with the wrong type, as a problem."""
    for key, kind in required.items():
        if not isinstance(data.get(key), kind):
            return f"'{key}' is missing or not a {kind.__name__}"
    for key, kinds in optional.items():
        if key in data and not any(data[key] is None if k is None else isinstance(data[key], k) for k in kinds):
            names = " or ".join("null" if k is None else k.__name__ for k in kinds)
            found = "null" if data[key] is None else f"a {type(data[key]).__name__}"
            return f"'{key}' is {found}, not {names}"
    return None


def state_problem(state: Any) -> str | None:
    """Why `state` is not a usable mlflow_runs.json, None when it is."""
    if not isinstance(state, dict):
        return f"holds a {type(state).__name__}, not an object"
    problem = _shape_problem(state, _STATE_KEYS, _STATE_OPTIONAL)
    if problem is not None:
        return problem
    for key in ("journal_offset", "trials_offset"):
        if state.get(key, 0) < 0:
            return f"'{key}' is negative"
    end = state.get("end")
    if end is not None and not (isinstance(end.get("tags"), dict) and isinstance(end.get("end_ms"), int)):
        return "'end' lacks its 'tags' object or its 'end_ms' number"
    for trial_id, entry in state["trials"].items():
        if not isinstance(entry, dict):
            return f"trial {trial_id} is not an object"
        problem = _shape_problem(entry, _TRIAL_KEYS, _TRIAL_OPTIONAL)
        if problem is not None:
            return f"trial {trial_id}: {problem}"
    return None


def read_state(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(state, None) when `path` holds a usable state; (None, why) when it is damaged; (None,
    None) when it does not exist. Reads only; SweepFileError when it cannot be read."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        raise SweepFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        state = json.loads(text)
        problem = state_problem(state)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        problem = "empty" if not text.strip() else f"not JSON: {one_line(exc)[:80]}"
    return (state, None) if problem is None else (None, problem)
