"""Report of the in-context scaling study (phases 1-4): where the model keeps up with the oracle.

Plots (PNG + PDF), against the varied parameter x (K for phase 1):
- loss_vs_components: final query nMSE with the zero, target-only least-squares and Bayes
  oracle baselines of the same validation prompts drawn in;
- capacity_analysis: excess nMSE over the oracle, and the fraction of the least-squares ->
  oracle gap the model closes (where it drops below one half, the model stops keeping up);
- convergence_steps: the first step the smoothed validation nMSE falls below a threshold
  relative to the baselines (the least-squares level, and halfway from it to the oracle).
Plus summary.csv / summary.json / summary.md.

A sweep that ran each x on several seeds (`sweep.seeds=3`) is reported per x over its seeds:
the mean of each number, its errors the standard error of that mean over the seeds (the seeds'
spread, far wider than the prompts'), each seed drawn as a dot, and which neighbouring values
of x the seeds tell apart (Welch's t-test). summary.csv keeps one row per trial.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from trainables.common.tables import markdown_table
from tune_jobs.core.sweep_data import SMOKE_NOTE, SweepData, save_figure

KEEP_UP = 0.5  # a model "keeps up" while it closes at least half of the LS -> oracle gap
# varied key -> (axis label, name in sentences, plot file suffix)
NAMES = {
    "n_components": ("K (mixture components)", "K", "components"),
    "contexts_per_component": ("context points per component", "contexts per component", "contexts_per_component"),
    "n_dims": ("input dimension d", "d", "n_dims"),
    "noise_std": ("label noise std", "noise std", "noise_std"),
}


def smooth(values: list[float], alpha: float = 0.3) -> list[float]:
    """Exponential moving average over evaluation points (noise in a single eval is ~5%)."""
    out, acc = [], None
    for v in values:
        acc = v if acc is None else alpha * v + (1 - alpha) * acc
        out.append(acc)
    return out


def first_below(history: list[tuple[int, float]], threshold: float) -> int | None:
    steps = [s for s, _ in history]
    for step, value in zip(steps, smooth([v for _, v in history]), strict=True):
        if value < threshold:
            return step
    return None


def still_improving(history: list[tuple[int, float]], tail: float = 0.2) -> bool:
    """Whether the validation nMSE still fell over the last `tail` of training: the smoothed
    curve's last value is clearly (5%) below its value where that tail began."""
    if len(history) < 5:
        return False
    values = smooth([v for _, v in history])
    start = values[int(len(values) * (1 - tail)) - 1]
    return values[-1] < 0.95 * start


def collect(sweep: SweepData) -> tuple[pd.DataFrame, str]:
    rows = []
    x_key = next(iter(sweep.trials[0].point), "data.n_components") if sweep.trials else "data.n_components"
    for t in sweep.trials:
        m = t.metrics
        if "val/nmse" not in m:
            rows.append({"x": t.point.get(x_key), "status": t.status, "run": t.name})
            continue
        hist = sweep.history(t.run_id, "val/nmse")
        # The last step's large held-out set when the trial has one (final/*), else the
        # validation set the curves use; the curves' thresholds use that set's own baselines.
        final = "final/nmse" in m
        nmse = m["final/nmse"] if final else m["val/nmse"]
        ls = m["final/lstsq_nmse"] if final else m["baseline/lstsq_nmse"]
        oracle = m["final/oracle_nmse"] if final else m["baseline/oracle_nmse"]
        val_ls, val_oracle = m["baseline/lstsq_nmse"], m["baseline/oracle_nmse"]
        gap = ls - oracle
        nan = float("nan")
        rows.append(
            {
                "x": t.point.get(x_key, t.params.get(x_key)),
                "seed": int(t.params.get("seed", 0)),
                "final_nmse": nmse,
                "final_se": m.get("final/nmse_se", nan),
                "best_nmse": min(v for _, v in hist),
                "zero_nmse": m["final/zero_nmse"] if final else m["baseline/zero_nmse"],
                "zero_se": m.get("final/zero_nmse_se", nan),
                "lstsq_nmse": ls,
                "oracle_nmse": oracle,
                "minus_lstsq": m.get("final/nmse_minus_lstsq", nmse - ls),
                "minus_lstsq_se": m.get("final/nmse_minus_lstsq_se", nan),
                "excess_over_oracle": nmse - oracle,
                "gap_closed": (ls - nmse) / gap if gap > 1e-6 else nan,
                "steps_to_lstsq": first_below(hist, val_ls),
                "steps_to_halfway": first_below(hist, val_oracle + 0.5 * (val_ls - val_oracle)),
                "still_improving": still_improving(hist),
                "final_step": hist[-1][0] if hist else None,
                "status": t.status,
                "run": t.name,
                "run_id": t.run_id,
            }
        )
    df = pd.DataFrame(rows)
    if not df.empty:
        df = df.sort_values("x", key=lambda s: pd.to_numeric(s, errors="coerce")).reset_index(drop=True)
    return df, x_key


def over_seeds(df: pd.DataFrame) -> pd.DataFrame:
    """One row per x from the trials' rows: the mean of each number over the seeds, `seeds` and
    `final_std` (their spread); the errors the standard error of the mean over seeds; a curve
    still improving on any seed is still improving; steps to a level, the mean over the seeds
    that reached it (none reached: NaN)."""
    rows = []
    for x, group in df.groupby("x", sort=False):
        n = len(group)
        row: dict[str, Any] = {"x": x, "seeds": n}
        for col in group.columns:
            if col in ("x", "seed", "status", "run", "run_id", "still_improving"):
                continue
            row[col] = pd.to_numeric(group[col], errors="coerce").mean()
        spread = group.final_nmse.std(ddof=1) if n > 1 else math.nan
        row["final_std"] = spread
        row["final_se"] = spread / math.sqrt(n) if n > 1 else math.nan
        row["minus_lstsq_se"] = group.minus_lstsq.std(ddof=1) / math.sqrt(n) if n > 1 else math.nan
        row["zero_se"] = group.zero_nmse.std(ddof=1) / math.sqrt(n) if n > 1 else math.nan
        row["still_improving"] = bool(group.still_improving.fillna(False).astype(bool).any())
        row["status"] = "FINISHED" if (group.status == "FINISHED").all() else "NOT FINISHED"
        row["values"] = list(group.final_nmse)
        rows.append(row)
    return pd.DataFrame(rows).reset_index(drop=True)


def seed_findings(per_x: pd.DataFrame, x_name: str) -> list[str]:
    """How many seeds, and which neighbouring values of x their means tell apart."""
    from scipy import stats

    n = sorted(set(per_x.seeds))
    lines = [
        f"Each {x_name} ran on {_list(n)} seeds: every number below is the mean over them, every error the "
        "standard error of that mean over seeds (how far a rerun on new seeds may move it)."
    ]
    apart, close = [], []
    for (_, a), (_, b) in zip(per_x.iloc[:-1].iterrows(), per_x.iloc[1:].iterrows(), strict=True):
        if len(a["values"]) < 2 or len(b["values"]) < 2:
            continue
        p = float(stats.ttest_ind(a["values"], b["values"], equal_var=False).pvalue)
        said = f"{x_name} = {a.x} and {b.x} (p = {p:.2g})"
        (apart if p < 0.05 else close).append(said)
    if apart:
        lines.append(
            "Neighbours whose mean final nMSE differs beyond the seeds' noise (Welch's t-test): "
            + "; ".join(apart)
            + "."
        )
    if close:
        lines.append("Neighbours these seeds cannot tell apart: " + "; ".join(close) + ".")
    return lines


def _labels(x_key: str) -> tuple[str, str, str]:
    leaf = x_key.rsplit(".", 1)[-1]
    return NAMES.get(leaf, (leaf, leaf, leaf))


def plot_loss(df: pd.DataFrame, x_label: str, stem: str, out: Path, title: str) -> list[Path]:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    seeded = "values" in df
    if seeded:
        xs = [x for x, values in zip(df.x, df["values"], strict=True) for _ in values]
        ax.scatter(
            xs, [v for values in df["values"] for v in values], s=12, color="tab:blue", alpha=0.35, label="each seed"
        )
    ax.plot(df.x, df.zero_nmse, ":", color="grey", label="zero predictor")
    ax.plot(df.x, df.lstsq_nmse, "--", color="tab:orange", label="least squares on target block")
    ax.plot(df.x, df.oracle_nmse, "-.", color="tab:green", label="Bayes oracle (block matching)")
    # Error bars: two standard errors over the evaluation prompts (absent for old sweeps), or
    # over the seeds where the sweep ran several.
    ax.errorbar(
        df.x,
        df.final_nmse,
        yerr=2 * df.final_se.fillna(0),
        fmt="o-",
        color="tab:blue",
        lw=2,
        capsize=3,
        label="transformer (mean over seeds, ±2 SE)" if seeded else "transformer (final, ±2 SE)",
    )
    ax.set_xlabel(x_label)
    ax.set_ylabel("query nMSE  (MSE / scale² d)")
    ax.set_xticks(list(df.x))
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out, stem)


def plot_capacity(df: pd.DataFrame, x_label: str, out: Path, title: str) -> list[Path]:
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(df.x, df.excess_over_oracle, "o-", color="tab:blue", label="transformer")
    a.plot(df.x, df.lstsq_nmse - df.oracle_nmse, "--", color="tab:orange", label="least squares on target block")
    a.axhline(0, color="tab:green", ls="-.", label="oracle")
    a.set_xlabel(x_label)
    a.set_ylabel("nMSE − oracle nMSE")
    a.set_title("excess error over the Bayes oracle")
    a.legend(fontsize=8)
    a.grid(alpha=0.3)
    b.plot(df.x, 100 * df.gap_closed, "o-", color="tab:blue")
    b.axhline(100 * KEEP_UP, color="grey", ls=":", label=f"keeps up ({KEEP_UP:.0%} of the gap)")
    b.axhline(0, color="tab:orange", ls="--", label="no better than least squares")
    lost = df[df.gap_closed < KEEP_UP]
    if not lost.empty:
        b.axvline(lost.x.iloc[0], color="tab:red", alpha=0.4, lw=6, label=f"stops keeping up: {lost.x.iloc[0]}")
    b.set_xlabel(x_label)
    b.set_ylabel("% of least-squares → oracle gap closed")
    b.set_title("capacity")
    b.legend(fontsize=8)
    b.grid(alpha=0.3)
    for ax in (a, b):
        ax.set_xticks(list(df.x))
    fig.suptitle(title)
    return save_figure(fig, out, "capacity_analysis")


def plot_convergence(df: pd.DataFrame, x_label: str, out: Path, title: str) -> list[Path]:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    top = max(df.final_step.max(), 1)
    for col, label, color, lift in (
        ("steps_to_lstsq", "reaches the least-squares level", "tab:orange", 1.03),
        ("steps_to_halfway", "halfway from least squares to oracle", "tab:green", 1.08),
    ):
        reached = df[df[col].notna()]
        missed = df[df[col].isna()]
        ax.plot(reached.x, reached[col], "o-", color=color, label=label)
        if not missed.empty:
            ax.scatter(
                missed.x,
                [top * lift] * len(missed),
                marker="^",
                facecolors="none",
                edgecolors=color,
                label=f"{label}: not reached",
            )
    ax.axhline(top, color="grey", ls=":", lw=1)
    ax.set_xlabel(x_label)
    ax.set_ylabel("training step (smoothed val nMSE below threshold)")
    ax.set_xticks(list(df.x))
    ax.set_ylim(0, top * 1.12)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out, "convergence_steps")


def _list(xs: Any) -> str:
    return ", ".join(str(x) for x in xs)


def _unsteady(df: pd.DataFrame, x_name: str) -> str:
    """What the first-to-last rise of the excess hides: each fall between neighbouring values of
    x beyond two standard errors, and a peak before the last x. Empty when the rise is steady."""
    exc = list(df.excess_over_oracle)
    se = [0.0 if math.isnan(v) else float(v) for v in df.final_se]
    xs = list(df.x)
    falls = [
        f"from {exc[i - 1]:.3f} at {x_name} = {xs[i - 1]} to {exc[i]:.3f} at {x_name} = {xs[i]}"
        for i in range(1, len(exc))
        if exc[i] < exc[i - 1] - 2 * math.hypot(se[i], se[i - 1])
    ]
    peak = max(range(len(exc)), key=exc.__getitem__)
    said = []
    if falls:
        said.append("not steadily: it falls " + "; ".join(falls))
    if peak != len(exc) - 1 and exc[peak] > exc[-1] + 2 * math.hypot(se[peak], se[-1]):
        said.append(f"it is highest at {x_name} = {xs[peak]} ({exc[peak]:.3f})")
    return (", though " + ", and ".join(said)) if said else ""


def findings(df: pd.DataFrame, x_name: str) -> list[str]:
    """The study's questions answered from the numbers, each claim no stronger than its error:
    a difference counts when it exceeds two standard errors over the evaluation prompts."""
    lines = []
    se = df.minus_lstsq_se.fillna(0)
    beats = df[df.minus_lstsq + 2 * se < 0]
    worse = df[df.minus_lstsq - 2 * se > 0]
    tied = df[~df.index.isin(beats.index) & ~df.index.isin(worse.index)]
    if beats.empty:
        lines.append(f"The transformer does not beat least squares on the target block at any {x_name} tried.")
    else:
        lines.append(
            f"The transformer beats least squares on the target block at {x_name} = {_list(beats.x)} "
            f"(by {_list(f'{-v:.3f}' for v in beats.minus_lstsq)} nMSE; paired over the same prompts, "
            f"each more than two standard errors)."
        )
    if not tied.empty:
        lines.append(
            f"At {x_name} = {_list(tied.x)} it cannot be told apart from least squares (within two standard errors)."
        )
    if not worse.empty:
        lines.append(f"At {x_name} = {_list(worse.x)} it is worse than least squares.")
    # Does the error rise with x beyond the oracle's rise?
    if len(df) >= 2:
        first, last = df.iloc[0], df.iloc[-1]
        rise = last.excess_over_oracle - first.excess_over_oracle
        noise = 2 * math.hypot(*(0.0 if math.isnan(v) else v for v in (first.final_se, last.final_se)))
        if rise > noise:
            lines.append(
                f"Its excess over the Bayes oracle rises from {first.excess_over_oracle:.3f} at {x_name} = {first.x} "
                f"to {last.excess_over_oracle:.3f} at {x_name} = {last.x}: the error grows with {x_name} beyond the "
                f"oracle's own rise{_unsteady(df, x_name)}."
            )
        else:
            lines.append(
                f"Its excess over the Bayes oracle does not rise from {x_name} = {first.x} to {last.x} by more than "
                f"the evaluation's error ({first.excess_over_oracle:.3f} and {last.excess_over_oracle:.3f})."
            )
    # A limit: the model stays at the zero predictor (it learned nothing usable) from some x on.
    zero_se = df.zero_se.fillna(0)
    at_zero = df[df.final_nmse >= df.zero_nmse - 2 * (df.final_se.fillna(0) + zero_se) - 0.02]
    if at_zero.empty:
        lines.append(f"At every {x_name} it does better than the zero predictor.")
    else:
        lines.append(f"At {x_name} = {_list(at_zero.x)} it stays at the zero predictor's level within this budget.")
    # Budget or capacity: a curve still falling at the end says the budget, not the model, limits it.
    improving = df[df.still_improving.fillna(False).astype(bool)]
    if not improving.empty:
        lines.append(
            f"At {x_name} = {_list(improving.x)} the validation nMSE was still falling over the last fifth of "
            "training: those values are limited by the training budget; they say nothing yet about the "
            "model's capacity."
        )
    # A flat curve above least squares is a plateau, not yet a capacity limit: in-context
    # learning curves fall in sudden drops after long flat stretches.
    flat = df[~df.still_improving.fillna(False).astype(bool) & df.index.isin(worse.index)]
    if not flat.empty:
        lines.append(
            f"At {x_name} = {_list(flat.x)} the validation nMSE was flat over the last fifth of training, above "
            "least squares: a plateau within this budget, not shown to be the model's capacity (these curves "
            "fall in sudden drops after flat stretches); only a run with more steps tells the two apart."
        )
    reached = df[df.steps_to_lstsq.notna()]
    if not reached.empty:
        lines.append(
            f"Steps to reach the least-squares level (smoothed validation curve): "
            f"{_list(f'{int(s)} at {x_name} = {x}' for x, s in zip(reached.x, reached.steps_to_lstsq, strict=True))}"
            + (
                f"; not reached within the budget at {x_name} = {_list(df[df.steps_to_lstsq.isna()].x)}."
                if len(reached) < len(df)
                else "."
            )
        )
    else:
        lines.append("The least-squares level was not reached within the budget at any value tried.")
    lost = df[df.gap_closed < KEEP_UP]
    if lost.empty:
        lines.append(f"It closes at least {KEEP_UP:.0%} of the least-squares -> oracle gap at every {x_name} tried.")
    return lines


def build(sweep: SweepData, out: Path) -> list[Path]:
    df, x_key = collect(sweep)
    done = df[df.get("final_nmse", pd.Series(dtype=float)).notna()] if "final_nmse" in df else df.iloc[0:0]
    x_label, x_name, x_file = _labels(x_key)
    title = f"{sweep.experiment} (sweep {sweep.sweep_id})"
    files: list[Path] = []
    df.to_csv(out / "summary.csv", index=False)
    files.append(out / "summary.csv")
    if done.empty:
        (out / "summary.md").write_text(f"# {title}\n\nNo trial reported results.\n")
        return files + [out / "summary.md"]
    seeded = done.groupby("x").seed.nunique().max() > 1
    shown = over_seeds(done) if seeded else done
    files += plot_loss(shown, x_label, f"loss_vs_{x_file}", out, title)
    files += plot_capacity(shown, x_label, out, title)
    files += plot_convergence(shown, x_label, out, title)
    if sweep.smoke:
        notes = [SMOKE_NOTE]
    else:
        notes = [*seed_findings(shown, x_name), *findings(shown, x_name)] if seeded else findings(done, x_name)
    records = json.loads(df.to_json(orient="records"))
    (out / "summary.json").write_text(
        json.dumps({"sweep": sweep.sweep_id, "x": x_key, "findings": notes, "trials": records}, indent=1)
    )
    table = shown[
        [
            "x",
            *(["seeds", "final_nmse", "final_std"] if seeded else ["final_nmse"]),
            "final_se",
            "minus_lstsq",
            "minus_lstsq_se",
            "best_nmse",
            "zero_nmse",
            "lstsq_nmse",
            "oracle_nmse",
            "gap_closed",
            "steps_to_lstsq",
            "steps_to_halfway",
            "status",
        ]
    ]
    md = [f"# {title}", "", *[f"- {line}" for line in notes], "", _markdown(table.rename(columns={"x": x_name})), ""]
    failed = df[df.status != "FINISHED"]
    if not failed.empty:
        md.append(f"Trials not finished: {', '.join(failed.run)}")
    (out / "summary.md").write_text("\n".join(md))
    return files + [out / "summary.json", out / "summary.md"]


def _markdown(df: pd.DataFrame) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            if math.isnan(v):
                return ""
            return f"{v:.0f}" if v.is_integer() and abs(v) >= 10 else f"{v:.3f}"
        return "" if v is None else str(v)

    return markdown_table(list(df.columns), df.itertuples(index=False), cell)
