"""What a person sees while a sweep runs: a live table in a terminal, one line per event elsewhere.

In a terminal the sweep is one table that redraws in place (rich's `Live`): a header with the
trials done of the total, the time elapsed, an ETA from the trials' own speeds, the slots in use
and the MLflow URI, then one row per trial by its MLflow run name (`phase1/n_components=4`),
with its status, its progress through its budget (step or epoch), the latest value of the sweep
metric, the best one when the experiment looks for a best trial (`goal: optimize`, not
`goal: measure`), and its outcome: finished, stopped early, diverged or failed. A long sweep
shows its running trials and its best ones, and counts the others.

When stdout is not a terminal (SLURM's `.out` file, a pipe), each trial event is one line:
started, restarted, and how it ended; and a progress line every few minutes.

Ray's own output (Tune's status tables, every worker's log lines) goes to `ray.log` in the
sweep's folder: the driver's stdout and stderr file descriptors point there for the whole sweep,
so nothing Ray prints, from Python or C++, reaches the terminal. The warnings of this project
and Ray's warnings and errors still do, once each. `--verbose` keeps Ray's output on the
terminal instead (and the one-line events beside it).

The same rows, as markdown, become the sweep's parent run's description in MLflow (its note).

The package by job: `rows` (a trial's row, its formatting, the ETA), `displays` (the live table
and the plain log), `view` (the Tune callback), `output` (where stdout, stderr and the logs go).
"""

from tune_jobs.core.console.displays import LiveDisplay, PlainDisplay, Snapshot
from tune_jobs.core.console.output import RAY_LOG, SweepOutput
from tune_jobs.core.console.rows import Row, SweepFacts, facts_for, row_of
from tune_jobs.core.console.view import SweepView

__all__ = [
    "RAY_LOG",
    "LiveDisplay",
    "PlainDisplay",
    "Row",
    "Snapshot",
    "SweepFacts",
    "SweepOutput",
    "SweepView",
    "facts_for",
    "row_of",
]
