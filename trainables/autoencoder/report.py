"""Report of the particle-token autoencoder study (compare_globals_heads, compare_latent_spaces).

Every number is taken at each run's best epoch (lowest val/total_loss, the epoch whose model
is kept as model.pt), read back from MLflow. Files:
- summary.csv / summary.json: the best losses per run (also the minimum and the final value
  of each term, and the vq codebook use);
- heatmaps (PNG + PDF): rec_tokens, rec_globals and val_loss over the grid, globals_beta down
  and latent space across, each cell labelled with the seed's run number;
- loss_curves (PNG + PDF): val rec_tokens and rec_globals per epoch of every run;
- summary.md: the seed's patterns checked on these numbers and its decision matrix filled
  with the best run here for each priority.
Run numbers follow the seed: run = beta index x (latent spaces) + latent index, so run 0 is
none/beta 0, run 4 linear/beta 1 and run 8 vq/beta 10 in the 3 x 3 grid.

A sweep with seeds is read over them: each cell of the grid is the mean over its seeds (the
heatmaps show mean ± std), the patterns are checked on the means, and the decision matrix names
the cells that the seeds cannot tell from the best one (Welch's t-test, tune_jobs/core/spread.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm

from trainables.common.tables import markdown_table
from tune_jobs.core.spread import ALPHA, Point, welch_p
from tune_jobs.core.sweep_data import SweepData, save_figure

LATENTS = ["none", "linear", "vq"]
TERMS = {"rec_tokens": "val/rec_tokens", "rec_globals": "val/rec_globals", "val_loss": "val/loss"}
CLEAR = 0.25  # "<<" / ">>": the two differ by at least 25% of the larger value
FLAT = 0.10  # "no effect": the values across beta stay within 10% of the largest
USED_CODES = 0.25  # the vq runs should end with more than a quarter of the codebook in use

# The seed's decision matrix: priority -> (its pick as (latent, beta), how "best" is judged here).
DECISIONS = [
    ("Pure reconstruction", ("none", 0.0), "lowest rec_tokens"),
    ("Balanced tokens+globals", ("linear", 1.0), "lowest val_loss = rec_tokens + rec_globals"),
    ("Emphasize globals", ("linear", 10.0), "lowest rec_globals"),
    ("Interpretable (discrete)", ("vq", 1.0), "the vq run with the lowest val_loss"),
    ("Production baseline", ("linear", 1.0), "best worst-case rank over rec_tokens and rec_globals"),
]


def _value(t: Any, key: str) -> Any:
    if key in t.point:
        return t.point[key]
    return t.params.get(key)


def collect(sweep: SweepData) -> pd.DataFrame:
    rows = []
    for t in sweep.trials:
        latent, beta = str(_value(t, "model.latent_space")), float(_value(t, "model.globals_beta") or 0.0)
        row: dict[str, Any] = {"latent_space": latent, "globals_beta": beta, "status": t.status, "run_name": t.name}
        row["run_id"] = t.run_id
        total = sweep.history(t.run_id, "val/total_loss")
        if not total:
            rows.append(row)
            continue
        best_step = min(total, key=lambda sv: sv[1])[0]
        row["best_epoch"], row["epochs"] = best_step, total[-1][0]
        row["total_loss"] = dict(total)[best_step]
        for name, key in TERMS.items():
            hist = dict(sweep.history(t.run_id, key))
            row[name] = hist.get(best_step, math.nan)
            row[f"min_{name}"] = min(hist.values())
            row[f"final_{name}"] = hist[max(hist)]
        if "vq/code_usage" in t.metrics:
            row["code_usage"] = t.metrics["vq/code_usage"]
            row["perplexity"] = t.metrics["vq/perplexity"]
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    betas = sorted(df.globals_beta.unique())
    latents = [x for x in LATENTS if x in set(df.latent_space)] + sorted(set(df.latent_space) - set(LATENTS))
    df["run"] = [betas.index(b) * len(latents) + latents.index(x) for b, x in zip(df.globals_beta, df.latent_space)]
    df = df.sort_values("run").reset_index(drop=True)
    return df[["run", *[c for c in df.columns if c != "run"]]]


def seeded(df: pd.DataFrame) -> bool:
    """Whether some cell of the grid ran on two or more seeds."""
    return bool((df.groupby(["latent_space", "globals_beta"]).size() >= 2).any())


def over_seeds(df: pd.DataFrame) -> pd.DataFrame:
    """One row per cell (latent space, beta) from its seeds' rows: the mean of each number,
    `seeds`, and per loss term its standard deviation (`<term>_std`) and values (`<term>_values`)."""
    rows = []
    for _, group in df.groupby("run", sort=True):
        row: dict[str, Any] = {"seeds": len(group)}
        for col in group.columns:
            values = group[col]
            numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
            row[col] = values.mean() if numeric and col not in ("run", "globals_beta") else values.iloc[0]
        row["status"] = "FINISHED" if (group.status == "FINISHED").all() else "NOT FINISHED"
        row["run_name"] = ", ".join(group.run_name)
        for name in TERMS:
            row[f"{name}_std"] = group[name].std(ddof=1) if len(group) > 1 else math.nan
            row[f"{name}_values"] = list(group[name].dropna())
        rows.append(row)
    return pd.DataFrame(rows).reset_index(drop=True)


def _ties(best: Any, others: pd.DataFrame, col: str) -> str:
    """The other cells whose seeds cannot be told from the best one's on `col` (Welch's t-test)."""
    mine, tied = _seeds(best, col), []
    for r in others.itertuples():
        if r.run != best.run and (p := welch_p(mine, _seeds(r, col))) >= ALPHA:  # NaN (too few seeds): no tie
            tied.append(f"run {int(r.run)} (p = {p:.2g})")
    return ", ".join(tied) or "none"


def _seeds(row: Any, col: str) -> Point:
    values = row[f"{col}_values"] if isinstance(row, pd.Series) else getattr(row, f"{col}_values")
    return Point(str(row.run), (), tuple(values))


def _cell(df: pd.DataFrame, latent: str, beta: float, col: str) -> float:
    hit = df[(df.latent_space == latent) & (df.globals_beta == beta)]
    return float(hit[col].iloc[0]) if not hit.empty and col in hit else math.nan


def _label(row: Any) -> str:
    return f"run {int(row.run)} ({row.latent_space}, beta={row.globals_beta:g})"


def plot_heatmaps(df: pd.DataFrame, out: Path, title: str) -> list[Path]:
    latents = [x for x in LATENTS if x in set(df.latent_space)]
    betas = sorted(df.globals_beta.unique())
    fig, axes = plt.subplots(1, 3, figsize=(4.2 * 3, 1.2 + 1.1 * len(betas)), squeeze=False)
    for ax, name in zip(axes[0], TERMS):
        grid = np.array([[_cell(df, x, b, name) for x in latents] for b in betas])
        runs = np.array([[_cell(df, x, b, "run") for x in latents] for b in betas])
        finite = grid[np.isfinite(grid)]
        norm = (
            LogNorm(finite.min(), finite.max())
            if len(finite) and finite.min() > 0 and finite.max() / finite.min() > 20
            else None
        )
        im = ax.imshow(grid, cmap="viridis_r", norm=norm, aspect="auto")
        for i in range(len(betas)):
            for j in range(len(latents)):
                if np.isfinite(grid[i, j]):
                    spread = _cell(df, latents[j], betas[i], f"{name}_std")  # NaN without seeds
                    value = f"{grid[i, j]:.3g}" + (f" ± {spread:.2g}" if np.isfinite(spread) else "")
                    ax.text(
                        j,
                        i,
                        f"{value}\nrun {int(runs[i, j])}",
                        ha="center",
                        va="center",
                        fontsize=7 if "seeds" in df else 8,
                        color="white",
                        path_effects=_outline(),
                    )
                else:
                    ax.text(j, i, "no result", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(latents)), latents)
        ax.set_yticks(range(len(betas)), [f"β={b:g}" for b in betas])
        ax.set_xlabel("latent space")
        ax.set_title(f"{name} (val, best epoch)" + (", log colour" if norm else ""), fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="MSE, z-scored (lower is better)")
    fig.suptitle(title + (": each cell the mean ± std over its seeds" if "seeds" in df else ""))
    fig.tight_layout()
    return save_figure(fig, out, "heatmaps")


def _outline() -> list[Any]:
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=2, foreground="black")]


def plot_curves(df: pd.DataFrame, sweep: SweepData, out: Path, title: str) -> list[Path]:
    has_vq = "code_usage" in df and df.code_usage.notna().any()
    fig, axes = plt.subplots(1, 3 if has_vq else 2, figsize=(15 if has_vq else 10.5, 4))
    colours = {"none": "tab:blue", "linear": "tab:orange", "vq": "tab:green"}
    betas = sorted(df.globals_beta.unique())
    styles = dict(zip(betas, ["-", "--", ":", "-."] * 4))
    for row in df.itertuples():
        colour, style = colours.get(row.latent_space, "grey"), styles[row.globals_beta]
        label = f"{row.latent_space}, β={row.globals_beta:g}"
        for ax, key in zip(axes, ("val/rec_tokens", "val/rec_globals")):
            hist = sweep.history(row.run_id, key)
            ax.plot([s for s, _ in hist], [v for _, v in hist], style, color=colour, label=label)
        if has_vq and row.latent_space == "vq":
            hist = sweep.history(row.run_id, "vq/code_usage")
            axes[2].plot([s for s, _ in hist], [v for _, v in hist], style, color=colour, label=label)
    for ax, name in zip(axes, ("val rec_tokens", "val rec_globals (unweighted)")):
        ax.set_yscale("log")
        ax.set_ylabel(f"{name}, MSE z-scored")
    if has_vq:
        axes[2].axhline(USED_CODES, color="grey", ls=":", label=f"{USED_CODES:.0%} of the codes")
        axes[2].set_ylim(0, 1.05)
        axes[2].set_ylabel("fraction of codes used (val)")
    from matplotlib.ticker import MaxNLocator

    for ax, name in zip(axes, ("token reconstruction", "globals (MET, METphi)", "vq codebook use")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(f"{title}: validation per epoch (colour: latent space, line style: β)")
    fig.tight_layout()
    return save_figure(fig, out, "loss_curves")


def _ratio_word(a: float, b: float) -> str:
    """How a compares with b: '<<', '>>' or '~'."""
    if not (math.isfinite(a) and math.isfinite(b)):
        return "?"
    if abs(a - b) < CLEAR * max(abs(a), abs(b)):
        return "~"
    return "<<" if a < b else ">>"


def patterns(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The seed's patterns and expected outcomes, each checked on the numbers."""
    out: list[dict[str, Any]] = []
    latents = [x for x in LATENTS if x in set(df.latent_space)]
    betas = sorted(df.globals_beta.unique())

    details: list[dict[str, Any]] = []  # per latent space, listed after the seed's patterns

    def add(name: str, holds: bool | None, text: str, into: list | None = None) -> None:
        (out if into is None else into).append({"pattern": name, "holds": holds, "text": text})

    if len(betas) > 1:
        lo, hi = betas[0], betas[-1]
        chains, falls, flat, trade = [], [], [], []
        for x in latents:
            g = [_cell(df, x, b, "rec_globals") for b in betas]
            t = [_cell(df, x, b, "rec_tokens") for b in betas]
            chain = " vs ".join(f"β={b:g}: {v:.3g}" for b, v in zip(betas, g))
            chains.append(f"{x}: {chain}")
            falls.append(g[-1] < g[0])
            flat.append(max(g) - min(g) < FLAT * max(g))
            trade.append(_ratio_word(t[0], t[-1]) == "<<" and _ratio_word(g[0], g[-1]) == ">>")
            strictly = all(a > b for a, b in zip(g, g[1:]))
            add(
                f"rec_globals falls as beta rises ({x})",
                strictly,
                f"{x}: rec_globals {chain} "
                + ("falls at every step of beta" if strictly else "does not fall at every step of beta")
                + f"; beta {hi:g} vs {lo:g}: {'lower' if g[-1] < g[0] else 'NOT lower'} ({g[-1]:.3g} vs {g[0]:.3g})",
                details,
            )
            add(
                f"token/globals trade-off ({x})",
                trade[-1],
                f"{x}: rec_tokens β={lo:g} {t[0]:.3g} {_ratio_word(t[0], t[-1])} β={hi:g} {t[-1]:.3g}, "
                f"rec_globals β={lo:g} {g[0]:.3g} {_ratio_word(g[0], g[-1])} β={hi:g} {g[-1]:.3g}"
                + (" -> a trade-off: the latent is too small to hold both" if trade[-1] else " -> no clear trade-off"),
                details,
            )
        add(
            "Pattern 2 (expected): beta significantly affects globals",
            all(falls),
            f"rec_globals at beta {hi:g} below beta {lo:g} for {sum(falls)} of {len(latents)} latent spaces",
        )
        best_tok = {x: betas[int(np.nanargmin([_cell(df, x, b, "rec_tokens") for b in betas]))] for x in latents}
        best_glob = {x: betas[int(np.nanargmin([_cell(df, x, b, "rec_globals") for b in betas]))] for x in latents}
        add(
            f"Expected outcomes: rec_tokens best at beta {lo:g}, rec_globals best at beta {hi:g}",
            all(best_tok[x] == lo and best_glob[x] == hi for x in latents),
            "best beta per latent space: "
            + "; ".join(f"{x}: rec_tokens at β={best_tok[x]:g}, rec_globals at β={best_glob[x]:g}" for x in latents),
        )
        add(
            "Pattern 1: beta has no effect",
            all(flat),
            "rec_globals changes by less than 10% across beta for "
            + (", ".join(x for x, f in zip(latents, flat) if f) or "no latent space"),
        )
        add(
            "Pattern 3: token/globals trade-off",
            any(trade),
            f"rec_tokens rises and rec_globals falls (each by >= {CLEAR:.0%}) from beta "
            f"{lo:g} to {hi:g} for " + (", ".join(x for x, f in zip(latents, trade) if f) or "no latent space"),
        )
    if "vq" in latents and len(latents) > 1:
        worse = []
        others = [x for x in latents if x != "vq"]
        for b in betas:
            # at beta 0 the globals head is untrained: only rec_tokens says anything there
            terms = ["rec_tokens"] if b == 0 else list(TERMS)
            worse.append(all(_cell(df, "vq", b, n) > max(_cell(df, x, b, n) for x in others) for n in terms))
        add(
            "Pattern 4: vq underperforms",
            all(worse),
            "vq is worse than every other latent space on rec_tokens, rec_globals and val_loss "
            + ("(at beta 0 on rec_tokens alone: the globals head is untrained there) " if 0 in betas else "")
            + "at "
            + (", ".join(f"β={b:g}" for b, w in zip(betas, worse) if w) or "no beta")
            + f" (of {', '.join(f'β={b:g}' for b in betas)})",
        )
    vq = (
        df[(df.latent_space == "vq") & df.get("code_usage", pd.Series(dtype=float)).notna()]
        if "code_usage" in df
        else df.iloc[0:0]
    )
    if not vq.empty:
        used = [f"β={r.globals_beta:g}: {r.code_usage:.0%} (perplexity {r.perplexity:.1f})" for r in vq.itertuples()]
        add(
            "vq codebook in use",
            bool((vq.code_usage > USED_CODES).all()),
            f"fraction of codes used on val at the last epoch: {'; '.join(used)} (want > {USED_CODES:.0%})",
        )
    return out + details


def decision_matrix(df: pd.DataFrame) -> list[dict[str, Any]]:
    done = df[df.val_loss.notna()] if "val_loss" in df else df.iloc[0:0]
    if done.empty:
        return []
    ranks = done.rec_tokens.rank().combine(done.rec_globals.rank(), max)
    picks = {
        "Pure reconstruction": done.loc[done.rec_tokens.idxmin()],
        "Balanced tokens+globals": done.loc[done.val_loss.idxmin()],
        "Emphasize globals": done.loc[done.rec_globals.idxmin()],
        "Production baseline": done.loc[(ranks + done.val_loss.rank() / (len(done) + 1)).idxmin()],
    }
    vq = done[done.latent_space == "vq"]
    if not vq.empty:
        picks["Interpretable (discrete)"] = vq.loc[vq.val_loss.idxmin()]
    value_of = {
        "Pure reconstruction": "rec_tokens",
        "Balanced tokens+globals": "val_loss",
        "Emphasize globals": "rec_globals",
        "Interpretable (discrete)": "val_loss",
        "Production baseline": "val_loss",
    }
    rows = []
    for priority, (seed_latent, seed_beta), criterion in DECISIONS:
        seed_row = done[(done.latent_space == seed_latent) & (done.globals_beta == seed_beta)]
        seed_pick = (
            _label(seed_row.iloc[0]) if not seed_row.empty else f"{seed_latent} + β={seed_beta:g} (not in this grid)"
        )
        best = picks.get(priority)
        col = value_of[priority]
        ties = {}
        if best is not None and f"{col}_values" in done:
            pool = vq if priority == "Interpretable (discrete)" else done
            ties = {"ties_within_noise": _ties(best, pool, col)}
        rows.append(
            {
                **ties,
                "priority": priority,
                "criterion": criterion,
                "seed_pick": seed_pick,
                "best_here": _label(best) if best is not None else "no run",
                "value": float(best[col]) if best is not None else math.nan,
                "within_25pct": ", ".join(
                    f"run {int(r.run)}"
                    for r in (vq if priority == "Interpretable (discrete)" else done).itertuples()
                    if best is not None
                    and r.run != best.run
                    and _ratio_word(float(getattr(r, col)), float(best[col])) == "~"
                )
                or "none",
                "rec_tokens": float(best.rec_tokens) if best is not None else math.nan,
                "rec_globals": float(best.rec_globals) if best is not None else math.nan,
                "agrees_with_seed": (
                    bool(best is not None and best.latent_space == seed_latent and best.globals_beta == seed_beta)
                    if not seed_row.empty
                    else "n/a"
                ),
            }
        )
    return rows


def _markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.4g}"
        if isinstance(v, bool):
            return "yes" if v else "no"
        return "" if v is None else str(v)

    return markdown_table(columns, ([r.get(c) for c in columns] for r in rows), cell)


def build(sweep: SweepData, out: Path) -> list[Path]:
    df = collect(sweep)
    title = f"{sweep.experiment} (sweep {sweep.sweep_id})"
    files: list[Path] = [out / "summary.csv"]
    df.to_csv(out / "summary.csv", index=False)
    done = df[df.val_loss.notna()] if "val_loss" in df else df.iloc[0:0]
    if done.empty:
        (out / "summary.md").write_text(f"# {title}\n\nNo trial reported results.\n")
        return files + [out / "summary.md"]
    files += plot_curves(done, sweep, out, title)  # every run, each seed its own curve
    if seeded(done):
        done = over_seeds(done)  # one row per cell: its mean over the seeds
    files += plot_heatmaps(done, out, title)
    checks = patterns(done)
    matrix = decision_matrix(done)
    records = json.loads(df.to_json(orient="records"))
    (out / "summary.json").write_text(
        json.dumps(
            {"sweep": sweep.sweep_id, "patterns": checks, "decision_matrix": matrix, "trials": records}, indent=1
        )
    )
    verdict = {True: "holds", False: "does not hold", None: "n/a"}
    table_cols = [
        "run",
        "latent_space",
        "globals_beta",
        "best_epoch",
        "rec_tokens",
        "rec_globals",
        "val_loss",
        "total_loss",
    ]
    if "code_usage" in df:
        table_cols += ["code_usage", "perplexity"]
    matrix_cols = ["priority", "criterion", "seed_pick", "best_here", "value", "within_25pct", "agrees_with_seed"]
    noise = []
    if "seeds" in done:
        table_cols[3:3] = ["seeds"]
        table_cols += [f"{name}_std" for name in TERMS]
        matrix_cols.insert(6, "ties_within_noise")
        noise = [
            "Every number is the mean over the seeds of its cell; ties_within_noise: cells whose seeds "
            "cannot be told from the best one's (Welch's t-test, p >= 0.05): that choice rests on noise.",
            "",
        ]
    md = [
        f"# {title}",
        "",
        "Losses are validation MSEs in z-scored units at each run's best epoch (lowest val/total_loss, "
        "the model kept as model.pt); val_loss = rec_tokens + rec_globals, unweighted. At beta 0 the "
        "globals head gets no gradient, so its rec_globals is what an untrained head scores (about 1, "
        "the variance of the z-scored globals): the reference for what beta buys.",
        "",
        "## The seed's patterns, checked",
        "",
        *[f"- **{c['pattern']}**: {verdict[c['holds']]}. {c['text']}" for c in checks],
        "",
        "## Decision matrix (the seed's, filled with this sweep's runs)",
        "",
        _markdown(matrix, matrix_cols),
        "",
        "within_25pct: other runs whose value is within 25% of the best one's: no clear winner among them.",
        "",
        *noise,
        "## Runs",
        "",
        _markdown(json.loads(done[table_cols].to_json(orient="records")), table_cols),
        "",
        "Figures: heatmaps.png (the grid), loss_curves.png (per epoch).",
        "",
    ]
    failed = df[df.status != "FINISHED"]
    if not failed.empty:
        md.append(f"Runs not finished: {', '.join(failed.run_name)}")
    (out / "summary.md").write_text("\n".join(md))
    return files + [out / "summary.json", out / "summary.md"]
