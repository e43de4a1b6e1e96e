"""The sweep summary every sweep gets, whatever its study, built from MLflow like the study
reports (which add their own plots beside it):

- `sweep_summary.md`: the trials ranked by the sweep's metric, with their searched values and
  outcome; where points ran on several seeds, each point's mean, spread, 95% interval and
  whether it differs from the next beyond the seeds' noise (tune_jobs/core/spread.py), and
  where they ran on one, that the ranking rests on one seed; the best trial or point (for
  `goal: optimize`); the searched values' importances;
- `sweep_curves.png/.pdf`: the metric's curve of every trial, trials stopped before their
  budget marked with a cross where they stopped;
- `sweep_parallel.png/.pdf`: the searched values against the metric, one line per trial
  (parallel coordinates), when something was searched.

Importances are fANOVA's (`optuna.importance`, as the Optuna dashboard shows them) over the
trials that reported the metric, for any search (grid, random or Optuna); they need two
searched values or more and four such trials.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from trainables.common.tables import table_lines
from tune_jobs.core import spread
from tune_jobs.core.outcome import run_ended, trial_outcome
from tune_jobs.core.sweep_data import SweepData, TrialRun, save_figure

MIN_TRIALS_FOR_IMPORTANCE = 4


def _zero_based(steps: Sequence[int]) -> int:
    return max(steps) + 1


def outcome(
    trial: TrialRun,
    budget: int | None,
    steps: Sequence[int] | int | None,
    units_run: Callable[[Sequence[int]], int] = _zero_based,
) -> str:
    """finished, stopped early (before its budget, by the scheduler), diverged, error, ...: the
    units it ran are its reported `steps` (or the last of them) counted by `units_run`, the
    study's (`Study.units_run`, as the live view counts them); by default 0-based steps."""
    if isinstance(steps, int):
        steps = [steps]
    return trial_outcome(run_ended(trial.tags, trial.status), budget, units_run(steps) if steps else None)


def _budget(study: Any, trial: TrialRun) -> int | None:
    if getattr(study, "budget", None) is None:
        return None
    try:
        return int(study.budget(trial.params)[0])
    except (KeyError, ValueError, TypeError):
        return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _shown(value: Any) -> str:
    return f"{value:.4g}" if _number(value) is not None else "-"


def importances(trials: Sequence[TrialRun], keys: Sequence[str], metric: str, mode: str) -> dict[str, float]:
    """fANOVA importance of each searched value for the metric (empty when too few trials)."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    scored = [t for t in trials if _number(t.metrics.get(metric)) is not None and all(k in t.point for k in keys)]
    if len(keys) < 2 or len(scored) < MIN_TRIALS_FOR_IMPORTANCE:
        return {}
    distributions = {}
    for key in keys:
        values = [t.point[key] for t in scored]
        numbers = [_number(v) for v in values]
        if all(n is not None for n in numbers) and len(set(numbers)) > 1:
            distributions[key] = FloatDistribution(min(numbers), max(numbers))
        else:
            distributions[key] = CategoricalDistribution(sorted({repr(v) for v in values}))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for t in scored:
        params = {
            k: float(t.point[k]) if isinstance(d, FloatDistribution) else repr(t.point[k])
            for k, d in distributions.items()
        }
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=t.metrics[metric]))
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)  # the same numbers on every rebuild
    found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    return {k: float(v) for k, v in found.items()}


def _spread(p: spread.Point) -> str:
    lo, hi = p.interval
    return f"{p.mean:.4g} ± {p.std:.2g} (mean ± std over {p.n} seeds; 95% interval {lo:.4g} to {hi:.4g})"


def _point_table(points: Sequence[spread.Point]) -> tuple[list[str], list[tuple[str, ...]]]:
    """Each point's mean, spread and interval; `vs next`: Welch's p against the next one down."""
    rows = []
    for i, p in enumerate(points):
        lo, hi = p.interval
        test = spread.welch_p(p, points[i + 1]) if i + 1 < len(points) else math.nan
        beyond = "" if math.isnan(test) else (" (beyond noise)" if test < spread.ALPHA else " (within noise)")
        rows.append(
            (
                p.label,
                str(p.n),
                f"{p.mean:.4g}",
                _shown(p.std),
                "-" if math.isnan(lo) else f"{lo:.4g} to {hi:.4g}",
                "-" if math.isnan(test) else f"{test:.2g}{beyond}",
            )
        )
    return ["point", "seeds", "mean", "std", "95% interval", "p vs next (Welch)"], rows


def write_sweep_summary(sweep: SweepData, out_dir: Path, study: Any = None) -> list[Path]:
    """Write the summary files of one sweep into `out_dir`; returns their paths."""
    import matplotlib.pyplot as plt

    metric = sweep.tags.get("sweep.metric", "")
    mode = sweep.tags.get("sweep.mode", "min")
    goal = sweep.tags.get("sweep.goal", "optimize")
    keys = sorted({k for t in sweep.trials for k in t.point})
    curves = {t.run_id: sweep.history(t.run_id, metric) if metric else [] for t in sweep.trials}
    units_run = getattr(study, "units_run", _zero_based)
    outcomes = {
        t.run_id: outcome(t, _budget(study, t), [s for s, _ in curves[t.run_id]], units_run) for t in sweep.trials
    }
    sign = -1 if mode == "max" else 1
    ranked = sorted(
        sweep.trials,
        key=lambda t: (_number(t.metrics.get(metric)) is None, sign * (_number(t.metrics.get(metric)) or 0.0)),
    )
    written: list[Path] = []

    # The metric's curves; a cross where a trial stopped before its budget.
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for t in sweep.trials:
        points = [(s, v) for s, v in curves[t.run_id] if _number(v) is not None]
        if not points:
            continue
        (line,) = ax.plot([s for s, _ in points], [v for _, v in points], lw=1.2, label=t.name)
        if outcomes[t.run_id] in ("stopped early", "diverged", "error"):
            ax.plot(*points[-1], "x", color=line.get_color(), ms=8, mew=2)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(f"{sweep.experiment} sweep {sweep.sweep_id}: {metric} (x: stopped before its budget)", fontsize=9)
    if len(sweep.trials) <= 12:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    written += save_figure(fig, out_dir, "sweep_curves")

    # Parallel coordinates: each searched value scaled to [0, 1] (log scale when it spans
    # two decades or more), then the metric; one line per trial, coloured by the metric.
    scored = [t for t in sweep.trials if _number(t.metrics.get(metric)) is not None]
    if keys and scored:
        axes, ticks = [], []
        for key in [*keys, metric]:
            values = [t.metrics[metric] if key == metric else t.point.get(key) for t in scored]
            numbers = [_number(v) for v in values]
            if all(n is not None for n in numbers):
                lo, hi = min(numbers), max(numbers)
                log = lo > 0 and hi / lo >= 100
                f = (lambda x: math.log10(x)) if log else (lambda x: x)
                span = (f(hi) - f(lo)) or 1.0
                axes.append([(f(n) - f(lo)) / span for n in numbers])
                ticks.append((f"{lo:.3g}", f"{hi:.3g}", " (log)" if log else ""))
            else:
                names = sorted({repr(v) for v in values})
                axes.append([names.index(repr(v)) / max(len(names) - 1, 1) for v in values])
                ticks.append((names[0], names[-1], ""))
        fig, ax = plt.subplots(figsize=(1.8 * len(axes) + 2, 4.2))
        cmap = plt.get_cmap("viridis_r" if mode == "min" else "viridis")
        for i in range(len(scored)):
            ax.plot(range(len(axes)), [a[i] for a in axes], color=cmap(axes[-1][i]), alpha=0.8, lw=1.2)
        ax.set_xticks(range(len(axes)))
        ax.set_xticklabels([f"{k}{t[2]}\n{t[0]} .. {t[1]}" for k, t in zip([*keys, metric], ticks)], fontsize=7)
        ax.set_yticks([])
        ax.set_title(f"{sweep.experiment} sweep {sweep.sweep_id}: searched values against {metric}", fontsize=9)
        written += save_figure(fig, out_dir, "sweep_parallel")

    found = importances(sweep.trials, keys, metric, mode) if metric else {}
    best = sweep.best()
    lines = [f"# Sweep {sweep.sweep_id} ({sweep.experiment})", ""]
    finished = sum(1 for o in outcomes.values() if o == "finished")
    counts = {o: sum(1 for x in outcomes.values() if x == o) for o in sorted(set(outcomes.values()))}
    lines.append(
        f"{len(sweep.trials)} trials: "
        + ", ".join(f"{n} {o}" for o, n in counts.items())
        + f"; metric {metric} ({mode})."
    )
    points = spread.ranked(spread.points(sweep.trials, metric), mode) if metric else []
    seeded = spread.seeded(points)
    if seeded and goal != "measure":
        top = points[0]
        lines += ["", f"Best point (by its mean over seeds): {top.label}, {metric} = {_spread(top)}."]
        if len(points) > 1:
            lines.append(spread.verdict(top, points[1], metric))
    elif best is not None and goal != "measure":
        lines += ["", f"Best trial: {best.name}, {metric} = {best.metrics[metric]:.4g}."]
    elif goal == "measure":
        lines += ["", f"A measurement ({finished} trials finished): no trial is best; compare them below."]
    if len(points) > 1 and not seeded:
        more = " (`sweep.seeds=3` runs every point on three and measures the spread)"
        lines += [
            "",
            "Each point ran on one seed, so this ranking rests on one seed each"
            + (more if sweep.tags.get("sweep.search", "grid") == "grid" else "")
            + ".",
        ]
    if seeded:
        lines += ["", f"## The points over their seeds ({metric}, {'lower' if mode == 'min' else 'higher'} is better)"]
        lines += ["", *table_lines(*_point_table(points))]
    rows = [
        (t.name, outcomes[t.run_id], *(t.point.get(k, "") for k in keys), _shown(t.metrics.get(metric))) for t in ranked
    ]
    lines += ["", *(["## The trials", ""] if seeded else []), *table_lines(["trial", "outcome", *keys, metric], rows)]
    if found:
        lines += ["", f"## Importance of the searched values for {metric} (fANOVA, optuna.importance)", ""]
        lines += [f"- {k}: {v:.2f}" for k, v in sorted(found.items(), key=lambda kv: -kv[1])]
    elif len(keys) >= 2:
        lines += ["", f"(Importances need {MIN_TRIALS_FOR_IMPORTANCE} trials or more that reported {metric}.)"]
    lines += ["", "Plots: `sweep_curves.png`" + (", `sweep_parallel.png`" if keys and scored else "") + "."]
    path = out_dir / "sweep_summary.md"
    path.write_text("\n".join(lines) + "\n")
    if seeded:
        written.append(_write_points(points, out_dir / "sweep_points.csv"))
    return [path, *written]


def _write_points(points: Sequence[spread.Point], path: Path) -> Path:
    """The points over their seeds as numbers, for a notebook (the summary's table, unrounded)."""
    import csv

    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["point", "seeds", "mean", "std", "ci95_low", "ci95_high", "p_vs_next"])
        for i, p in enumerate(points):
            test = spread.welch_p(p, points[i + 1]) if i + 1 < len(points) else math.nan
            out.writerow([p.label, p.n, p.mean, p.std, *p.interval, test])
    return path
