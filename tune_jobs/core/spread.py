"""A sweep's points over their seeds: per point the mean of the metric, its standard deviation,
a 95% interval of the mean (Student's t) and the number of seeds; and whether two points differ
beyond the seeds' noise (Welch's two-sample t-test, which does not assume equal spreads).

A trial's seed is its config key `seed`; the trials that differ only in it are one point.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tune_jobs.core.plan import SEED_KEY, trial_label

ALPHA = 0.05  # a difference "beyond the seeds' noise": p below this


@dataclass(frozen=True)
class Point:
    label: str  # the searched values less the seed, e.g. n_components=4
    seeds: tuple[Any, ...]
    values: tuple[float, ...]  # the metric's final value, one per seed that reported it

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values) / self.n

    @property
    def std(self) -> float:
        """The sample standard deviation over seeds (NaN with one seed)."""
        if self.n < 2:
            return math.nan
        return math.sqrt(sum((v - self.mean) ** 2 for v in self.values) / (self.n - 1))

    @property
    def interval(self) -> tuple[float, float]:
        """The 95% interval of the mean (Student's t with n - 1 degrees of freedom)."""
        from scipy import stats

        if self.n < 2:
            return (math.nan, math.nan)
        half = stats.t.ppf(0.975, self.n - 1) * self.std / math.sqrt(self.n)
        return (self.mean - half, self.mean + half)


def point_label(point: dict[str, Any]) -> str:
    """A point's searched values less its seed, as trial names show them."""
    return trial_label({k: v for k, v in point.items() if k != SEED_KEY})


def seed_of(trial: Any) -> str:
    """A trial's seed: searched (its point) or set (its params, as MLflow holds them)."""
    return str(trial.point.get(SEED_KEY, trial.params.get(SEED_KEY, "")))


def points(trials: Sequence[Any], metric: str) -> list[Point]:
    """The trials (TrialRun: `.point`, `.params`, `.metrics`) grouped into points, in
    first-seen order. Trials without a finite metric are left out."""
    groups: dict[str, list[tuple[str, float]]] = {}
    for t in trials:
        value = t.metrics.get(metric)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        groups.setdefault(point_label(t.point), []).append((seed_of(t), float(value)))
    return [
        Point(label, tuple(s for s, _ in sorted(pairs)), tuple(v for _, v in sorted(pairs)))
        for label, pairs in groups.items()
    ]


def seeded(found: Sequence[Point]) -> bool:
    """Whether the sweep ran its points on several seeds (some point has two or more)."""
    return any(len(set(p.seeds)) >= 2 for p in found)


def welch_p(a: Point, b: Point) -> float:
    """The two-sided p-value that `a` and `b` have the same mean (NaN below two seeds each)."""
    from scipy import stats

    if a.n < 2 or b.n < 2:
        return math.nan
    if a.std == 0 and b.std == 0:
        return 1.0 if a.mean == b.mean else 0.0
    with warnings.catch_warnings():  # seeds that agree to rounding: scipy warns, the p-value stands
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a.values, b.values, equal_var=False).pvalue)


def ranked(found: Sequence[Point], mode: str) -> list[Point]:
    """Best mean first."""
    return sorted(found, key=lambda p: -p.mean if mode == "max" else p.mean)


def verdict(best: Point, runner_up: Point, metric: str) -> str:
    """One sentence: does the best point beat the runner-up beyond the seeds' noise?"""
    p = welch_p(best, runner_up)
    if math.isnan(p):
        return f"{best.label} and {runner_up.label} have too few seeds each (2 needed) to compare."
    test = f"Welch's t-test over seeds, p = {p:.2g}"
    if p < ALPHA:
        return f"{best.label} beats the runner-up {runner_up.label} on mean {metric} beyond the seeds' noise ({test})."
    n = min(best.n, runner_up.n)
    return (
        f"{n} seeds cannot separate {best.label} from the runner-up {runner_up.label} on {metric} ({test}): "
        "more seeds, or call them a tie."
    )
