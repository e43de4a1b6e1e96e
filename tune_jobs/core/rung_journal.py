"""The ASHA scheduler's journal (asha_rungs.jsonl in the sweep folder): every decision of
`PromotionASHA` (tune_jobs/core/schedulers.py), one JSON line each, appended before Tune acts on
it and replayed by a resumed sweep. Its format lives here, without Ray, so that `--resume`
checks the journal before Ray starts: a damaged one is one line, not a traceback from inside
Tune."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RUNG_JOURNAL = "asha_rungs.jsonl"


def parse_rung_event(line: bytes) -> dict[str, Any] | None:
    """One line of the rungs journal as the decision it records, None when it is not one."""
    try:
        event = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(event, dict) or not isinstance(event.get("trial"), str):
        return None
    rung, score = event.get("rung"), event.get("score")
    at_rung = isinstance(rung, int) and not isinstance(rung, bool) and rung >= 0
    if event.get("event") == "end":
        return event
    if event.get("event") == "promote" and at_rung:
        return event
    scored = isinstance(score, (int, float)) and not isinstance(score, bool)
    if event.get("event") == "rung" and at_rung and scored and isinstance(event.get("result"), (dict, type(None))):
        return event
    return None


def rung_journal_problem(path: Path) -> str | None:
    """What makes a rungs journal unusable, in words; None when every complete line is a
    decision (a last line a crash tore never reached Tune: the replay skips it)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    for number, line in enumerate(data.splitlines(keepends=True), 1):
        if not line.endswith(b"\n"):
            break
        if line.strip() and parse_rung_event(line) is None:
            shown = line.strip()[:60].decode(errors="replace")
            return f"line {number} is not a rung decision ({shown})"
    return None
