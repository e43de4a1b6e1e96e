"""Report of the Phase 1a + LoRA sweep (study D): does LoRA with minimal supervision improve
F1 over pure reconstruction, and by how much?

Built from MLflow alone: one row per configuration (its best validation F1 over the epochs it
ran, with EM, first-token accuracy, the collapse diagnostics and the text baseline), the best
LoRA configuration, its gain over the no-LoRA baseline in F1 points classified by the seed's
bands (<2, 2-5, 5-10, >10), and an F1/EM bar chart. A sweep with seeds is read over them: each
configuration's mean F1/EM with their spread, and whether the best gain is beyond the seeds'
noise (Welch's t-test). Files: sweep_summary.txt (the seed's), summary.md, summary.csv,
summary.json, f1_by_config.png/.pdf.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from trainables.common.tables import markdown_table
from tune_jobs.core.spread import ALPHA, Point, welch_p
from tune_jobs.core.sweep_data import SMOKE_NOTE, SweepData, save_figure

BANDS = (  # (upper bound in F1 points, verdict, the seed's next step)
    (
        2.0,
        "no meaningful gain (< 2 F1 points)",
        "the Phase 1a limit is not about LLM adaptation; focus on post-processing (Phase 0) and VQ-VAE (Phase 1)",
    ),
    (
        5.0,
        "marginal improvement (2-5 F1 points)",
        "document as a minor optimisation; continue with VQ-VAE (Phase 1) as planned",
    ),
    (
        10.0,
        "significant improvement (5-10 F1 points)",
        "add the best LoRA config to the Phase 0 pipeline and use it as the new baseline",
    ),
    (
        float("inf"),
        "strong improvement (> 10 F1 points)",
        "add the best LoRA config to the Phase 0 pipeline and use it as the new baseline",
    ),
)


def band(gain_points: float) -> tuple[str, str]:
    """The seed's band of a gain in F1 points (a loss counts as no gain)."""
    for upper, verdict, step in BANDS:
        if gain_points < upper:
            return verdict, step
    raise AssertionError("unreachable")


def config_name(params: dict[str, str]) -> str:
    if params.get("lora.enabled") == "False":
        return "baseline (no LoRA)"
    of = params.get("lora.of_layers", "32")
    layers = params["lora.layers"]
    layers = "all" if layers == of else layers
    return f"r={params['lora.r']} a={float(params['lora.alpha']):g} L={layers}"


def _best_of(sweep: SweepData, run_id: str, key: str) -> tuple[float, int]:
    hist = sweep.history(run_id, key)
    if not hist:
        return float("nan"), 0
    step, value = max(hist, key=lambda sv: sv[1])
    return value, len(hist)


def collect(sweep: SweepData) -> pd.DataFrame:
    rows = []
    for t in sweep.trials:
        m, p = t.metrics, t.params
        f1, evals = _best_of(sweep, t.run_id, "val/f1")
        em_hist = dict(sweep.history(t.run_id, "val/em"))
        f1_hist = sweep.history(t.run_id, "val/f1")
        best_step = max(f1_hist, key=lambda sv: sv[1])[0] if f1_hist else None
        rows.append(
            {
                "config": config_name(p),
                "lora": p.get("lora.enabled") == "True",
                "r": int(p["lora.r"]) if p.get("lora.enabled") == "True" else None,
                "alpha": float(p["lora.alpha"]) if p.get("lora.enabled") == "True" else None,
                "layers": p["lora.layers"] if p.get("lora.enabled") == "True" else None,
                "lora_layers_used": m.get("lora/layers", float("nan")),
                "f1": f1,
                "em": em_hist.get(best_step, float("nan")) if best_step is not None else float("nan"),
                "final_f1": m.get("val/f1", float("nan")),
                "first_token_acc": m.get("val/first_token_acc", float("nan")),
                "diversity": m.get("val/diversity", float("nan")),
                "repetition": m.get("val/repetition", float("nan")),
                "collapsed": bool(m.get("val/collapsed", 0.0)),
                "recon_cosine": m.get("val/recon_cosine", float("nan")),
                "text_f1": m.get("baseline/text_f1", float("nan")),
                "trainable_params": m.get("lora/trainable_params", float("nan")),
                "epochs": evals,
                "status": t.status,
                "run": t.name,
                "seed": p.get("seed", ""),
            }
        )
    df = pd.DataFrame(rows)
    if not df.empty:
        df = df.sort_values("f1", ascending=False, na_position="last").reset_index(drop=True)
    return df


def over_seeds(df: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration from its seeds' rows: the mean of each number, `seeds`,
    `f1_std` and `em_std` (their spread) and `f1_values` (for the test between two configs); a
    configuration is collapsed when any seed collapsed. Best mean F1 first."""
    rows = []
    for config, group in df.groupby("config", sort=False):
        row: dict[str, Any] = {"config": config, "seeds": len(group), "f1_values": list(group["f1"].dropna())}
        for col in group.columns:
            if col in ("config", "seed", "run"):
                continue
            values = group[col]
            numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
            row[col] = values.mean() if numeric else values.iloc[0]
        row["collapsed"] = bool(group["collapsed"].any())
        row["f1_std"] = group["f1"].std(ddof=1) if len(group) > 1 else float("nan")
        row["em_std"] = group["em"].std(ddof=1) if len(group) > 1 else float("nan")
        row["status"] = "FINISHED" if (group["status"] == "FINISHED").all() else "NOT FINISHED"
        rows.append(row)
    return pd.DataFrame(rows).sort_values("f1", ascending=False, na_position="last").reset_index(drop=True)


def seeded(df: pd.DataFrame) -> bool:
    """Whether some configuration ran on two or more seeds."""
    return bool((df.groupby("config")["seed"].nunique() >= 2).any()) if "seed" in df else False


def seed_line(b: pd.Series, best: pd.Series) -> str:
    """Whether the best LoRA beats the baseline beyond the seeds' noise, in one sentence."""
    a, z = Point(best["config"], (), tuple(best["f1_values"])), Point(b["config"], (), tuple(b["f1_values"]))
    spread = (
        f"F1 over seeds (mean ± std): best LoRA {100 * best['f1']:.1f} ± {100 * best['f1_std']:.1f}% "
        f"({a.n} seeds), baseline {100 * b['f1']:.1f} ± {100 * b['f1_std']:.1f}% ({z.n} seeds)"
    )
    p = welch_p(a, z)
    if p != p:  # NaN
        return f"{spread}; too few seeds (2 each) to test the gain."
    if p < ALPHA:
        return f"{spread}; the gain is beyond the seeds' noise (Welch's t-test, p = {p:.2g})."
    return (
        f"{spread}; these seeds cannot tell the gain from noise (Welch's t-test, p = {p:.2g}): more seeds, or no gain."
    )


# Below this F1 the base model cannot answer the questions reading the text itself: its
# compressed-context numbers, LoRA or not, then measure nothing the study asks about.
CAN_DO_THE_TASK_F1 = 0.05


def findings(df: pd.DataFrame, smoke: bool = False) -> dict[str, Any]:
    """The seed's question answered on the numbers: baseline, best LoRA, gain, band. From a
    smoke run, or when the base model cannot do the task reading the text, the report says so
    first and gives the numbers without a verdict."""
    base = df[~df["lora"]]
    lora = df[df["lora"] & df["f1"].notna()]
    out: dict[str, Any] = {"lines": []}
    lines = out["lines"]
    if base.empty or base["f1"].isna().all():
        lines.append("The no-LoRA baseline reported no F1; no gain can be computed.")
    if lora.empty:
        lines.append("No LoRA configuration reported F1.")
    if lines:
        return out
    b, best = base.iloc[0], lora.iloc[0]
    gain = 100 * (best["f1"] - b["f1"])
    verdict, step = band(gain)
    out.update(baseline_f1=b["f1"], best_config=best["config"], best_f1=best["f1"], gain_points=gain, band=verdict)
    text = b["text_f1"]
    caveat = None
    if smoke:
        caveat = SMOKE_NOTE
    elif not text >= CAN_DO_THE_TASK_F1:  # NaN too: never measured
        caveat = (
            f"The base model scores F1 {100 * text:.1f}% reading the text itself: it cannot do the task, "
            "so no gain over its compressed baseline means anything here; no conclusion is drawn."
        )
    if caveat is not None:
        out.update(baseline_f1=b["f1"], best_config=best["config"], best_f1=best["f1"], gain_points=gain, band=None)
        lines += [
            caveat,
            f"Numbers only: baseline F1 {100 * b['f1']:.1f}%; best LoRA {best['config']} F1 {100 * best['f1']:.1f}% "
            f"({gain:+.1f} points).",
        ]
        return out
    if "f1_values" in df:
        lines.append(seed_line(b, best))
    lines += [
        f"Baseline (no LoRA, pure reconstruction + first-token CE): F1 {100 * b['f1']:.1f}%, EM {100 * b['em']:.1f}%"
        f" (the same LLM reading the text itself: F1 {100 * text:.1f}%).",
        f"Best LoRA: {best['config']} with F1 {100 * best['f1']:.1f}% (EM {100 * best['em']:.1f}%), "
        f"a gain of {gain:+.1f} F1 points: {verdict}.",
        f"Next step (the seed's plan): {step}.",
    ]
    flagged = df[df["collapsed"]]
    if len(flagged):
        lines.append(f"Collapse flag (diversity < 0.1 or repetition > 0.5) on: {', '.join(flagged['config'])}.")
    else:
        lines.append(
            "No configuration collapsed (no 'the the the': diversity >= 0.1 and repetition <= 0.5 everywhere)."
        )
    stopped = df[df["epochs"] < df["epochs"].max()]
    if len(stopped):
        lines.append(
            f"ASHA stopped {len(stopped)} of {len(df)} configurations early ({', '.join(stopped['config'])}); "
            "their F1 is the best of the epochs they ran."
        )
    return out


def bar_figure(df: pd.DataFrame, title: str, baseline_f1: float | None) -> Any:
    """F1 and EM per config: the baseline first, then the LoRA configs best first; lines at the
    baseline and at the seed's +2/+5/+10 point bands; collapsed configs hatched in red."""
    from matplotlib.patches import Patch

    df = pd.concat([df[~df["lora"]], df[df["lora"]]]).reset_index(drop=True)
    full = df["epochs"].max()
    fig, ax = plt.subplots(figsize=(10, 4.8))
    for i, r in df.iterrows():
        colour = "tab:gray" if not r["lora"] else "tab:blue"
        alpha = 1.0 if r["epochs"] == full else 0.5
        hatch, edge = ("///", "tab:red") if r["collapsed"] else (None, colour)
        f1, em = 100 * r["f1"], 100 * r["em"]
        spread = 100 * r["f1_std"] if "f1_std" in r and r["f1_std"] == r["f1_std"] else None  # over seeds
        ax.bar(i - 0.2, f1, width=0.4, color=colour, alpha=alpha, hatch=hatch, edgecolor=edge, yerr=spread, capsize=2)
        ax.bar(i + 0.2, em, width=0.4, color=colour, alpha=0.35 * alpha, hatch=hatch, edgecolor=edge)
        ax.text(i - 0.2, f1 + 0.8, f"{f1:.1f}", ha="center", va="bottom", fontsize=7)
    top = max(5.0, float(100 * df[["f1", "em", "text_f1"]].max().max()))
    if baseline_f1 is not None:
        b = 100 * baseline_f1
        ax.axhline(b, color="tab:gray", ls="--", lw=1)
        for step in (2, 5, 10):
            ax.axhline(b + step, color="tab:green", ls=":", lw=0.8)
            ax.text(len(df) - 0.45, b + step, f"+{step}", color="tab:green", fontsize=7, va="center")
        top = max(top, b + 10)
    text = df["text_f1"].dropna()
    if len(text):
        ax.axhline(100 * text.iloc[0], color="black", ls="-.", lw=1)
    handles = [
        Patch(color="tab:gray", label="no-LoRA baseline (F1, EM light)"),
        Patch(color="tab:blue", label="LoRA (F1, EM light)"),
        Patch(facecolor="white", edgecolor="tab:red", hatch="///", label="collapsed"),
        plt.Line2D([], [], color="tab:gray", ls="--", label="baseline F1"),
        plt.Line2D([], [], color="tab:green", ls=":", label="seed's bands: +2 / +5 / +10 points"),
        plt.Line2D([], [], color="black", ls="-.", label="LLM reading the text itself"),
    ]
    if (df["epochs"] < full).any():
        handles.append(Patch(color="tab:blue", alpha=0.5, label="stopped early by ASHA"))
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_xticks(range(len(df)), df["config"], rotation=35, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(df) - 0.1)
    ax.set_ylabel("validation score (%)")
    ax.set_ylim(0, min(105.0, top * 1.15 + 2))
    ax.set_title(f"{title}: best validation F1 / EM per configuration", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return fig


def _markdown(df: pd.DataFrame) -> str:
    spread = ["seeds", "f1_std"] if "f1_std" in df else []
    cols = [
        "config",
        *spread[:1],
        "f1",
        *spread[1:],
        "em",
        "first_token_acc",
        "diversity",
        "repetition",
        "collapsed",
        "recon_cosine",
        "epochs",
        "status",
    ]

    def cell(c: str, v: Any) -> str:
        if c in ("f1", "f1_std", "em", "first_token_acc"):
            return f"{100 * v:.1f}%" if v == v else "n/a"
        if isinstance(v, float):
            return f"{v:.3f}" if v == v else "n/a"
        return str(v)

    rows = ([cell(c, r[c]) for c in cols] for _, r in df[cols].iterrows())
    return markdown_table(cols, rows)


def build(sweep: SweepData, out: Path) -> list[Path]:
    df = collect(sweep)
    title = f"{sweep.experiment} (sweep {sweep.sweep_id})"
    files = [out / "summary.csv"]
    df.to_csv(files[0], index=False)
    if df.empty or df["f1"].isna().all():
        (out / "summary.md").write_text(f"# {title}\n\nNo trial reported results.\n")
        (out / "sweep_summary.txt").write_text(f"{title}\nNo trial reported results.\n")
        return files + [out / "summary.md", out / "sweep_summary.txt"]
    if seeded(df):
        df = over_seeds(df)  # one row per configuration: its mean over the seeds
    found = findings(df, smoke=sweep.smoke)
    files += save_figure(bar_figure(df, title, found.get("baseline_f1")), out, "f1_by_config")
    table = _markdown(df)
    md = [f"# {title}", "", *[f"- {line}" for line in found["lines"]], "", "![F1 by config](f1_by_config.png)", ""]
    per = "mean over seeds of each configuration's best epoch" if "f1_std" in df else "best epoch"
    md += [f"## F1 / EM per configuration ({per}), best first", "", table, ""]
    (out / "summary.md").write_text("\n".join(md))
    txt = [f"Phase 1a + LoRA sweep {sweep.sweep_id} ({sweep.experiment})", ""]
    txt += [
        f"{r['config']:<22} F1 {100 * r['f1']:5.1f}%  EM {100 * r['em']:5.1f}%  epochs {r['epochs']}"
        + ("  COLLAPSED" if r["collapsed"] else "")
        for _, r in df.iterrows()
    ]
    txt += ["", *found["lines"], ""]
    (out / "sweep_summary.txt").write_text("\n".join(txt))
    summary = {k: v for k, v in found.items() if k != "lines"} | {"findings": found["lines"], "sweep": sweep.sweep_id}
    summary["trials"] = json.loads(df.to_json(orient="records"))
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return files + [out / "summary.md", out / "sweep_summary.txt", out / "summary.json"]
