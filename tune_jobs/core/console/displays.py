"""The two displays of a sweep's rows: a live table redrawn in place in a terminal (rich's
`Live`), one line per event elsewhere (SLURM's `.out` file, a pipe)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tune_jobs.core.console.rows import (
    Row,
    SweepFacts,
    best_row,
    fmt_duration,
    fmt_progress,
    fmt_value,
    outcome_counts,
    visible_rows,
    wrap_name,
)

HEARTBEAT_S = 300.0  # a progress line this often in the plain log, so a quiet .out file is not a stuck job


@dataclass
class Snapshot:
    rows: tuple[Row, ...] = ()
    started: float = field(default_factory=time.monotonic)
    slots: int = 1
    eta: float | None = None
    ended: bool = False


def header_lines(facts: SweepFacts, snap: Snapshot, ray_log: Path | None) -> list[str]:
    rows = snap.rows
    done = sum(1 for r in rows if r.outcome)
    running = sum(1 for r in rows if r.status == "running")
    eta = "-" if snap.eta is None else f"~{fmt_duration(snap.eta)}"
    lines = [
        f"{facts.run_prefix} sweep {facts.sweep_id}   {done}/{facts.total} trials done   slots {running}/{snap.slots} in use",
        f"elapsed {fmt_duration(time.monotonic() - snap.started)}   ETA {eta}   MLflow {facts.tracking_uri}",
    ]
    if ray_log:
        lines.append(f"Ray's output: {ray_log}")
    best = best_row(rows, facts)
    if best is not None:
        lines.append(f"best so far: {best.name}  {facts.metric} = {fmt_value(best.best)}")
    return lines


class LiveDisplay:
    """The table, redrawn in place once a second by rich's Live (from its own thread)."""

    def __init__(self, facts: SweepFacts, terminal: IO[str], ray_log: Path | None) -> None:
        from rich.console import Console
        from rich.live import Live

        self.facts, self.ray_log, self.terminal = facts, ray_log, terminal
        self.snap = Snapshot()
        self.console = Console(file=terminal, force_terminal=True, highlight=False, soft_wrap=False)
        self.live = Live(
            console=self.console,
            get_renderable=self._render,
            refresh_per_second=1,
            redirect_stdout=False,
            redirect_stderr=False,
            vertical_overflow="crop",
        )

    def start(self) -> None:
        self.live.start()

    def update(self, snap: Snapshot) -> None:
        self.snap = snap

    def message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def event(self, kind: str, row: Row, detail: str = "") -> None:
        if kind in ("failed", "diverged", "restarting"):
            self.message(f"{kind}: {row.name}" + (f": {detail}" if detail else ""))

    def close(self, snap: Snapshot) -> None:
        self.snap = snap
        self.live.refresh()
        self.live.stop()

    def _render(self) -> Any:
        from rich import box
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        try:  # the terminal's size now (stdout and stderr point at the log file)
            size = os.get_terminal_size(self.terminal.fileno())
            self.console.size = (size.columns, size.lines)
        except OSError:
            pass
        facts, snap = self.facts, self.snap
        head = header_lines(facts, snap, self.ray_log)
        # The other columns are short and never wrap; a name too long for the rest of the
        # line breaks between two searched values, never inside one, and is never cut.
        name_width = max(20, self.console.size.width - (62 if facts.shows_best else 52))
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, expand=False)
        room = max(3, self.console.size.height - len(head) - 7)
        shown, rest = visible_rows(snap.rows, facts, room)
        names = {r.trial_id: wrap_name(r.name, name_width) for r in shown}
        longest = max((len(line) for name in names.values() for line in name.splitlines()), default=10)
        table.add_column("trial", overflow="fold", style="bold", min_width=min(longest, name_width))
        table.add_column("status", no_wrap=True)
        table.add_column("progress", justify="right", no_wrap=True)
        table.add_column(facts.metric, justify="right", no_wrap=True)
        if facts.shows_best:
            table.add_column("best", justify="right", no_wrap=True)
        table.add_column("outcome", no_wrap=True)
        best = best_row(snap.rows, facts)
        for r in shown:
            cells = [names[r.trial_id], r.status, fmt_progress(r, facts.unit), fmt_value(r.latest)]
            if facts.shows_best:
                cells.append(fmt_value(r.best))
            cells.append(r.outcome)
            style = "green" if best is not None and r.trial_id == best.trial_id else None
            if r.outcome in ("failed", "diverged"):
                style = "red"
            table.add_row(*cells, style=style)
        parts: list[Any] = [Text("\n".join(head)), table]
        if rest:
            parts.append(Text(rest, style="dim"))
        return Group(*parts)


class PlainDisplay:
    """One line per trial event, for files and pipes (SLURM's .out, `| tee`, CI logs)."""

    def __init__(self, facts: SweepFacts, terminal: IO[str], ray_log: Path | None) -> None:
        self.facts, self.terminal, self.ray_log = facts, terminal, ray_log
        self.snap = Snapshot()
        self.last_line = time.monotonic()

    def _line(self, text: str) -> None:
        self.terminal.write(f"{time.strftime('%H:%M:%S')} {text}\n")
        self.terminal.flush()
        self.last_line = time.monotonic()

    def start(self) -> None:
        f = self.facts
        self._line(
            f"sweep {f.run_prefix} {f.sweep_id}: {f.total} trials, metric {f.metric} ({f.mode}, goal {f.goal}); "
            f"MLflow {f.tracking_uri}" + (f"; Ray's output: {self.ray_log}" if self.ray_log else "")
        )

    def update(self, snap: Snapshot) -> None:
        self.snap = snap
        if time.monotonic() - self.last_line >= HEARTBEAT_S:
            self._line(self._progress())

    def _progress(self) -> str:
        rows = self.snap.rows
        done = sum(1 for r in rows if r.outcome)
        running = sum(1 for r in rows if r.status == "running")
        eta = "" if self.snap.eta is None else f", ETA ~{fmt_duration(self.snap.eta)}"
        best = best_row(rows, self.facts)
        tail = f"; best {best.name} {self.facts.metric}={fmt_value(best.best)}" if best else ""
        return f"[{done}/{self.facts.total} done, {running} running{eta}{tail}]"

    def message(self, text: str) -> None:
        self._line(text)

    def event(self, kind: str, row: Row, detail: str = "") -> None:
        what = [f"{kind:<13} {row.name}"]
        if row.outcome:
            what.append(fmt_progress(row, self.facts.unit))
            what.append(f"{self.facts.metric}={fmt_value(row.latest)}")
        if detail:
            what.append(detail)
        self._line("  ".join(what) + "  " + self._progress())

    def close(self, snap: Snapshot) -> None:
        self.snap = snap
        elapsed = fmt_duration(time.monotonic() - snap.started)
        verb = "stopped" if any(r.status == "interrupted" for r in snap.rows) else "ended"
        self._line(f"sweep {verb} after {elapsed}: {outcome_counts(snap.rows)}")
