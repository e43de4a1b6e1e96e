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
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ray.tune import Callback

from tune_jobs.core.adapter import DIVERGED_KEY, STOP_REASON_KEY, trial_point
from tune_jobs.core.plan import trial_label

RAY_LOG = "ray.log"
HEARTBEAT_S = 300.0  # a progress line this often in the plain log, so a quiet .out file is not a stuck job
SNAPSHOT_S = 0.5  # the live rows are rebuilt at most this often (Tune calls on_step_end many times a second)
SLOTS_S = 30.0  # how often the slots are recounted (an autoscaler may add nodes)
NOTE_LIMIT = 7500  # MLflow keeps tag values up to 8000 characters
# Ray messages the view already says better (a failed trial, by its name and error) or that are
# about Tune's own bookkeeping; they stay in ray.log.
RAY_QUIET = re.compile(r"Trial task failed|The `[\w.]+` operation took")
TRIAL_FAILED_LOGGER = "ray.tune.execution.tune_controller"  # logs each failed trial's error at ERROR
STATUS = {"PENDING": "pending", "RUNNING": "running", "PAUSED": "paused", "TERMINATED": "done", "ERROR": "done"}


# -- what a sweep is, for the view (picklable: Tune keeps its callbacks in the experiment state) --


@dataclass(frozen=True)
class SweepFacts:
    run_prefix: str  # the experiment: trial runs are named <run_prefix>/<searched values>
    sweep_id: str
    metric: str
    mode: str  # min | max
    goal: str  # optimize | measure
    total: int  # trials planned (grid) or to be sampled (optuna, random)
    tracking_uri: str
    unit: str = "report"  # what a trial's budget counts: step, epoch, or (unknown) report
    budget: int | None = None  # the trial's budget in units, from the study config
    budget_key: str | None = None  # the config key holding it (a searched point may change it)
    per_trial: Mapping[str, float] = field(default_factory=dict)  # Ray resources one trial asks for
    max_concurrent: int = 0

    @property
    def shows_best(self) -> bool:
        return self.goal != "measure"

    def note(self, trials: Sequence[Any]) -> str:
        """The parent run's description: the final table as markdown (what the terminal showed)."""
        return note_markdown(self, [row_of(t, self) for t in trials])


def budget_of(cfg: Any) -> tuple[str, int | None, str | None]:
    """(unit, budget, config key) of a study config: trainer.epochs, else trainer.steps.

    The trainables report `epoch` (or `step`) counting from 1 in epoch-budget studies and
    `step` counting from 0 in step-budget studies (phase1); row_of reads them so."""
    trainer = getattr(cfg, "trainer", None)
    for unit, name in (("epoch", "epochs"), ("step", "steps")):
        value = getattr(trainer, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return unit, value, f"trainer.{name}"
    return "report", None, None


# -- one row per trial, from Tune's Trial objects --------------------------------------------


@dataclass(frozen=True)
class Row:
    trial_id: str
    name: str  # the MLflow run name
    status: str  # pending | running | paused | done
    done: int | None  # units done (steps, epochs or reports)
    budget: int | None
    latest: float | None  # the sweep metric's latest value
    best: float | None  # its best value so far (by the sweep's mode)
    outcome: str = ""  # finished | stopped early | diverged | failed ('' while not ended)
    seconds: float = 0.0  # the trial's own running time
    reason: str = ""  # why it diverged
    reports: int = 0  # results reported so far


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _done(result: Mapping[str, Any], unit: str) -> int | None:
    if unit == "epoch":
        value = _number(result.get("epoch", result.get("step")))
    elif unit == "step":
        step = _number(result.get("step"))
        value = None if step is None else step + 1
    else:
        value = _number(result.get("training_iteration"))
    return int(value) if value is not None and math.isfinite(value) else None


def row_of(trial: Any, facts: SweepFacts, status: str | None = None) -> Row:
    """The trial's row; `status` overrides Tune's (its callbacks run before it sets the new one)."""
    status = status or trial.status
    point = trial_point(trial.config)
    last = trial.last_result or {}
    budget = facts.budget
    if facts.budget_key and isinstance(point.get(facts.budget_key), int):
        budget = point[facts.budget_key]
    done = _done(last, facts.unit) if last.get("training_iteration") else None
    best = _number((trial.metric_analysis or {}).get(facts.metric, {}).get(facts.mode))
    outcome, reason = "", ""
    if status == "ERROR":
        outcome = "failed"
    elif status == "TERMINATED":
        if last.get(DIVERGED_KEY):
            outcome, reason = "diverged", str(last.get(STOP_REASON_KEY, ""))
        elif budget is not None and done is not None and done < budget:
            outcome = "stopped early"  # the scheduler (ASHA) stopped it
        else:
            outcome = "finished"
    return Row(
        trial_id=trial.trial_id,
        name=f"{facts.run_prefix}/{trial_label(point)}",
        status=STATUS.get(status, status.lower()),
        done=done,
        budget=budget,
        latest=_number(last.get(facts.metric)) if done is not None else None,
        best=best if best is not None and math.isfinite(best) else None,
        outcome=outcome,
        seconds=float(_number(last.get("time_total_s")) or 0.0),
        reason=reason,
        reports=int(_number(last.get("training_iteration")) or 0),
    )


def wrap_name(name: str, width: int) -> str:
    """A run name over several lines of at most `width`, broken after its '/' and commas only."""
    lines = [""]
    for part in re.split(r"(?<=[,/])", name):
        if lines[-1] and len(lines[-1]) + len(part) > width:
            lines.append("")
        lines[-1] += part
    return "\n".join(lines)


def fmt_value(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def fmt_progress(row: Row, unit: str) -> str:
    if row.done is None:
        return "-"
    if row.budget is None:
        return f"{row.done} reports"
    return f"{unit} {row.done}/{row.budget}"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def best_row(rows: Sequence[Row], facts: SweepFacts) -> Row | None:
    scored = [r for r in rows if r.best is not None]
    if not facts.shows_best or not scored:
        return None
    sign = -1 if facts.mode == "max" else 1
    return min(scored, key=lambda r: sign * r.best)  # type: ignore[operator]


def slots(per_trial: Mapping[str, float], cluster: Mapping[str, float], max_concurrent: int = 0) -> int:
    """How many trials fit at once: the scarcest resource decides, capped by max_concurrent."""
    names = {"cpu": "CPU", "gpu": "GPU"}
    fits = [int(cluster.get(names.get(k, k), 0) // v + 1e-9) for k, v in per_trial.items() if v > 0]
    n = min(fits) if fits else 1
    return min(n, max_concurrent) if max_concurrent else n


def eta_seconds(rows: Sequence[Row], total: int, n_slots: int) -> float | None:
    """Seconds until the sweep ends, from the trials' own speeds (None until there is one).

    A running trial needs (budget - done) x its seconds per unit; a trial not started yet is
    taken to last as long as the ended trials did on average (stopped ones included, so an
    ASHA sweep's early stops count), or as the running ones are heading for; they share the
    slots."""
    running = [r for r in rows if r.status == "running"]
    ended = [r for r in rows if r.status == "done"]
    waiting = max(0, total - len(running) - len(ended))
    if not running and not waiting:
        return 0.0
    # A first report's time is mostly the trial's start (imports, data, model), not its speed.
    speeds = {r.trial_id: r.seconds / r.done for r in running if r.done and r.seconds > 0 and r.reports > 1}
    projected = [speeds[r.trial_id] * r.budget for r in running if r.trial_id in speeds and r.budget]
    durations = [r.seconds for r in ended if r.seconds > 0] or projected
    if not durations:
        return None
    mean = sum(durations) / len(durations)
    left = [
        speeds[r.trial_id] * max(0, r.budget - r.done) if r.trial_id in speeds and r.budget and r.done else mean
        for r in running
    ]
    work = sum(left) + waiting * mean
    return max(max(left, default=0.0), work / max(1, n_slots))


def visible_rows(rows: Sequence[Row], facts: SweepFacts, limit: int) -> tuple[list[Row], str]:
    """The rows that fit in `limit`: all of them, or the running and the best (or latest) ones,
    with a line counting the rest."""
    if len(rows) <= limit:
        return list(rows), ""
    running = [r for r in rows if r.status == "running"]
    others = [r for r in rows if r.status != "running"]
    if facts.shows_best:
        sign = -1 if facts.mode == "max" else 1
        ranked = sorted((r for r in others if r.best is not None), key=lambda r: sign * r.best)  # type: ignore[operator]
        ranked += [r for r in others if r.best is None and r.status == "done"]
    else:
        ranked = [r for r in reversed(others) if r.status == "done"]
    keep = {r.trial_id for r in (running + ranked)[: max(1, limit)]}
    shown = [r for r in running + ranked if r.trial_id in keep]
    hidden = [r for r in rows if r.trial_id not in keep]
    counts: dict[str, int] = {}
    for r in hidden:
        key = r.outcome or r.status
        counts[key] = counts.get(key, 0) + 1
    what = ", ".join(f"{n} {k}" for k, n in counts.items())
    return shown, f"{len(hidden)} more trials not shown ({what})"


def outcome_counts(rows: Sequence[Row]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        if r.outcome:
            counts[r.outcome] = counts.get(r.outcome, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in counts.items()) or "none ended"


def note_markdown(facts: SweepFacts, rows: Sequence[Row]) -> str:
    """The final table as markdown, within what MLflow keeps in a tag."""
    ended = [r for r in rows if r.outcome]
    lines = [
        f"**{facts.run_prefix} sweep {facts.sweep_id}**: {len(ended)} of {facts.total} trials ended "
        f"({outcome_counts(rows)}).",
        "",
        f"Metric `{facts.metric}` ({facts.mode}); goal: {facts.goal}"
        + ("." if facts.shows_best else " (every trial is a result; none is called best)."),
    ]
    best = best_row(rows, facts)
    if best is not None:
        lines += ["", f"Best trial: **{best.name}**, {facts.metric} = {fmt_value(best.best)}."]
    header = ["trial", "outcome", "progress", facts.metric] + ([f"best {facts.metric}"] if facts.shows_best else [])
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    shown = list(rows)
    if facts.shows_best:  # the best first: what a description is read for (and what fits)
        sign = -1 if facts.mode == "max" else 1
        shown.sort(key=lambda r: (r.best is None, sign * r.best if r.best is not None else 0.0))
    for i, r in enumerate(shown):
        cells = [r.name, r.outcome or r.status, fmt_progress(r, facts.unit), fmt_value(r.latest)]
        if facts.shows_best:
            cells.append(fmt_value(r.best))
        line = "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"
        if sum(len(x) + 1 for x in lines) + len(line) > NOTE_LIMIT - 100:
            lines.append(f"\n{len(shown) - i} more trials: see the runs of this sweep.")
            break
        lines.append(line)
    diverged = [r for r in rows if r.reason]
    for r in diverged[:5]:
        lines.append(f"\n{r.name} diverged: {r.reason}")
    return "\n".join(lines)[:NOTE_LIMIT]


# -- the two displays -----------------------------------------------------------------------


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
        self._line(f"sweep ended after {elapsed}: {outcome_counts(snap.rows)}")


# -- the Tune callback ----------------------------------------------------------------------


def _unloadable(trial: Any) -> str | None:
    """The one line of a trial that failed because none of its checkpoints loads, else None.
    Such a failure repeats the same way on every retry, and its line already names the files
    and the command that starts the trial over; nothing is added to it."""
    from trainables.common import NoLoadableCheckpoint

    try:
        error = trial.get_pickled_error()
    except Exception:
        return None
    cause = getattr(error, "cause", error)  # Ray wraps what the trainable raised
    return str(cause).strip() if isinstance(cause, NoLoadableCheckpoint) else None


def _error_line(trial: Any) -> str:
    try:
        error = trial.get_error()
        lines = [line for line in str(error or "").strip().splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else ""
    except Exception:
        reason = ""
    where = getattr(trial, "error_file", None)
    return (reason[:300] or "see its error file") + (f" (traceback: {where})" if where else "")


class SweepView(Callback):
    """Tune's events, shown by the display of the sweep's output (see SweepOutput).

    Pickled with Tune's experiment state as its facts only; on --resume it shows in the
    display of the process that resumed it."""

    def __init__(self, facts: SweepFacts) -> None:
        self.facts = facts

    def __getstate__(self) -> dict[str, Any]:
        return {"facts": self.facts}

    def setup(self, **info: Any) -> None:
        output = SweepOutput.active
        self._display = output.open_display(self.facts) if output is not None else None
        self._snap = Snapshot()
        self._next_snapshot = 0.0
        self._rows: dict[str, Row] = {}  # the last row of each trial, by id
        self._made: dict[str, tuple[str, Any, Row]] = {}  # each row with the status and result it shows
        self._next_slots = 0.0
        self._slots = 1
        if self._display is not None:
            self._display.start()

    def _snapshot(self, trials: Sequence[Any], force: bool = False, changed: tuple[Any, str] | None = None) -> None:
        now = time.monotonic()
        if self._display is None or (not force and now < self._next_snapshot):
            return
        if now < self._next_snapshot and changed is not None:
            # An event between two rebuilds: only its trial's row is made again, so a sweep of
            # many trials does not rebuild every row at each of its many events.
            trial, status = changed
            self._rows[trial.trial_id] = row_of(trial, self.facts, status)
            rows = tuple(self._rows.get(t.trial_id) or row_of(t, self.facts) for t in trials)
            self._snap = Snapshot(rows=rows, started=self._snap.started, slots=self._slots, eta=self._snap.eta)
            self._display.update(self._snap)
            return
        self._next_snapshot = now + SNAPSHOT_S
        if now >= self._next_slots:
            self._next_slots = now + SLOTS_S
            try:
                import ray

                self._slots = slots(self.facts.per_trial, ray.cluster_resources(), self.facts.max_concurrent)
            except Exception:  # a view detail: never let it stop the sweep
                pass
        rows = tuple(self._row(t, changed[1] if changed and t is changed[0] else None) for t in trials)
        self._rows = {row.trial_id: row for row in rows}
        self._snap = Snapshot(
            rows=rows,
            started=self._snap.started,
            slots=self._slots,
            eta=eta_seconds(rows, self.facts.total, self._slots),
        )
        self._display.update(self._snap)

    def _row(self, trial: Any, status: str | None = None) -> Row:
        """The trial's row, made again only when its status or its last result changed: a
        rebuild of a sweep's rows then costs per trial that moved, not per trial."""
        status = status or trial.status
        last = getattr(getattr(trial, "run_metadata", None), "last_result", None)
        made = self._made.get(trial.trial_id)
        if made is not None and last is not None and made[0] == status and made[1] is last:
            return made[2]
        row = row_of(trial, self.facts, status)
        self._made[trial.trial_id] = (status, last, row)
        return row

    def _event(self, trials: Sequence[Any], trial: Any, status: str, kind: str = "", detail: str = "") -> None:
        if self._display is None:
            return
        self._snapshot(trials, force=True, changed=(trial, status))
        row = row_of(trial, self.facts, status)
        self._display.event(kind or row.outcome, row, detail or row.reason)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._snapshot(trials)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        from tune_jobs.core.adapter import WARNINGS_KEY

        output = SweepOutput.active
        if result.get(WARNINGS_KEY) and output is not None:
            for line in str(result[WARNINGS_KEY]).splitlines():
                output.message(f"warning: {line}", to_log=False)  # the trial's log has it already

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._event(trials, trial, "RUNNING", "started")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if _unloadable(trial) is not None:  # it fails the same way again; its failure says it once
            if self._display is not None:
                self._snapshot(trials, force=True, changed=(trial, "PENDING"))
            return
        self._event(trials, trial, "PENDING", "restarting", f"{_error_line(trial)}; from its last checkpoint")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._event(trials, trial, "TERMINATED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        unloadable = _unloadable(trial)
        if unloadable is None:
            self._event(trials, trial, "ERROR", detail=_error_line(trial))
            return
        # Its line ends with the command to run, so it stands alone, not after the progress.
        self._event(trials, trial, "ERROR", detail="its checkpoints do not load:")
        if SweepOutput.active is not None and self._display is not None:
            SweepOutput.active.message(unloadable)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._display is None:
            return
        self._snapshot(trials, force=True)
        if SweepOutput.active is not None:
            SweepOutput.active.close_display(self._snap)
        self._display = None


# -- where the output goes ------------------------------------------------------------------


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
            if record.name == TRIAL_FAILED_LOGGER and record.levelno >= logging.ERROR:
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


def facts_for(plan: Any, sweep_id: str, tracking_uri: str) -> SweepFacts:
    """The view's facts of a planned sweep."""
    from tune_jobs.core.config import build_config
    from tune_jobs.core.space import ray_resources

    composed = plan.composed
    exp = composed.experiment
    unit, budget, key = budget_of(build_config(composed.study.config, composed.base, cross_check=False))
    return SweepFacts(
        run_prefix=exp.name,
        sweep_id=sweep_id,
        metric=exp.metric,
        mode=exp.mode,
        goal=exp.goal,
        total=plan.count,
        tracking_uri=tracking_uri,
        unit=unit,
        budget=budget,
        budget_key=key,
        per_trial=dict(ray_resources(exp.resources)),
        max_concurrent=exp.max_concurrent,
    )
