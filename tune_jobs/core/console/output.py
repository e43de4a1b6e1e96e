"""Where a sweep's output goes: Ray's (stdout and stderr, from Python or C++) to `ray.log` in
the sweep's folder, the display and the warnings that matter to the terminal."""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

from tune_jobs.core.console.displays import LiveDisplay, PlainDisplay, Snapshot
from tune_jobs.core.console.rows import SweepFacts
from tune_jobs.core.ray_compat import TUNE_CONTROLLER_LOGGER

RAY_LOG = "ray.log"
# Ray messages the view already says better (a failed trial, by its name and error) or that are
# about Tune's own bookkeeping; they stay in ray.log.
RAY_QUIET = re.compile(r"Trial task failed|The `[\w.]+` operation took")


class _ToTerminal(logging.Handler):
    """Warnings and errors that matter, to the terminal, each text once; also to the log."""

    def __init__(self, output: SweepOutput, level: int) -> None:
        super().__init__(level)
        self.output = output
        self.seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage().strip().splitlines()[0] if record.getMessage().strip() else ""
            if record.name.startswith("ray") and RAY_QUIET.match(text):
                return
            if record.name == TUNE_CONTROLLER_LOGGER and record.levelno >= logging.ERROR:
                return  # a trial's failure: the view's "failed" line shows it, with its error
            if not text or text in self.seen:
                return
            self.seen.add(text)
            # Ray's own handler writes its records to the log already; ours reach it from here.
            self.output.message(f"{record.levelname.lower()}: {text}", to_log=not record.name.startswith("ray"))
        except Exception:
            self.handleError(record)


class SweepOutput:
    """For the time of a sweep: Ray's output to a log file, the view to the terminal.

    Entered before Ray starts. Until the sweep's folder exists (`log_to`), what is printed is
    kept in a temporary file, then copied to the top of `ray.log`; a sweep that stops before
    (a ConfigError) leaves nothing behind. With verbose >= 2 nothing is redirected."""

    active: SweepOutput | None = None

    def __init__(self, verbose: int = 1) -> None:
        self.verbose = verbose
        self.redirect = verbose < 2
        self.ray_log: Path | None = None
        self._display: LiveDisplay | PlainDisplay | None = None
        self._saved: tuple[int, int] | None = None
        self._buffer: IO[bytes] | None = None
        self._handlers: list[tuple[logging.Logger, logging.Handler]] = []
        self._lock = threading.Lock()
        self.terminal: IO[str] = sys.stdout

    @classmethod
    def user_stderr(cls) -> int:
        """The file descriptor of the stderr the user sees (fd 2 points at ray.log during a sweep)."""
        active = cls.active
        return active._saved[1] if active is not None and active._saved is not None else 2

    @property
    def live(self) -> bool:
        return self.verbose == 1 and self.terminal.isatty()

    def __enter__(self) -> SweepOutput:
        if self.redirect:
            sys.stdout.flush()
            sys.stderr.flush()
            self._saved = (os.dup(1), os.dup(2))
            self.terminal = os.fdopen(os.dup(self._saved[0]), "w", buffering=1, encoding="utf-8", errors="replace")
            self._buffer = tempfile.TemporaryFile()
            self._point_std_at(self._buffer.fileno())
        for name, level in (("tune_jobs", logging.WARNING), ("ray.tune", logging.WARNING), ("ray", logging.ERROR)):
            logger, handler = logging.getLogger(name), _ToTerminal(self, level)
            logger.addHandler(handler)
            self._handlers.append((logger, handler))
        SweepOutput.active = self
        return self

    def _point_std_at(self, fd: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)

    def log_to(self, path: Path) -> None:
        """From now on Ray's output goes to `path` (appended: a resumed sweep adds to it)."""
        self.ray_log = path
        if not self.redirect or self._buffer is None:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        with open(path, "ab") as log:
            self._buffer.seek(0)
            log.write(self._buffer.read())
            fd = os.dup(log.fileno())
        self._point_std_at(fd)
        os.close(fd)
        self._buffer.close()
        self._buffer = None

    def open_display(self, facts: SweepFacts) -> LiveDisplay | PlainDisplay | None:
        if self.verbose == 0:
            return None
        cls = LiveDisplay if self.live else PlainDisplay
        self._display = cls(facts, self.terminal, self.ray_log)
        return self._display

    def close_display(self, snap: Snapshot | None = None) -> None:
        with self._lock:
            display, self._display = self._display, None
        if display is not None:
            display.close(snap or display.snap)

    def message(self, text: str, to_log: bool = True) -> None:
        """A line for the person watching: above the live table, or a line of the plain log."""
        display = self._display
        if display is not None:
            display.message(text)
        elif self.verbose:
            self.terminal.write(text + "\n")
            self.terminal.flush()
        if to_log and self.redirect:
            sys.stderr.write(text + "\n")  # the log keeps it too
            sys.stderr.flush()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close_display()
        for logger, handler in self._handlers:
            logger.removeHandler(handler)
        SweepOutput.active = None
        if self._saved is None:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        for fd in self._saved:
            os.close(fd)
        self._saved = None
        if self._buffer is not None:
            # The sweep stopped before its folder existed: show what was printed if it failed
            # unexpectedly (a ConfigError already says all in its one line).
            from tune_jobs.core.errors import ConfigError

            if exc is not None and not isinstance(exc, ConfigError):
                self._buffer.seek(0)
                sys.stderr.write(self._buffer.read().decode("utf-8", "replace"))
                sys.stderr.flush()
            self._buffer.close()
            self._buffer = None
        self.terminal.flush()
        if self.terminal is not sys.stdout:
            self.terminal.close()
        self.terminal = sys.stdout
