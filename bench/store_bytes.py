"""What one MLflow sync costs a SQLite store, in bytes written to the disk, side by side.

    python bench/store_bytes.py                 # 40 syncs of 2 running trials, 3 results each
    python bench/store_bytes.py --syncs 100 --dir /scratch    # the stores on another disk

A sweep's sync thread sends each running trial's new results with one `log_batch`: one
transaction of the store, whose cost is the pages it rewrites (each twice, in the database and
its rollback journal), not the rows it adds. Each metric key of a batch lands on its own page of
MLflow's metrics index, and the kernel writes a dirtied page back in the folio that holds it
(ext4 on Linux 6.18, where this was measured, caches a file in folios of up to a few MB when
it was written in large pieces, as a copy of the store is). Printed, per transaction, the kB
this process had written (/proc/self/io), for:

- phase1's results as they were (six keys: the three baselines at every evaluation) and as they
  are (three: the baselines only at the first and last evaluation);
- a store created in place (as a sweep creates it) and one copied into place, with and without
  its cached pages dropped before each sync (what the sync thread does).

Each store first holds a phase1 sweep's worth of history (8 runs of 50 results), so that its
indexes have the depth they have during a sweep. Linux only (/proc/self/io).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tune_jobs.core.cli import OneLineParser

BASELINES = ("baseline/zero_nmse", "baseline/lstsq_nmse", "baseline/oracle_nmse")
KEYS = ("train/loss", "val/nmse", "val/nmse_rel_oracle")


def written() -> int:
    io = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(io["write_bytes"]) - int(io["cancelled_write_bytes"])


def filled_store(path: Path) -> None:
    """A store at `path` holding 8 finished runs of 50 results each (six keys, as phase1 had)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from tune_jobs.core.tracking.store import prepare_store

    prepare_store(f"sqlite:///{path}")  # as a sweep creates it
    client = MlflowClient(f"sqlite:///{path}")
    experiment = client.create_experiment("phase1")
    ts = int(time.time() * 1000)
    for _ in range(8):
        run = client.create_run(experiment).info.run_id
        for step in range(0, 5000, 300):  # three results a batch, as a 30-s sync takes them
            batch = [Metric(k, 0.5, ts + s, s) for s in range(step, step + 300, 100) for k in (*KEYS, *BASELINES)]
            client.log_batch(run, metrics=batch)
        client.set_terminated(run)


def cost(path: Path, keys: Sequence[str], syncs: int, drop: bool) -> float:
    """kB written per transaction: `syncs` syncs of 2 new runs, 3 results of `keys` each."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from tune_jobs.core.tracking.store import drop_cached_pages

    client = MlflowClient(f"sqlite:///{path}")
    experiment = client.get_experiment_by_name("phase1").experiment_id
    runs = [client.create_run(experiment).info.run_id for _ in range(2)]
    os.sync()
    before, ts, step = written(), int(time.time() * 1000), 0
    for _ in range(syncs):
        if drop:
            drop_cached_pages(path)
        for run in runs:
            batch = [Metric(k, 0.1 + (step + s) / 1e5, ts + step + s, step + s) for s in (0, 100, 200) for k in keys]
            client.log_batch(run, metrics=batch)
        step += 300
    os.sync()
    return (written() - before) / (2 * syncs) / 1e3


def main(argv: Sequence[str] | None = None) -> int:
    p = OneLineParser(
        prog="python bench/store_bytes.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--syncs", type=int, default=40, help="syncs per case (default 40)")
    p.add_argument("--dir", default=".", help="where the stores are made (default: here, where ./mlflow.db would be)")
    args = p.parse_args(argv)
    if args.syncs < 1:
        p.error(f"--syncs {args.syncs} is not a count of syncs; use e.g. --syncs 40")
    if not Path(args.dir).is_dir() or not os.access(args.dir, os.W_OK):
        p.error(f"--dir {args.dir}: not a folder this user may write to; name one, e.g. --dir /var/tmp")
    if not Path("/proc/self/io").exists():
        print("error: this bench reads Linux's /proc/self/io, which this system lacks", file=sys.stderr)
        return 2
    six, three = (*KEYS, *BASELINES), KEYS
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        template = Path(tmp) / "template.db"
        filled_store(template)

        def in_place(name: str) -> Path:
            path = Path(tmp) / name
            filled_store(path)
            return path

        def copied(name: str) -> Path:
            path = Path(tmp) / name
            shutil.copyfile(template, path)
            return path

        cases = [
            ("six keys (baselines every time), created in place", in_place("a.db"), six, False),
            ("three keys (as now), created in place", in_place("b.db"), three, False),
            ("six keys, copied into place", copied("c.db"), six, False),
            ("six keys, copied into place, pages dropped before each sync", copied("d.db"), six, True),
            ("three keys, copied into place, pages dropped before each sync (as now)", copied("e.db"), three, True),
        ]
        print(f"{args.syncs} syncs of 2 trials x 3 results; kB written per transaction:")
        first = None
        for label, path, keys, drop in cases:
            kb = cost(path, keys, args.syncs, drop)
            first = first or kb
            print(f"  {kb:7.1f} kB  {kb / first:5.2f}x  {label}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
