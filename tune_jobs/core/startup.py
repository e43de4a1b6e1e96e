"""Imported first by every entry script: a Ctrl-C while Python still imports the heavy
libraries (torch, transformers, Ray) exits with code 130 and one line, not a traceback.
Once the CLI runs, tune_jobs/core/interrupts.py takes over.

Output piped into a reader that stops early (`--dry-run | head`) ends the command quietly
with code 141, as a shell tool killed by SIGPIPE would, not with a BrokenPipeError traceback."""

from __future__ import annotations

import os
import sys
from types import TracebackType


def _quiet_interrupt(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.stderr.write("\ninterrupted before the sweep started; nothing was run\n")
        sys.stderr.flush()
        os._exit(130)
    if issubclass(kind, BrokenPipeError):
        os._exit(141)  # the reader is gone; flushing what is left would only fail again
    sys.__excepthook__(kind, value, tb)


sys.excepthook = _quiet_interrupt
