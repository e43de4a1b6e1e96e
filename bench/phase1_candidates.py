"""Study A's candidate training set-ups at equal wall time: which one gets the transformer
furthest below the zero predictor (and towards least squares) in the time a trial of the
default sweep has on a laptop.

    python bench/phase1_candidates.py                       # 5 candidates, K = 2 and 4, 4 min each
    python bench/phase1_candidates.py --minutes 9.6 --k 4   # a default-sweep trial's share of 2 cores
    python bench/phase1_candidates.py --candidate "wide:model.n_embd=96,model.n_head=4"

Each run is the study's own training loop (trainables/phase1/train.py) on one thread, two runs
at a time as the default sweep shares 2 cores, stopped when its wall time (counted from its first evaluation, at step 0) is spent; the
learning rate is constant after warm-up, so a run stopped early is the same run as a longer
one up to that point. Validation nMSE every `trainer.eval_every` steps on the sweep's own
1,024 validation prompts (least squares on the target block and the zero predictor are
scored on the same prompts). Prints each candidate's nMSE at a quarter, half, three quarters
and all of the budget with the steps it ran, and draws the curves against wall time
(`--out`, a PNG, with a CSV of every point beside it).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import multiprocessing as mp
import signal
import sys
import tempfile
import time
from pathlib import Path

from tune_jobs.core.cli import OneLineParser
from tune_jobs.core.errors import ConfigError, one_line

DEFAULT_CANDIDATES = {
    "default": {},
    "lr 3e-3": {"trainer.lr": 3e-3},
    "batch 32": {"trainer.batch_size": 32},
    "6 layers x 48": {"model.n_layer": 6, "model.n_embd": 48, "model.n_head": 4},
    "curriculum every 300": {"trainer.curriculum_every": 300},
}


class _BudgetSpent(Exception):
    pass


def _run(name: str, settings: dict, k: int, seconds: float, out: str) -> None:
    """One candidate at one K, in its own process: appends one JSON line per evaluation."""
    import torch

    from trainables.common import LocalContext
    from trainables.phase1 import PROFILES, Config
    from trainables.phase1.train import train
    from tune_jobs.core.config import build_config

    torch.set_num_threads(1)  # a trial's share of the sweep: cpu=1
    cfg = build_config(Config, PROFILES["local"], {"trainer.steps": 10**6, **settings, "data.n_components": k})
    baselines: dict[str, float] = {}  # reported with the first evaluation (constants of the run)
    start = None  # the clock starts at the first evaluation (step 0): the set-up before it
    # (validation prompts, baselines) is the same for every candidate, and on a loaded machine
    # it could eat a short budget before a single step ran

    class Timed(LocalContext):
        def report(self, metrics, state=None) -> None:  # no checkpoints: nothing to resume here
            nonlocal start
            if start is None:
                start = time.monotonic()
            baselines.update({k: v for k, v in metrics.items() if k.startswith("baseline/")})
            row = {
                "candidate": name,
                "k": k,
                "seconds": round(time.monotonic() - start, 2),
                "step": int(metrics["step"]),
                "val_nmse": metrics["val/nmse"],
                "lstsq_nmse": baselines["baseline/lstsq_nmse"],
                "zero_nmse": baselines["baseline/zero_nmse"],
            }
            with open(out, "a") as f:
                f.write(json.dumps(row) + "\n")
            if time.monotonic() - start >= seconds:
                raise _BudgetSpent

    with tempfile.TemporaryDirectory() as tmp, contextlib.suppress(_BudgetSpent):
        train(cfg, Timed(tmp))


def _ignore_ctrl_c() -> None:
    """Runs leave a Ctrl-C to the bench, which stops them all and says so in one line."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _parse_candidate(text: str) -> tuple[str, dict[str, str]]:
    name, _, body = text.partition(":")
    if not body:
        raise ConfigError(f"--candidate {text!r}: write it as NAME:key=value,key=value")
    pairs = [item.split("=", 1) for item in body.split(",")]
    if any(len(p) != 2 for p in pairs):
        raise ConfigError(f"--candidate {text!r}: each setting is key=value")
    return name, dict(pairs)


def _at(rows: list[dict], seconds: float) -> dict | None:
    """The last evaluation at or before `seconds`."""
    before = [r for r in rows if r["seconds"] <= seconds]
    return before[-1] if before else None


def _checked(args: argparse.Namespace) -> tuple[dict[str, dict], Path]:
    """The candidates and the log to write, every setting checked first: a mistake is one
    ConfigError line before minutes of training, with nothing written."""
    candidates = dict(_parse_candidate(c) for c in args.candidate) if args.candidate else DEFAULT_CANDIDATES

    from trainables.phase1 import PROFILES, Config
    from tune_jobs.core.config import build_config

    if not (math.isfinite(args.minutes) and args.minutes > 0):
        raise ConfigError(f"--minutes {args.minutes:g}: each run needs a positive wall time, e.g. --minutes 4")
    if args.parallel < 1:
        raise ConfigError(f"--parallel {args.parallel}: at least one run at a time, e.g. --parallel 2")
    for name, settings in candidates.items():  # a typo fails here, before minutes of training
        for k in (None, *args.k):
            try:
                build_config(Config, PROFILES["local"], settings | ({} if k is None else {"data.n_components": k}))
            except (ConfigError, ValueError) as exc:
                raise ConfigError(f"candidate {name!r}{'' if k is None else f' at K = {k}'}: {exc}") from None
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        log = args.out.with_suffix(".jsonl")
        log.write_bytes(b"")
    except OSError as exc:
        raise ConfigError(f"--out {args.out}: cannot write there ({exc.strerror}); pick a writable folder") from None
    return candidates, log


def main() -> int:
    p = OneLineParser(
        prog="python bench/phase1_candidates.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--minutes", type=float, default=4.0, help="wall time of each run")
    p.add_argument("--k", type=int, nargs="+", default=[2, 4])
    p.add_argument("--parallel", type=int, default=2, help="runs at a time (the sweep's trials per 2 cores)")
    p.add_argument("--candidate", action="append", default=[], metavar="NAME:key=value,...")
    p.add_argument("--out", type=Path, default=Path("results/bench/phase1_candidates.png"))
    args = p.parse_args()
    try:
        candidates, log = _checked(args)
    except ConfigError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2

    seconds = args.minutes * 60
    jobs = [(name, settings, k, seconds, str(log)) for k in args.k for name, settings in candidates.items()]
    print(
        f"{len(candidates)} candidates x K = {args.k}, {args.minutes:g} min each, {args.parallel} at a time, "
        f"one thread each: about {len(jobs) * args.minutes / args.parallel:.0f} min"
    )
    pool = mp.get_context("spawn").Pool(args.parallel, initializer=_ignore_ctrl_c, maxtasksperchild=1)
    try:
        pool.starmap(_run, jobs, chunksize=1)
    except KeyboardInterrupt:
        pool.terminate()
        print(f"\ninterrupted; the evaluations so far are in {log}", file=sys.stderr)
        return 130
    finally:
        pool.close()
        pool.join()

    rows = [json.loads(line) for line in log.read_text().splitlines()]
    fractions = (0.25, 0.5, 0.75, 1.0)
    for k in args.k:
        at_k = [r for r in rows if r["k"] == k]
        lstsq, zero = at_k[0]["lstsq_nmse"], at_k[0]["zero_nmse"]
        print(
            f"\nK = {k}: validation nMSE at each share of {args.minutes:g} min (least squares {lstsq:.3f}, zero {zero:.3f})"
        )
        print(f"  {'candidate':<24}" + "".join(f"{f'{f:.0%}':>9}" for f in fractions) + f"{'steps':>8}{'best':>8}")
        for name in candidates:
            mine = [r for r in at_k if r["candidate"] == name]
            cells = [_at(mine, f * seconds + 1e-6) for f in fractions]
            values = "".join(f"{c['val_nmse']:>9.3f}" if c else f"{'-':>9}" for c in cells)
            best = min(r["val_nmse"] for r in mine)
            print(f"  {name:<24}{values}{mine[-1]['step']:>8}{best:>8.3f}")

    with open(args.out.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    _plot(rows, candidates, args.k, args.minutes, args.out)
    print(f"\ncurves: {args.out}\npoints: {args.out.with_suffix('.csv')}")
    return 0


def _plot(rows: list[dict], candidates: dict, ks: list[int], minutes: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ks), figsize=(5.5 * len(ks), 4.2), squeeze=False, sharey=True)
    for ax, k in zip(axes[0], ks, strict=True):
        at_k = [r for r in rows if r["k"] == k]
        for name in candidates:
            mine = [r for r in at_k if r["candidate"] == name]
            ax.plot([r["seconds"] / 60 for r in mine], [r["val_nmse"] for r in mine], label=name, lw=1.4)
        ax.axhline(at_k[0]["lstsq_nmse"], color="k", ls="--", lw=1, label="least squares (target block)")
        ax.axhline(at_k[0]["zero_nmse"], color="grey", ls=":", lw=1, label="zero predictor")
        ax.set(title=f"K = {k}", xlabel="wall time (min, one thread)", xlim=(0, minutes), ylim=(0, 1.3))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation nMSE (query)")
    axes[0][-1].legend(fontsize=8, loc="upper right")
    fig.suptitle("Study A: candidate set-ups at equal wall time")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
