"""A point's spread over its seeds and the test between two points, against numpy and scipy."""

import math

import numpy as np
import pytest
from scipy import stats

from tune_jobs.core import spread


def test_the_spread_of_a_point_is_its_mean_sample_std_and_students_t_interval():
    values = (0.61, 0.55, 0.7, 0.58)
    p = spread.Point("lr=0.1", (0, 1, 2, 3), values)
    assert p.mean == pytest.approx(np.mean(values))
    assert p.std == pytest.approx(np.std(values, ddof=1))
    lo, hi = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert p.interval == pytest.approx((lo, hi))
    q = spread.Point("lr=0.3", (0, 1, 2), (0.2, 0.25, 0.22))
    assert spread.welch_p(p, q) == pytest.approx(stats.ttest_ind(values, q.values, equal_var=False).pvalue)
    assert math.isnan(spread.Point("x=1", (0,), (0.5,)).std)
    assert "beyond the seeds' noise" in spread.verdict(p, q, "val/f1")
    close = spread.Point("lr=0.2", (0, 1, 2, 3), (0.6, 0.57, 0.69, 0.6))
    assert spread.verdict(p, close, "val/f1").startswith("4 seeds cannot separate lr=0.1 from the runner-up lr=0.2")
