"""The in-context study's report answers its questions from the numbers, no stronger than they
are: differences count when they exceed two standard errors over the evaluation prompts."""

import math

import pandas as pd
import pytest
from scipy import stats

from trainables.phase1.report import findings, still_improving


def table(rows):
    """Rows as the report's collect() makes them: x, nMSE and its SE, baselines, the paired
    difference to least squares and its SE, steps to the LS level, whether still improving."""
    out = []
    for x, nmse, se, minus, minus_se, steps, improving in rows:
        out.append(
            dict(
                x=x,
                final_nmse=nmse,
                final_se=se,
                zero_nmse=1.0,
                zero_se=0.01,
                lstsq_nmse=0.4,
                oracle_nmse=0.0,
                minus_lstsq=minus,
                minus_lstsq_se=minus_se,
                excess_over_oracle=nmse,
                gap_closed=(0.4 - nmse) / 0.4,
                steps_to_lstsq=steps,
                still_improving=improving,
            )
        )
    return pd.DataFrame(out)


def test_claims_follow_the_paired_differences_and_their_errors():
    df = table(
        [
            (1, 0.05, 0.002, -0.35, 0.004, 400, False),  # clearly better than least squares
            (2, 0.39, 0.005, -0.006, 0.004, math.nan, True),  # within two SE: a tie
            (4, 0.70, 0.008, 0.30, 0.006, math.nan, True),  # worse
            (10, 1.00, 0.010, 0.60, 0.008, math.nan, False),  # at the zero predictor
        ]
    )
    lines = findings(df, "K")
    text = "\n".join(lines)
    assert lines[0].startswith("The transformer beats least squares on the target block at K = 1 (by 0.350")
    assert "At K = 2 it cannot be told apart from least squares" in text
    assert "At K = 4, 10 it is worse than least squares." in text
    assert "rises from 0.050 at K = 1 to 1.000 at K = 10: the error grows with K beyond the oracle's own rise." in text
    assert "At K = 10 it stays at the zero predictor's level within this budget." in text
    assert "At K = 10 the validation nMSE was flat over the last fifth of training, above least squares" in text
    assert "not shown to be the model's capacity" in text
    assert "At K = 2, 4 the validation nMSE was still falling" in text and "limited by the training budget" in text
    assert "400 at K = 1" in text and "not reached within the budget at K = 2, 4, 10" in text


def test_a_rise_from_first_to_last_names_the_falls_and_the_peak_it_would_hide():
    """As the default sweep gave: higher at K = 10 than at K = 1, but not steadily."""
    rows = [(1, 0.036), (2, 0.606), (3, 0.783), (4, 0.419), (8, 1.003), (10, 0.771)]
    df = table([(x, v, 0.01, v - 0.4, 0.005, math.nan, False) for x, v in rows])
    (line,) = [s for s in findings(df, "K") if "Bayes oracle" in s]
    assert line.startswith("Its excess over the Bayes oracle rises from 0.036 at K = 1 to 0.771 at K = 10"), line
    assert (
        "though not steadily: it falls from 0.783 at K = 3 to 0.419 at K = 4; from 1.003 at K = 8 to 0.771 at K = 10"
        in line
    )
    assert line.endswith(", and it is highest at K = 8 (1.003)."), line
    # Within the noise, a dip is no fall.
    df = table([(x, v, 0.01, v - 0.4, 0.005, math.nan, False) for x, v in [(1, 0.1), (2, 0.5), (3, 0.49), (4, 0.9)]])
    (line,) = [s for s in findings(df, "K") if "Bayes oracle" in s]
    assert line.endswith("beyond the oracle's own rise."), line


def test_no_claim_of_a_rise_within_the_evaluation_noise():
    df = table([(1, 0.300, 0.01, -0.1, 0.004, 300, False), (2, 0.305, 0.01, -0.095, 0.004, 320, False)])
    text = "\n".join(findings(df, "K"))
    assert "does not rise from K = 1 to 2 by more than the evaluation's error" in text
    assert "At every K it does better than the zero predictor." in text


def test_still_improving_reads_the_end_of_the_smoothed_curve():
    falling = [(s, 1.0 - 0.01 * s) for s in range(50)]
    flat = [(s, 0.5) for s in range(50)]
    assert still_improving(falling) and not still_improving(flat) and not still_improving(falling[:3])


class Sweep:
    """What build() reads of a sweep: its trials as MLflow returns them, their histories."""

    def __init__(self, trials, histories):
        self.trials, self._histories = trials, histories
        self.sweep_id, self.experiment, self.smoke = "s1", "phase1", False

    def history(self, run_id, key):
        return self._histories[run_id]


def seeded_sweep(finals: dict[int, list[float]]) -> Sweep:
    from tune_jobs.core.sweep_data import TrialRun

    trials, histories = [], {}
    for k, values in finals.items():
        for seed, nmse in enumerate(values):
            run_id = f"r{k}_{seed}"
            metrics = {
                "val/nmse": nmse,
                "final/nmse": nmse,
                "final/nmse_se": 0.004,
                "final/zero_nmse": 1.0,
                "final/lstsq_nmse": 0.5,
                "final/oracle_nmse": 0.1,
                "final/nmse_minus_lstsq": nmse - 0.5,
                "final/nmse_minus_lstsq_se": 0.003,
                "baseline/lstsq_nmse": 0.5,
                "baseline/oracle_nmse": 0.1,
                "baseline/zero_nmse": 1.0,
            }
            point = {"data.n_components": k, "seed": seed}
            trials.append(
                TrialRun(
                    run_id, f"phase1/n_components={k},seed={seed}", "FINISHED", point, {"seed": str(seed)}, metrics, {}
                )
            )
            histories[run_id] = [(0, 1.0), (100, (1.0 + nmse) / 2), (200, nmse)]
    return Sweep(trials, histories)


def test_a_sweep_on_several_seeds_is_reported_per_k_over_its_seeds(tmp_path):
    """As README's table: K = 3 and 4 on three seeds each, which the seeds cannot tell apart,
    and K = 1, clearly apart from both."""
    from trainables.phase1.report import build, over_seeds

    finals = {1: [0.03, 0.04, 0.035], 3: [0.78, 0.45, 0.6], 4: [0.42, 0.53, 0.7]}
    files = build(seeded_sweep(finals), tmp_path)
    assert {p.name for p in files} >= {"loss_vs_components.png", "summary.md", "summary.csv"}
    per_k = over_seeds(pd.read_csv(tmp_path / "summary.csv"))
    assert list(per_k.seeds) == [3, 3, 3]
    for k, values in finals.items():
        row = per_k[per_k.x == k].iloc[0]
        assert row.final_nmse == pytest.approx(sum(values) / 3)
        assert row.final_std == pytest.approx(pd.Series(values).std(ddof=1))
        assert row.final_se == pytest.approx(pd.Series(values).std(ddof=1) / math.sqrt(3))
    text = (tmp_path / "summary.md").read_text()
    assert "- Each K ran on 3 seeds: every number below is the mean over them" in text
    p13 = stats.ttest_ind(finals[1], finals[3], equal_var=False).pvalue
    p34 = stats.ttest_ind(finals[3], finals[4], equal_var=False).pvalue
    assert f"beyond the seeds' noise (Welch's t-test): K = 1 and 3 (p = {p13:.2g})." in text
    assert f"Neighbours these seeds cannot tell apart: K = 3 and 4 (p = {p34:.2g})." in text
    header = next(line for line in text.splitlines() if line.startswith("| K |"))
    assert header.startswith("| K | seeds | final_nmse | final_std | final_se |")
