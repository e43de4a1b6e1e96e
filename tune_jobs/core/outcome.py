"""What happened to a trial, decided once for the live view, the sweep summary and the runner.

A trial's ending is recorded as a word (`sweep.status` on its MLflow run: finished, diverged,
error, interrupted; Tune's status while it runs); a trial that finished before its budget was
stopped early by the scheduler (ASHA). The budget is the study's (`Study.budget`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tune_jobs.core.adapter import DIVERGED_KEY

FINISHED = "finished"
STOPPED_EARLY = "stopped early"
DIVERGED = "diverged"
ERROR = "error"  # as MLflow's `sweep.status` holds it
FAILED = "failed"  # as the live view names an errored Tune trial


def trial_outcome(ended: str, budget: int | None = None, done: int | None = None) -> str:
    """How the trial ended: `ended`, or `stopped early` when it finished having run `done`
    units of its `budget` of them (either unknown: finished)."""
    if ended == FINISHED and budget is not None and done is not None and done < budget:
        return STOPPED_EARLY
    return ended


def run_ended(tags: Mapping[str, str], status: str) -> str:
    """How a trial's run ended, from its `sweep.status` tag, else its MLflow status."""
    return tags.get("sweep.status") or (FINISHED if status == "FINISHED" else status.lower())


def tune_ended(status: str, last_result: Mapping[str, Any]) -> str:
    """How a Tune trial ended, from its status and last result ('' while it has not)."""
    if status == "ERROR":
        return FAILED
    if status == "TERMINATED":
        return DIVERGED if last_result.get(DIVERGED_KEY) else FINISHED
    return ""
