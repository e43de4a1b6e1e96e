"""Report of the in-context scaling study (phases 1-4): where the model keeps up with the oracle.

Plots (PNG + PDF), against the varied parameter x (K for phase 1):
- loss_vs_components: final query nMSE with the zero, target-only least-squares and Bayes
  oracle baselines of the same validation prompts drawn in;
- capacity_analysis: excess nMSE over the oracle, and the fraction of the least-squares ->
  oracle gap the model closes (where it drops below one half, the model stops keeping up);
- convergence_steps: the first step the smoothed validation nMSE falls below a threshold
  relative to the baselines (the least-squares level, and halfway from it to the oracle).
Plus summary.csv / summary.json / summary.md.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from tune_jobs.core.reporting import SweepData, save_figure

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


def collect(sweep: SweepData) -> tuple[pd.DataFrame, str]:
    rows = []
    x_key = next(iter(sweep.trials[0].point), "data.n_components") if sweep.trials else "data.n_components"
    for t in sweep.trials:
        m = t.metrics
        if "val/nmse" not in m:
            rows.append({"x": t.point.get(x_key), "status": t.status, "run": t.name})
            continue
        hist = sweep.history(t.run_id, "val/nmse")
        ls, oracle = m["baseline/lstsq_nmse"], m["baseline/oracle_nmse"]
        gap = ls - oracle
        rows.append(
            {
                "x": t.point.get(x_key, t.params.get(x_key)),
                "final_nmse": m["val/nmse"],
                "best_nmse": min(v for _, v in hist),
                "zero_nmse": m["baseline/zero_nmse"],
                "lstsq_nmse": ls,
                "oracle_nmse": oracle,
                "excess_over_oracle": m["val/nmse"] - oracle,
                "gap_closed": (ls - m["val/nmse"]) / gap if gap > 1e-6 else float("nan"),
                "steps_to_lstsq": first_below(hist, ls),
                "steps_to_halfway": first_below(hist, oracle + 0.5 * gap),
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


def _labels(x_key: str) -> tuple[str, str, str]:
    leaf = x_key.rsplit(".", 1)[-1]
    return NAMES.get(leaf, (leaf, leaf, leaf))


def plot_loss(df: pd.DataFrame, x_label: str, stem: str, out: Path, title: str) -> list[Path]:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(df.x, df.zero_nmse, ":", color="grey", label="zero predictor")
    ax.plot(df.x, df.lstsq_nmse, "--", color="tab:orange", label="least squares on target block")
    ax.plot(df.x, df.oracle_nmse, "-.", color="tab:green", label="Bayes oracle (block matching)")
    ax.plot(df.x, df.final_nmse, "o-", color="tab:blue", lw=2, label="transformer (final)")
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


def findings(df: pd.DataFrame, x_name: str) -> list[str]:
    lines = []
    beats = df[df.final_nmse < df.lstsq_nmse]
    lines.append(
        f"The transformer beats least squares on the target block at {x_name} = "
        f"{', '.join(str(x) for x in beats.x)} (of {', '.join(str(x) for x in df.x)})."
        if not beats.empty
        else f"The transformer does not beat least squares on the target block at any {x_name} tried."
    )
    lost = df[df.gap_closed < KEEP_UP]
    if lost.empty:
        lines.append(
            f"It closes at least {KEEP_UP:.0%} of the least-squares -> oracle gap at every {x_name}: no capacity limit within this range."
        )
    else:
        lines.append(
            f"It stops keeping up with the oracle at {x_name} = {lost.x.iloc[0]} "
            f"(closes {100 * lost.gap_closed.iloc[0]:.0f}% of the gap; below {KEEP_UP:.0%})."
        )
    slow = df[df.steps_to_halfway.isna()]
    if not slow.empty:
        lines.append(
            f"Not halfway to the oracle within the budget at {x_name} = {', '.join(str(x) for x in slow.x)}: more steps or a wider model may help there."
        )
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
    files += plot_loss(done, x_label, f"loss_vs_{x_file}", out, title)
    files += plot_capacity(done, x_label, out, title)
    files += plot_convergence(done, x_label, out, title)
    notes = findings(done, x_name)
    records = json.loads(df.to_json(orient="records"))
    (out / "summary.json").write_text(
        json.dumps({"sweep": sweep.sweep_id, "x": x_key, "findings": notes, "trials": records}, indent=1)
    )
    table = done[
        [
            "x",
            "final_nmse",
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

    head = "| " + " | ".join(df.columns) + " |"
    sep = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])
