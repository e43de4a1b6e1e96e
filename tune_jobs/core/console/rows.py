"""The sweep's rows, one per trial from Tune's Trial objects: what the live table, the plain
log and the parent run's note (markdown) show, and the ETA from the trials' own speeds."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trainables.common.tables import table_lines
from tune_jobs.core.adapter import STOP_REASON_KEY, trial_point
from tune_jobs.core.outcome import trial_outcome, tune_ended
from tune_jobs.core.plan import trial_label

NOTE_LIMIT = 7500  # MLflow keeps tag values up to 8000 characters
STATUS = {
    "PENDING": "pending",
    "RUNNING": "running",
    "PAUSED": "paused",
    "TERMINATED": "done",
    "ERROR": "done",
    # The view's own, after a Ctrl-C: a trial stopped before it ended, and one that never started.
    "INTERRUPTED": "interrupted",
    "NOT_STARTED": "not started",
}


# -- what a sweep is, for the view (picklable: Tune keeps its callbacks in the experiment state) --

Budget = Callable[[Mapping[str, str]], tuple[int, str]]  # Study.budget: a trial's (units, their name)


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
    budget: Budget | None = None  # the study's `budget`, read from a trial's params
    params: Mapping[str, str] = field(default_factory=dict)  # the shared config, as MLflow's params
    per_trial: Mapping[str, float] = field(default_factory=dict)  # Ray resources one trial asks for
    max_concurrent: int = 0

    @property
    def shows_best(self) -> bool:
        return self.goal != "measure"

    def trial_budget(self, point: Mapping[str, Any]) -> int | None:
        """The budget of the trial at `point` (a searched value may change it), None if unknown."""
        return study_budget(self.budget, {**self.params, **{k: str(v) for k, v in point.items()}})[1]

    def note(self, trials: Sequence[Any], stopped: Mapping[str, str] | None = None) -> str:
        """The parent run's description: the final table as markdown (what the terminal showed);
        `stopped`: the status (INTERRUPTED, NOT_STARTED) of each trial a Ctrl-C stopped, by id."""
        stopped = stopped or {}
        return note_markdown(self, [row_of(t, self, stopped.get(t.trial_id)) for t in trials])


def study_budget(budget: Budget | None, params: Mapping[str, str]) -> tuple[str, int | None]:
    """(unit, units) of a trial from the study's `budget` and the trial's params: `epoch` or
    `step`, else (no budget, or params it cannot read) `report` and None.

    The trainables report `epoch` (or `step`) counting from 1 in epoch-budget studies and
    `step` counting from 0 in step-budget studies (phase1); row_of reads them so."""
    if budget is None:
        return "report", None
    try:
        units, name = budget(params)
        return name.removesuffix("s"), int(units)
    except (KeyError, ValueError, TypeError):
        return "report", None


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
    budget = facts.trial_budget(point)
    done = _done(last, facts.unit) if last.get("training_iteration") else None
    best = _number((trial.metric_analysis or {}).get(facts.metric, {}).get(facts.mode))
    outcome = trial_outcome(tune_ended(status, last), budget, done)
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
        reason=str(last.get(STOP_REASON_KEY, "")) if outcome == "diverged" else "",
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
    """`7 finished, 2 stopped early`; after a Ctrl-C also the trials it stopped (interrupted,
    their results kept for --resume) and those that never started."""
    counts: dict[str, int] = {}
    for r in rows:
        key = r.outcome or (r.status if r.status in ("interrupted", "not started") else "")
        if key:
            counts[key] = counts.get(key, 0) + 1
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
    shown = list(rows)
    if facts.shows_best:  # the best first: what a description is read for (and what fits)
        sign = -1 if facts.mode == "max" else 1
        shown.sort(key=lambda r: (r.best is None, sign * r.best if r.best is not None else 0.0))
    cells = [
        [r.name, r.outcome or r.status, fmt_progress(r, facts.unit), fmt_value(r.latest)]
        + ([fmt_value(r.best)] if facts.shows_best else [])
        for r in shown
    ]
    head, rule, *table = table_lines(header, cells)
    lines += ["", head, rule]
    for i, line in enumerate(table):
        if sum(len(x) + 1 for x in lines) + len(line) > NOTE_LIMIT - 100:
            lines.append(f"\n{len(shown) - i} more trials: see the runs of this sweep.")
            break
        lines.append(line)
    diverged = [r for r in rows if r.reason]
    for r in diverged[:5]:
        lines.append(f"\n{r.name} diverged: {r.reason}")
    return "\n".join(lines)[:NOTE_LIMIT]


def facts_for(plan: Any, sweep_id: str, tracking_uri: str) -> SweepFacts:
    """The view's facts of a planned sweep."""
    from tune_jobs.core.space import ray_resources

    composed = plan.composed
    exp, budget = composed.experiment, composed.study.budget
    params = {k: str(v) for k, v in composed.base_flat.items()}  # as MLflow's params hold them
    return SweepFacts(
        run_prefix=exp.name,
        sweep_id=sweep_id,
        metric=exp.metric,
        mode=exp.mode,
        goal=exp.goal,
        total=plan.count,
        tracking_uri=tracking_uri,
        unit=study_budget(budget, params)[0],
        budget=budget,
        params=params,
        per_trial=dict(ray_resources(exp.resources)),
        max_concurrent=exp.max_concurrent,
    )
