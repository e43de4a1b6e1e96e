"""What the sweep service costs: the same N short trials (a) through the service and (b) one
after another in a plain Python loop without Ray, measured side by side in one run.

    python bench/service_overhead.py                 # 8 trials (K = 1..10) of 2000 steps (~30 s)
    python bench/service_overhead.py --steps 600     # ~10 s trials: the fixed start-up shows

Prints the service's wall time as a ratio to the ideal (the sum of the trials' own training
time, as Tune measured it inside each trial, divided by the parallel slots) and to (b).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tune_jobs.core.cli import OneLineParser

ROOT = Path(__file__).resolve().parents[1]
KS = [1, 2, 3, 4, 5, 6, 8, 10]


def overrides(args: argparse.Namespace) -> list[str]:
    return [
        f"space.n_components=[{','.join(str(k) for k in KS[: args.trials])}]",
        f"trainer.steps={args.steps}",
        "trainer.eval_every=100",
        "trainer.checkpoint_every=500",
    ]


def through_service(args: argparse.Namespace, work: Path) -> tuple[float, list[float]]:
    cmd = [
        sys.executable,
        str(ROOT / "tune_jobs" / "phase1.py"),
        "--quick",
        *overrides(args),
        "--results-dir",
        str(work / "results"),
        "--mlflow-uri",
        f"sqlite:///{work / 'mlflow.db'}",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"the service run failed:\n{out.stderr[-3000:]}")
    own = []
    for result in (work / "results" / "ray").glob("*/*/result.json"):
        last = json.loads(result.read_text().splitlines()[-1])
        own.append(last["time_total_s"])
    return wall, own


def plain_loop(args: argparse.Namespace, work: Path) -> float:
    import torch

    from trainables.common import LocalContext
    from tune_jobs.core.plan import compose, plan
    from tune_jobs.core.space import load_experiment
    from tune_jobs.phase1 import STUDY

    exp = load_experiment(ROOT / "search_spaces" / "phase1.yaml")
    trials = plan(compose(STUDY, exp, quick=True, overrides=overrides(args))).trials
    torch.set_num_threads(os.cpu_count() or 1)  # what a hand-written loop gets by default
    start = time.perf_counter()
    for t in trials:
        STUDY.train(t.cfg, LocalContext(work / f"trial{t.number}"))
    return time.perf_counter() - start


def main() -> None:
    p = OneLineParser(
        prog="python bench/service_overhead.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--trials", type=int, default=8, choices=range(1, 9))
    p.add_argument("--steps", type=int, default=2000)
    args = p.parse_args()
    if args.steps < 1:
        p.error(f"--steps {args.steps}: a trial needs at least 1 step, e.g. --steps 60")
    slots = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "a").mkdir()
        wall, own = through_service(args, work / "a")
        loop = plain_loop(args, work / "b")
    ideal = sum(own) / min(slots, len(own))
    print(f"{len(own)} trials x {args.steps} steps (quick model), {slots} CPU slots, 1 CPU per trial")
    print(f"(a) service, whole command (Ray start, trials, MLflow, report): {wall:7.1f} s")
    print(f"    trials' own training time, summed:                          {sum(own):7.1f} s")
    print(f"    ideal (sum / {min(slots, len(own))} slots):                                     {ideal:7.1f} s")
    print(f"(b) plain sequential loop, no Ray, {slots} threads:                {loop:7.1f} s")
    print(f"fixed cost of the service (wall - ideal): {wall - ideal:.1f} s")
    print(f"service / ideal = {wall / ideal:.2f}x   service / plain loop = {wall / loop:.2f}x")


if __name__ == "__main__":
    main()
