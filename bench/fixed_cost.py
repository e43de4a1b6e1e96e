"""What a small sweep costs beyond its trials: the service against bare Ray Tune, phase by phase.

    python bench/fixed_cost.py                     # 12 trials of 0.5 s, 0.25 CPU each, 3 rounds
    python bench/fixed_cost.py --rounds 5 --trials 12 --seconds 0.5 --search optuna

Each round runs (a) bare Ray Tune (bench/scale.py's function trainable, `OptunaSearch` or random,
`reuse_actors=True`) and (b) the service (bench/scale.py's trivial study through its own command,
a new SQLite MLflow store), each a fresh process with its own local Ray, one after the other;
the rounds alternate which goes first. Every trial makes one report, with a checkpoint, after
sleeping `--seconds`. Printed: the median over the rounds of each phase, from the same events
on both sides:

    before Tune     the command's start to Tune's start (imports, checks, store, Ray)
    to 1st done     Tune's start to the first trial finished (workers start, first trial runs)
    trials          the first trial finished to the last
    after           the last trial finished to the command's exit (summary, sync, Ray's shutdown)

The service's events are the lines of its live view (a line per event on a pipe), stamped as
they arrive; bare Tune's come from a Tune callback in its process.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scale import EXPERIMENT, STUDY, driver_usage, env

PHASES = ("before Tune", "to 1st done", "trials", "after")


def through_service(work: Path, args: argparse.Namespace) -> dict[str, float]:
    (work / "trivial.py").write_text(STUDY.replace("{usage}", inspect.getsource(driver_usage)))
    spec = EXPERIMENT.format(n=args.trials, cpu=args.cpu, reports=1, seconds=args.seconds, search=args.search)
    (work / "trivial.yaml").write_text(spec)
    cmd = [sys.executable, "trivial.py", "--experiment", "trivial.yaml", "--mlflow-uri", f"sqlite:///{work}/mlflow.db"]
    child_env = {**env(), "SCALE_USAGE": str(work / "usage.json"), "PYTHONUNBUFFERED": "1"}
    start, tune, done, lines = time.time(), None, [], []
    proc = subprocess.Popen(cmd, cwd=work, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        now = time.time()
        lines.append(line)
        if tune is None and " sweep trivial " in line:
            tune = now
        elif " finished " in line and "val/score=" in line:
            done.append(now)
    end = time.time()
    if proc.wait() != 0 or tune is None or len(done) != args.trials:
        sys.exit(f"the service's sweep failed:\n{''.join(lines)[-3000:]}")
    return {"start": start, "tune": tune, "first": min(done), "last": max(done), "end": end}


def bare_tune(work: Path, args: argparse.Namespace) -> dict[str, float]:
    scale = Path(__file__).with_name("scale.py")
    cmd = [sys.executable, str(scale), "--bare-child", str(args.trials), "--work", str(work)]
    cmd += ["--cpu", str(args.cpu), "--reports", "1", "--seconds", str(args.seconds), "--search", args.search]
    start = time.time()
    out = subprocess.run(cmd, env={**env(), "SCALE_USAGE": str(work / "usage.json")}, capture_output=True, text=True)
    end = time.time()
    if out.returncode != 0:
        sys.exit(f"the bare Tune run failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    usage = json.loads((work / "usage.json").read_text())
    ends = [e for _, e, _ in usage["spans"]]
    return {"start": start, "tune": usage["tune_start"], "first": min(ends), "last": max(ends), "end": end}


def phases(t: dict[str, float]) -> list[float]:
    return [t["tune"] - t["start"], t["first"] - t["tune"], t["last"] - t["first"], t["end"] - t["last"]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--seconds", type=float, default=0.5, help="sleep per trial (default 0.5 s)")
    p.add_argument("--cpu", type=float, default=0.25, help="CPU per trial (default 0.25: 8 at a time on 2 cores)")
    p.add_argument("--search", choices=("random", "optuna"), default="optuna")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()

    cores = os.cpu_count() or 1
    print(f"load before: {os.getloadavg()[0]:.1f} (1-min average, {cores} cores)", flush=True)
    runs: dict[str, list[list[float]]] = {"bare": [], "service": []}
    for r in range(args.rounds):
        order = ("bare", "service") if r % 2 == 0 else ("service", "bare")
        for side in order:
            with tempfile.TemporaryDirectory(prefix=f"fixed-{side}-") as tmp:
                times = (bare_tune if side == "bare" else through_service)(Path(tmp), args)
            runs[side].append(phases(times))
            print(f"round {r + 1} {side}: " + ", ".join(f"{v:.1f}" for v in runs[side][-1]), flush=True)

    slots = int(cores / args.cpu)
    print(
        f"\n{args.trials} trials x {args.seconds:g} s, {args.cpu:g} CPU each ({slots} slots on {cores} cores), "
        f"{args.search} search; median of {args.rounds} rounds, seconds"
    )
    print(" | ".join(("", *PHASES, "whole")))
    medians = {}
    for side, rows in runs.items():
        cols = [statistics.median(col) for col in zip(*rows)]
        medians[side] = statistics.median(sum(row) for row in rows)
        print(" | ".join((side, *(f"{v:.1f}" for v in cols), f"{medians[side]:.1f}")))
    print(f"service - bare: {medians['service'] - medians['bare']:+.1f} s (whole, medians)")
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
