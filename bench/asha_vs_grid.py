"""Early stopping against the full grid on the same small space of the denoising study, on 2
slots, side by side: the grid (FIFO), Ray Tune's stop-only ASHA, ASHA with promotion (the
service's `scheduler: {kind: asha}`), the same with its rungs ranked by the validation loss
(`rank_by: val/loss, rank_mode: min`) and Ray Tune's HyperBand.

    python bench/asha_vs_grid.py              # 12 points, local profile, 9 epochs each (~25 min, 2 cores)
    python bench/asha_vs_grid.py --quick      # the quick profile: checks the bench itself (~6 min)
    python bench/asha_vs_grid.py --grace-period 2 --max-t 20   # other rungs and budget (denoising_search.yaml's; ~25 min)
    python bench/asha_vs_grid.py --only asha_promote           # the grid and one scheduler

Runs the same grid five times through the service, one trial per CPU (2 slots on a 2-core
machine), then reads each sweep back from MLflow and prints: the trial-epochs each spent, its
fraction of the grid's, the best blob score each found and its gap to the grid's best.
Then, from the grid's complete curves alone: where the grid's best point ranked at each epoch
(by the blob score and by other metrics a rung could rank by), and successive halving replayed
on those curves for every grace period and eta, with the cheapest schedule that would have come
within 2% of the grid's best, or that none would.
The rungs default to the local profile's 9 epochs: max_t 9, grace period 1, reduction factor 3
(rungs at epochs 1 and 3).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from tune_jobs.core.cli import OneLineParser
from tune_jobs.core.errors import ConfigError, one_line

ROOT = Path(__file__).resolve().parents[1]
SPACE = {
    "trainer.lr": [0.005, 0.02, 0.05],
    "model.encoder_init_scale": [0.03, 0.3],
    "loss.decoder_reg": [0.01, 0.1],
}
SCORE = "blob/score"
PROXIES = {SCORE: "max", "val/loss": "min", "blob/correlation": "max"}  # what a rung may rank by


def schedulers(args: argparse.Namespace) -> dict[str, dict]:
    asha = {"max_t": args.max_t, "grace_period": args.grace_period, "reduction_factor": args.reduction_factor}
    return {
        "grid": {"kind": "fifo"},
        "asha_stop": {"kind": "asha", "promote": False, **asha},
        "asha_promote": {"kind": "asha", **asha},
        # Promotion whose rungs rank by the validation loss, which separates the points earlier
        # than the blob score (the rung analysis below shows where each metric ranks the best).
        "asha_rank": {"kind": "asha", "rank_by": "val/loss", "rank_mode": "min", **asha},
        "hyperband": {"kind": "hyperband", "max_t": args.max_t, "reduction_factor": args.reduction_factor},
    }


LABELS = {
    "grid": "full grid",
    "asha_stop": "ASHA, stop-only",
    "asha_promote": "ASHA, promotion",
    "asha_rank": "promotion by loss",
    "hyperband": "HyperBand",
}


def write_experiment(work: Path, name: str, scheduler: dict) -> Path:
    path = work / f"bench_{name}.yaml"
    spec = {
        "study": "denoising",
        "metric": SCORE,
        "mode": "max",
        "search": "grid",
        "scheduler": scheduler,
        "resources": {"cpu": 1, "gpu": 0},
        "space": {k: {"grid": v} for k, v in SPACE.items()},
    }
    path.write_text(f"# python tune_jobs/denoising.py --experiment {path}\n" + yaml.safe_dump(spec, sort_keys=False))
    return path


def run(work: Path, path: Path, extra: list[str]) -> float:
    cmd = [
        sys.executable,
        str(ROOT / "tune_jobs" / "denoising.py"),
        "--experiment",
        str(path),
        "--results-dir",
        str(work / "results"),
        "--mlflow-uri",
        f"sqlite:///{work / 'mlflow.db'}",
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{path.stem} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return time.perf_counter() - start


def read(work: Path, experiment: str) -> dict:
    from mlflow import MlflowClient

    from tune_jobs.core.plan import trial_label
    from tune_jobs.core.reporting import SweepData, find_parent

    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    sweep = SweepData(client, find_parent(client, experiment))
    epochs, finals, curves = {}, {}, {}
    for t in sweep.trials:
        hist = sweep.history(t.run_id, SCORE)
        label = trial_label(t.point)
        epochs[label] = len(hist)
        finals[label] = hist[-1][1] if hist else float("nan")
        curves[label] = {key: [v for _, v in sweep.history(t.run_id, key)] for key in PROXIES}
    best = max(finals, key=lambda k: finals[k])
    return {"epochs": epochs, "finals": finals, "best": best, "best_score": finals[best], "curves": curves}


def halving(
    curves: dict[str, dict[str, list[float]]], grace: int, eta: int, max_t: int, rank_by: str
) -> tuple[int, float]:
    """Successive halving replayed on the grid's complete curves, as promotion ASHA decides when
    every point reaches a rung before any leaves it: at each rung (grace * eta^k below max_t),
    the best 1/eta by `rank_by` go on; the rest stop there. Returns the epochs it spends and the
    best blob score any point had where it stopped."""
    rungs = [grace * eta**k for k in range(32) if grace * eta**k < max_t] + [max_t]
    alive, spent, at, reached = list(curves), 0, 0, {}
    sign = 1 if PROXIES[rank_by] == "max" else -1
    for i, rung in enumerate(rungs):
        spent += (rung - at) * len(alive)
        at = rung
        for p in alive:
            reached[p] = curves[p][SCORE][rung - 1]
        if i + 1 < len(rungs):
            alive = sorted(alive, key=lambda p: -sign * curves[p][rank_by][rung - 1])[: max(1, len(alive) // eta)]
    return spent, max(reached.values())


def rung_analysis(grid: dict, max_t: int) -> None:
    """What any promotion schedule could have done on this grid, from its complete curves."""
    curves = {p: c for p, c in grid["curves"].items() if all(len(v) >= max_t for v in c.values())}
    if len(curves) < len(grid["curves"]):
        print("\n(rung analysis skipped: some grid curves are incomplete)")
        return
    full, best = len(curves) * max_t, grid["best_score"]
    order = {}
    for key, mode in PROXIES.items():
        sign = 1 if mode == "max" else -1
        order[key] = [
            1 + sorted(curves, key=lambda p: -sign * curves[p][key][e]).index(grid["best"]) for e in range(max_t)
        ]
    print(f"\nwhere the grid's best point ranked among the {len(curves)} at each epoch (1 = first):")
    for key, ranks in order.items():
        print(f"  by {key:18}" + " ".join(f"{r:3d}" for r in ranks))
    print("\nsuccessive halving replayed on the grid's curves (the best 1/eta at each rung go on):")
    print(f"  {'rank by':18}{'grace':>6}{'eta':>5}{'epochs':>8}{'share':>7}{'best':>8}{'gap':>8}")
    found = {}
    for key in PROXIES:
        for eta in (2, 3, 4):
            for grace in range(1, max_t):
                spent, got = halving(curves, grace, eta, max_t, key)
                gap = (best - got) / best
                if gap <= 0.02 and spent < found.get(key, (full + 1,))[0]:
                    found[key] = (spent, grace, eta, got, gap)
                if grace == 1 and eta == 3 or spent <= full / 3:
                    print(f"  {key:18}{grace:6d}{eta:5d}{spent:8d}{spent / full:7.0%}{got:8.4f}{gap:+8.1%}")
    for key in PROXIES:
        if key in found:
            spent, grace, eta, got, gap = found[key]
            print(
                f"  cheapest within 2% ranking by {key}: grace {grace}, eta {eta}: {spent} epochs ({spent / full:.0%})"
            )
        else:
            print(f"  ranking by {key}: no schedule gets within 2% of the grid's best")


def check(args: argparse.Namespace, overrides: list[str]) -> None:
    """Every setting of every sweep the bench will run, checked as the service checks a sweep
    (its experiment file, the overrides, its trials) before the first one starts: a mistake is
    one ConfigError line, not a failure after the grid's minutes."""
    if args.max_t < 1:
        raise ConfigError(f"--max-t {args.max_t}: a trial needs at least 1 epoch, e.g. --max-t 9")
    if not 1 <= args.grace_period <= args.max_t:
        raise ConfigError(
            f"--grace-period {args.grace_period}: the first rung must be from epoch 1 to --max-t {args.max_t}, "
            "e.g. --grace-period 1"
        )
    if not (math.isfinite(args.reduction_factor) and args.reduction_factor > 1):
        raise ConfigError(
            f"--reduction-factor {args.reduction_factor:g}: eta must be a number above 1, e.g. --reduction-factor 3"
        )
    from trainables.denoising.study import STUDY
    from tune_jobs.core.plan import compose, plan
    from tune_jobs.core.space import load_experiment

    with tempfile.TemporaryDirectory(prefix="asha-bench-check-") as tmp:
        for name, scheduler in schedulers(args).items():
            try:
                experiment = load_experiment(write_experiment(Path(tmp), name, scheduler))
                plan(compose(STUDY, experiment, quick=args.quick, overrides=overrides))
            except ConfigError as exc:
                raise ConfigError(f"{LABELS[name]}: {str(exc).replace(str(Path(tmp)) + '/', '')}") from None


def main() -> int:
    p = OneLineParser(
        prog="python bench/asha_vs_grid.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="the quick profile (a check of the bench, not a measurement)")
    p.add_argument("--max-t", type=int, default=9, help="epochs at which a trial ends (default 9, the local profile's)")
    p.add_argument("--grace-period", type=int, default=1, help="the first rung, in epochs (default 1)")
    p.add_argument("--reduction-factor", type=float, default=3, help="eta (default 3)")
    p.add_argument(
        "--only",
        nargs="+",
        choices=list(LABELS),
        help="run only these (the grid always runs: the others are measured against it)",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run")
    args = p.parse_args()
    extra = (["--quick"] if args.quick else []) + args.overrides
    if args.quick and args.max_t == 9:
        args.max_t = 3  # the quick profile's epochs
    if not any(o.startswith("trainer.epochs=") for o in args.overrides):
        extra.append(f"trainer.epochs={args.max_t}")  # every trial's budget is max_t, under every scheduler
    try:
        check(args, [e for e in extra if e != "--quick"])
    except ConfigError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    print(f"load before: {os.getloadavg()[0]:.1f} (1-min average, {os.cpu_count()} cores)", flush=True)
    results, walls = {}, {}
    with tempfile.TemporaryDirectory(prefix="asha-bench-") as tmp:
        work = Path(tmp)
        for name, scheduler in schedulers(args).items():
            if args.only and name != "grid" and name not in args.only:
                continue
            walls[name] = run(work, write_experiment(work, name, scheduler), extra)
            results[name] = read(work, f"bench_{name}")
            print(f"{LABELS[name]}: {walls[name]:.0f} s", flush=True)

    grid = results["grid"]
    spent = {name: sum(r["epochs"].values()) for name, r in results.items()}
    full = max(grid["epochs"].values())
    space = " x ".join(f"{k.rsplit('.', 1)[-1]} {v}" for k, v in SPACE.items())
    print(f"\nthe same {len(grid['epochs'])} points ({space}), {'quick' if args.quick else 'local'} profile,")
    print(f"{full} epochs per trial, 1 CPU per trial ({os.cpu_count()} slots), metric {SCORE} (max);")
    print(
        f"ASHA and HyperBand: max_t={args.max_t}, grace_period={args.grace_period} (ASHA), eta={args.reduction_factor:g}"
    )
    names = list(results)
    print(f"{'':30}" + "".join(f"{LABELS[n]:>18}" for n in names))
    rows = [
        ("trial-epochs run", [str(spent[n]) for n in names]),
        ("share of the grid's", [f"{spent[n] / spent['grid']:.0%}" for n in names]),
        ("wall time (s)", [f"{walls[n]:.0f}" for n in names]),
        ("best blob score", [f"{results[n]['best_score']:.4f}" for n in names]),
        (
            "gap to the grid's best",
            [f"{(grid['best_score'] - results[n]['best_score']) / grid['best_score']:+.1%}" for n in names],
        ),
        ("same best point", ["yes" if results[n]["best"] == grid["best"] else "no" for n in names]),
    ]
    for label, cells in rows:
        print(f"{label:30}" + "".join(f"{c:>18}" for c in cells))
    print("\nper point (epochs run, final blob score):")
    print(f"  {'':52}" + "".join(f"{LABELS[n]:>18}" for n in names))
    for point in sorted(grid["finals"], key=lambda k: -grid["finals"][k]):
        cells = [
            f"{results[n]['epochs'].get(point, 0):2d} {results[n]['finals'].get(point, float('nan')):.4f}"
            for n in names
        ]
        print(f"  {point:52}" + "".join(f"{c:>18}" for c in cells))
    rung_analysis(grid, args.max_t)
    print(f"load after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
