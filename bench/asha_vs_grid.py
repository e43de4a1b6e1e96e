"""ASHA against the full grid on the same small space of the denoising study, side by side.

    python bench/asha_vs_grid.py              # 12 points, local profile, 9 epochs each (~8 min, 2 cores)
    python bench/asha_vs_grid.py --quick      # the quick profile: checks the bench itself (~2 min)

Runs the same grid twice through the service, once with every trial to its last epoch (FIFO)
and once under the ASHA settings of search_spaces/denoising_search.yaml, then reads both back
from MLflow and prints: the trial-epochs each spent, ASHA's fraction of the grid's, and the
gap between the best blob score each found.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SPACE = {
    "trainer.lr": [0.005, 0.02, 0.05],
    "model.encoder_init_scale": [0.03, 0.3],
    "loss.decoder_reg": [0.01, 0.1],
}
SCORE = "blob/score"


def asha_settings() -> dict:
    from tune_jobs.core.space import load_experiment

    return dict(load_experiment(ROOT / "search_spaces" / "denoising_search.yaml").scheduler)


def write_experiment(work: Path, name: str, scheduler: dict) -> Path:
    path = work / f"{name}.yaml"
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
    epochs, finals = {}, {}
    for t in sweep.trials:
        hist = sweep.history(t.run_id, SCORE)
        epochs[trial_label(t.point)] = len(hist)
        finals[trial_label(t.point)] = hist[-1][1] if hist else float("nan")
    best = max(finals, key=lambda k: finals[k])
    return {"trials": len(finals), "epochs": epochs, "finals": finals, "best": best, "best_score": finals[best]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the quick profile (a check of the bench, not a measurement)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for both runs")
    args = p.parse_args()
    asha = asha_settings()
    extra = (["--quick"] if args.quick else []) + args.overrides
    with tempfile.TemporaryDirectory(prefix="asha-bench-") as tmp:
        work = Path(tmp)
        wall_grid = run(work, write_experiment(work, "bench_grid", {"kind": "fifo"}), extra)
        wall_asha = run(work, write_experiment(work, "bench_asha", asha), extra)
        grid, sha = read(work, "bench_grid"), read(work, "bench_asha")

    spent_grid, spent_asha = sum(grid["epochs"].values()), sum(sha["epochs"].values())
    max_epochs = max(grid["epochs"].values())
    settings = ", ".join(f"{k}={v}" for k, v in asha.items() if k != "kind")
    space = " x ".join(f"{k.rsplit('.', 1)[-1]} {v}" for k, v in SPACE.items())
    print(f"ASHA vs the full grid: the same {grid['trials']} points ({space}),")
    print(f"{'quick' if args.quick else 'local'} profile, {max_epochs} epochs per trial, metric {SCORE} (max)")
    print(f"ASHA settings (from search_spaces/denoising_search.yaml): {settings}")
    print(f"{'':30}{'full grid (FIFO)':>18}{'ASHA':>12}")
    rows = [
        ("trials", grid["trials"], sha["trials"]),
        ("trial-epochs run", spent_grid, spent_asha),
        ("wall time, whole command (s)", f"{wall_grid:.0f}", f"{wall_asha:.0f}"),
        ("best blob score", f"{grid['best_score']:.4f}", f"{sha['best_score']:.4f}"),
    ]
    for name, a, b in rows:
        print(f"{name:30}{a!s:>18}{b!s:>12}")
    print(f"best point, grid: {grid['best']}")
    print(f"best point, ASHA: {sha['best']}")
    print("per point (epochs run, final blob score): grid | ASHA")
    for point in sorted(grid["finals"], key=lambda k: -grid["finals"][k]):
        print(
            f"  {point:52} {grid['epochs'][point]:2d} {grid['finals'][point]:.4f} | "
            f"{sha['epochs'].get(point, 0):2d} {sha['finals'].get(point, float('nan')):.4f}"
        )
    gap = grid["best_score"] - sha["best_score"]
    rel = gap / grid["best_score"] if grid["best_score"] else float("nan")
    print(
        f"ASHA spent {spent_asha}/{spent_grid} = {spent_asha / spent_grid:.1%} of the grid's trial-epochs "
        f"({wall_asha / wall_grid:.2f}x its wall time); best-score gap (grid - ASHA) = {gap:+.4f} ({rel:+.1%} of the "
        f"grid's best); same best point: {'yes' if grid['best'] == sha['best'] else 'no'}"
    )


if __name__ == "__main__":
    main()
