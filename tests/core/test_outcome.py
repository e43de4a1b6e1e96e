"""A trial's outcome (tune_jobs/core/outcome.py), as the live view, the sweep summary and the
sweep's end counts all read it."""

from __future__ import annotations

from tune_jobs.core.adapter import DIVERGED_KEY
from tune_jobs.core.outcome import run_ended, trial_outcome, tune_ended


def test_a_trial_that_finished_before_its_budget_was_stopped_early():
    assert trial_outcome("finished", 9, 9) == "finished"
    assert trial_outcome("finished", 9, 3) == "stopped early"
    assert trial_outcome("finished", None, 3) == trial_outcome("finished", 9, None) == "finished"
    assert trial_outcome("diverged", 9, 3) == "diverged" and trial_outcome("error", 9, 3) == "error"


def test_how_a_run_or_a_tune_trial_ended():
    assert run_ended({"sweep.status": "diverged"}, "FAILED") == "diverged"
    assert run_ended({}, "FINISHED") == "finished" and run_ended({}, "KILLED") == "killed"
    assert tune_ended("ERROR", {}) == "failed" and tune_ended("RUNNING", {}) == ""
    assert tune_ended("TERMINATED", {DIVERGED_KEY: 1}) == "diverged" and tune_ended("TERMINATED", {}) == "finished"
