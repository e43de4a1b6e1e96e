"""Report of the 3-blob hunt (study C): which regimes grow clean 3-blob weight-pair structure.

Built from MLflow alone (any time, also while the sweep runs):
- best_regimes: the weight-pair scatter, coloured by DBSCAN blob, of the best trials (their
  latest weight_pairs.npz artifact), titled with their hyperparameters;
- blob_panels: the seed's four panels (silhouette, DBSCAN blobs, correlation, loss) per epoch
  for every trial; `tune_jobs/denoising_monitor.py` draws the same figure live;
- search_landscape: the final blob score against each searched hyperparameter;
- summary.csv / summary.json / summary.md naming the best regimes and what they share; in a
  sweep with seeds, each regime's mean blob score ± std over its seeds, on how many of them it
  grew 3 blobs, and whether the best beats the runner-up beyond the seeds' noise.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from trainables.common.tables import markdown_table
from tune_jobs.core.spread import point_label, points, ranked, seeded, verdict
from tune_jobs.core.sweep_data import SweepData, save_figure

log = logging.getLogger(__name__)

SCORE = "blob/score"
PANELS = (
    ("blob/silhouette", "silhouette of the blobs"),
    ("blob/n_clusters", "DBSCAN blobs"),
    ("blob/correlation", "Pearson correlation of (W1, W2)"),
    ("val/loss_vs_zero", "validation loss / zero-predictor loss"),
)
FINAL = (SCORE, "blob/n_clusters", "blob/silhouette", "blob/correlation", "blob/gmm_components", "val/loss_vs_zero")
TOP = 4  # regimes drawn in best_regimes


SHORT = {
    "encoder_init_scale": "enc_init",
    "decoder_init_scale": "dec_init",
    "decoder_reg": "dec_reg",
    "noise_variance": "noise",
}


def leaf(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def short_label(point: dict[str, Any]) -> str:
    """`enc_init=0.03 lr=0.02 ...`: a trial's searched values, short enough for a legend."""
    return " ".join(f"{SHORT.get(leaf(k), leaf(k))}={_fmt(v)}" for k, v in point.items()) or "default"


def collect(sweep: SweepData) -> pd.DataFrame:
    """One row per trial: its searched values, final diagnostics, epochs run, overhead."""
    rows = []
    for t in sweep.trials:
        m = t.metrics
        row: dict[str, Any] = {"run": t.name, "run_id": t.run_id, "status": t.status}
        row.update({leaf(k): v for k, v in t.point.items()})
        row.update({k: m.get(k, float("nan")) for k in FINAL})
        diag = sweep.history(t.run_id, "perf/diag_fraction") if SCORE in m else []
        scores = sweep.history(t.run_id, SCORE)
        clusters = dict(sweep.history(t.run_id, "blob/n_clusters")) if scores else {}
        row["epochs"] = scores[-1][0] if scores else 0
        peak_epoch, peak = max(scores, key=lambda sv: sv[1]) if scores else (0, float("nan"))
        row["peak_score"], row["peak_epoch"] = peak, peak_epoch
        row["had_3_blobs_at"] = ",".join(str(e) for e, n in sorted(clusters.items()) if n == 3)
        row["diag_fraction_mean"] = float(np.mean([v for _, v in diag])) if diag else float("nan")
        row["diag_fraction_max"] = float(np.max([v for _, v in diag])) if diag else float("nan")
        row["overhead_fraction"] = m.get("perf/overhead_fraction", float("nan"))
        rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty:
        df = df.sort_values([SCORE, "blob/silhouette"], ascending=False, na_position="last").reset_index(drop=True)
    return df


def describe_point(row: pd.Series, keys: list[str]) -> str:
    return ", ".join(f"{k}={_fmt(row[k])}" for k in keys)


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


# -- figures ---------------------------------------------------------------------------
def panel_figure(sweep: SweepData, title: str) -> Any:
    """The seed's four panels for every trial of a sweep, coloured by the latest blob score."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True)
    scored = [(t, t.metrics.get(SCORE, float("nan"))) for t in sweep.trials]
    finite = [s for _, s in scored if s == s]
    top = sorted((s, t.name) for t, s in scored if s == s)[-3:]
    cmap = plt.get_cmap("viridis")
    hi = max(finite, default=1.0) or 1.0
    for t, score in scored:
        colour = cmap(score / hi if score == score else 0.0)
        highlighted = any(name == t.name for _, name in top)
        for ax, (key, _) in zip(axes.flat, PANELS, strict=True):
            hist = sweep.history(t.run_id, key)
            if not hist:
                continue
            steps, values = zip(*hist, strict=True)
            ax.plot(
                steps,
                values,
                "-o" if highlighted else "-",
                ms=3,
                lw=2 if highlighted else 0.8,
                alpha=1.0 if highlighted else 0.5,
                color=colour,
                label=f"score {score:.3f}: {short_label(t.point)}" if highlighted and key == PANELS[0][0] else None,
            )
    for ax, (key, label) in zip(axes.flat, PANELS, strict=True):
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
        if key == "blob/n_clusters":
            ax.axhline(3, color="tab:red", ls=":", lw=1, label="target: 3 blobs")
        if key == "val/loss_vs_zero":
            ax.set_yscale("log")
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    axes[0, 1].legend(fontsize=7, loc="upper right")
    fig.suptitle(f"{title}: {len(sweep.trials)} trials (colour = latest blob score)")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:  # the best trials, best first, below the panels (run names are long)
        order = sorted(range(len(labels)), key=lambda i: -float(labels[i].split(":")[0].split()[1]))
        fig.legend(
            [handles[i] for i in order],
            [labels[i] for i in order],
            loc="lower center",
            fontsize=7,
            ncol=1,
            title="best by latest blob score",
            title_fontsize=7,
        )
    return fig


def best_regimes_figure(sweep: SweepData, df: pd.DataFrame, keys: list[str], title: str) -> Any | None:
    """The weight-pair scatter of the best trials, from their latest weight_pairs.npz."""
    from trainables.denoising.plots import draw_pairs
    from trainables.denoising.train import PAIRS_FILE

    best = df[df[SCORE].notna()].head(TOP)
    loaded = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, row in best.iterrows():
            try:
                path = sweep.client.download_artifacts(row.run_id, PAIRS_FILE, f"{tmp}/{i}")
            except Exception:  # no artifact (trial still running, or it failed before an epoch)
                continue
            try:
                with np.load(path) as z:
                    loaded.append((row, z["pairs"], z["labels"], int(z["epoch"])))
            except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
                # A damaged artifact costs its panel, never the report.
                log.warning(
                    "run %s: its %s is unreadable (%s); left out of the best regimes", row.run_id, PAIRS_FILE, exc
                )
    if not loaded:
        return None
    fig, axes = plt.subplots(1, len(loaded), figsize=(4.6 * len(loaded), 4.6), squeeze=False)
    for rank, (ax, (row, pairs, labels, epoch)) in enumerate(zip(axes[0], loaded, strict=True), start=1):
        params = "\n".join(f"{k}={_fmt(row[k])}" for k in keys)
        draw_pairs(ax, pairs, labels)
        ax.set_title(
            f"#{rank} score {row[SCORE]:.3f}, {int(row['blob/n_clusters'])} blobs, epoch {epoch}\n{params}",
            fontsize=8,
        )
    fig.suptitle(f"{title}: best regimes, weight pairs coloured by DBSCAN blob", fontsize=11)
    fig.tight_layout()
    return fig


def landscape_figure(df: pd.DataFrame, keys: list[str], title: str) -> Any | None:
    done = df[df[SCORE].notna()]
    numeric = [k for k in keys if pd.api.types.is_numeric_dtype(done[k])]
    if done.empty or not numeric:
        return None
    fig, axes = plt.subplots(1, len(numeric), figsize=(3.3 * len(numeric), 3.4), squeeze=False, sharey=True)
    for ax, key in zip(axes[0], numeric, strict=True):
        values = done[key].astype(float)
        sc = ax.scatter(values, done[SCORE], c=done["epochs"], cmap="plasma", s=22, edgecolors="k", lw=0.3)
        if (values > 0).all() and values.max() / values.min() > 10:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlap
        ax.set_xlabel(key)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("final blob score")
    fig.colorbar(sc, ax=axes[0, -1], label="epochs run (ASHA)")
    fig.suptitle(f"{title}: blob score against each searched value", fontsize=10)
    return fig


# -- text --------------------------------------------------------------------------------
def findings(df: pd.DataFrame, keys: list[str]) -> list[str]:
    done = df[df[SCORE].notna()]
    if done.empty:
        return ["No trial reported a blob score."]
    three = done[(done["blob/n_clusters"] == 3) & (done[SCORE] > 0)]
    lines = [
        f"{len(three)} of {len(done)} trials ended with exactly 3 DBSCAN blobs "
        f"(the rest: {_counts(done[done['blob/n_clusters'] != 3]['blob/n_clusters'])})."
    ]
    transient = done[(done["blob/n_clusters"] != 3) & (done["had_3_blobs_at"] != "")]
    if not transient.empty:
        lines.append(
            f"{len(transient)} more trial(s) had 3 blobs at some epoch but not at their last "
            f"({', '.join(f'epochs {e}' for e in transient.had_3_blobs_at.head(5))}): "
            "there the structure is transient, and fewer epochs would keep it."
        )
    best = done.iloc[0]
    lines.append(
        f"Best regime: {describe_point(best, keys) or best.run} -> blob score {best[SCORE]:.3f} "
        f"({int(best['blob/n_clusters'])} blobs, silhouette {best['blob/silhouette']:.3f}, "
        f"correlation {best['blob/correlation']:.3f}, BIC-picked GMM {int(best['blob/gmm_components'])} components) "
        f"after {int(best.epochs)} epochs."
    )
    for rank, (_, row) in enumerate(done.iloc[1:TOP].iterrows(), start=2):
        lines.append(f"#{rank}: {describe_point(row, keys) or row.run} -> score {row[SCORE]:.3f}.")
    if len(three) >= 2:
        for key in keys:
            if pd.api.types.is_numeric_dtype(done[key]) and done[key].nunique() > 1:
                lines.append(
                    f"3-blob trials have {key} in [{_fmt(float(three[key].min()))}, {_fmt(float(three[key].max()))}] "
                    f"(all trials sampled [{_fmt(float(done[key].min()))}, {_fmt(float(done[key].max()))}])."
                )
    if done["diag_fraction_mean"].notna().any():
        lines.append(
            f"Diagnostics cost {100 * done['diag_fraction_mean'].mean():.1f}% of the training time per epoch on average "
            f"(worst epoch {100 * done['diag_fraction_max'].max():.1f}%)."
        )
    return lines


def seed_findings(sweep: SweepData, df: pd.DataFrame) -> list[str]:
    """The regimes over their seeds (nothing when every regime ran on one): the best by mean
    blob score with its spread and its 3-blob seeds, and whether it beats the runner-up."""
    regimes = ranked(points(sweep.trials, SCORE), "max")
    if not seeded(regimes):
        return []
    regime_of = {t.name: point_label(t.point) for t in sweep.trials}
    three = (df["blob/n_clusters"] == 3).groupby(df["run"].map(regime_of)).sum()
    shown = "; ".join(
        f"{r.label}: {r.mean:.3f} ± {r.std:.2g}, 3 blobs on {int(three.get(r.label, 0))} of {r.n} seeds"
        for r in regimes[:TOP]
    )
    lines = [f"Over seeds (blob score mean ± std), best first: {shown}."]
    if len(regimes) > 1:
        lines.append(verdict(regimes[0], regimes[1], SCORE))
    return lines


def _counts(series: pd.Series) -> str:
    if series.empty:
        return "none"
    counts = series.astype(int).value_counts().sort_index()
    return ", ".join(f"{n} with {k} blob{'s' if k != 1 else ''}" for k, n in counts.items())


def _markdown(df: pd.DataFrame) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.4g}"
        return "" if v is None else str(v)

    return markdown_table(list(df.columns), df.itertuples(index=False), cell)


def build(sweep: SweepData, out: Path) -> list[Path]:
    df = collect(sweep)
    title = f"{sweep.experiment} (sweep {sweep.sweep_id})"
    keys = sorted({leaf(k) for t in sweep.trials for k in t.point})
    files: list[Path] = []
    df.to_csv(out / "summary.csv", index=False)
    files.append(out / "summary.csv")
    if df.empty or df[SCORE].notna().sum() == 0:
        (out / "summary.md").write_text(f"# {title}\n\nNo trial reported results.\n")
        return files + [out / "summary.md"]
    for stem, fig in (
        ("best_regimes", best_regimes_figure(sweep, df, keys, title)),
        ("blob_panels", panel_figure(sweep, title)),
        ("search_landscape", landscape_figure(df, keys, title)),
    ):
        if fig is not None:
            files += save_figure(fig, out, stem)
    notes = seed_findings(sweep, df) + findings(df, keys)
    records = json.loads(df.to_json(orient="records"))
    (out / "summary.json").write_text(
        json.dumps({"sweep": sweep.sweep_id, "searched": keys, "findings": notes, "trials": records}, indent=1)
    )
    columns = ["run", *keys, *FINAL, "peak_score", "peak_epoch", "had_3_blobs_at", "epochs", "status"]
    md = [f"# {title}", "", *[f"- {line}" for line in notes], ""]
    if (out / "best_regimes.png").exists():
        md += ["![best regimes](best_regimes.png)", ""]
    md += ["## Trials, best first", "", _markdown(df[columns]), ""]
    (out / "summary.md").write_text("\n".join(md))
    return files + [out / "summary.json", out / "summary.md"]
