"""Ctrl-C and SIGTERM while a sweep runs: the first stops it cleanly, the second at once.

Ray Tune catches the first SIGINT inside `Tuner.fit()`: it stops the trials, saves its
experiment state one last time and returns. Everything around that is ours:
- before and after `fit` (starting Ray, building the report) a Ctrl-C raises
  `KeyboardInterrupt`, which the CLI turns into one line and exit code 130;
- the handler Tune restores after its first SIGINT exits at once (exit code 130, one line,
  no traceback): a second Ctrl-C never waits for trials to stop. What a sweep writes is
  atomic or journalled, so `--resume` goes on from there as after a crash;
- SIGTERM (what `kill`, a SLURM preemption or a job timeout sends first) is taken as a Ctrl-C,
  so the sweep gets the same clean stop;
- Tune's own words about the interruption (its `Tuner.restore(...)` hint, the trials it could
  not read back) are dropped: the CLI prints the command that resumes the sweep instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a Ctrl-C'd program

# Messages of Tune that talk about its own resume API or about trials an interrupt left
# without results; the CLI says what to do instead.
_TUNE_NOISE = (
    "Stop signal received",
    "Experiment has been interrupted",
    "Trials did not complete",
    "Failed to fetch metrics",
)


class Interrupted(Exception):
    """The user stopped the sweep; `sweep_id` is None when it had not been created yet, and
    `stage` says what was going on: "start", "sweep" (trials unfinished) or "report"."""

    def __init__(self, sweep_id: str | None, stage: str, finished: int = 0, total: int = 0) -> None:
        super().__init__(f"interrupted during {stage}")
        self.sweep_id, self.stage, self.finished, self.total = sweep_id, stage, finished, total


@dataclass
class Progress:
    """How far the running sweep got, for the line an interrupt prints."""

    sweep_id: str | None = None
    stage: str = "start"  # start -> sweep -> report


progress = Progress()
_describe: Callable[[Interrupted], str] = str


def describe_with(describe: Callable[[Interrupted], str]) -> None:
    """The line printed when a second Ctrl-C stops the process at once (set by the CLI)."""
    global _describe
    _describe = describe


class _DropTuneNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_TUNE_NOISE)


_FILTER = _DropTuneNoise()
_LOGGERS = ("ray.tune.tune", "ray.tune.analysis.experiment_analysis")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _exit_now(signum: int, frame: FrameType | None) -> None:
    # A second Ctrl-C while Tune stops the trials: no waiting, no traceback. Ray's processes
    # started by this driver die with it (Ray ties them to their parent).
    try:
        line = _describe(Interrupted(progress.sweep_id, progress.stage))
    except Exception:
        line = "interrupted"
    fd = 2
    with contextlib.suppress(Exception):
        from tune_jobs.core.console import SweepOutput

        fd = SweepOutput.user_stderr()  # not fd 2: during a sweep that is Ray's log
    os.write(fd, f"\n{line}\n".encode())
    os._exit(EXIT_INTERRUPTED)


def _term_as_interrupt(signum: int, frame: FrameType | None) -> None:
    signal.raise_signal(signal.SIGINT)  # whichever SIGINT handler is in force (Tune's in fit)


def install() -> None:
    """Ctrl-C raises KeyboardInterrupt and SIGTERM acts as Ctrl-C (also outside `fit`); Tune's
    words about interrupts muted (`Tuner.restore` reads a stopped sweep's trials too)."""
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _term_as_interrupt)
    for name in _LOGGERS:
        logging.getLogger(name).addFilter(_FILTER)  # a filter object is added once, whatever the calls


@contextmanager
def tune_fit() -> Iterator[None]:
    """Around `Tuner.fit()`: Tune handles the first Ctrl-C, the next exits at once; Tune's
    hints muted. On the way out the KeyboardInterrupt handler is put back: Tune leaves its own
    installed after a normal finish, which would swallow a Ctrl-C pressed during the report."""
    signal.signal(signal.SIGINT, _exit_now)  # what Tune restores after its first SIGINT
    signal.signal(signal.SIGTERM, _term_as_interrupt)
    for name in _LOGGERS:
        logging.getLogger(name).addFilter(_FILTER)
    try:
        yield
    finally:
        install()
