"""What a sweep's driver process itself costs: its CPU time as a share of one core over the
sweep's wall time, and the bytes it wrote against the bytes of the checkpoints the sweep keeps.

    python bench/driver_cost.py tune_jobs/phase1.py                 # the default phase1 sweep (~35 min, 2 cores)
    python bench/driver_cost.py tune_jobs/phase1.py --quick         # any entry script and its arguments

Runs the entry script in this process (as `python <script> ...` would), then reads this
process's own CPU time (getrusage, the driver only: not Ray's processes nor the trials) and
the bytes it wrote to the file system (/proc/self/io: write_bytes - cancelled_write_bytes), and
sums the checkpoints left under the sweep's folder (results/ray/<experiment>-<sweep id>/).
A store that does not exist yet is created when the entry script creates it (after its own
checks of its arguments have passed) and its bytes are printed apart: MLflow's schema
migrations write about 10 MB once per store, whatever the sweeps that follow. An entry script
that stops before its sweep (a mistake in its arguments, --help, --dry-run) exits as it would
alone, with nothing measured and nothing written.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import runpy
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from tune_jobs.core.cli import OneLineParser


def written() -> int:
    io = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(io["write_bytes"]) - int(io["cancelled_write_bytes"])


class ThreadBytes:
    """Where the driver's bytes go, by thread: samples each thread's write_bytes in
    /proc/self/task every `every_s` seconds and names it by its Python thread's name (the
    MLflow sync thread, Tune's loop in the main thread) or, for a thread Python did not start
    (Ray's core worker, pyarrow's copies), by its kernel name. A thread that ends between two
    samples loses what it wrote since the last one: the breakdown prints that as unattributed."""

    def __init__(self, every_s: float = 1.0) -> None:
        self.every_s = every_s
        self.seen: dict[int, tuple[str, int]] = {}  # tid: (label, the most it had written)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="driver_cost sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def sample(self) -> None:
        names = {t.native_id: t.name for t in threading.enumerate()}
        for task in Path("/proc/self/task").iterdir():
            try:
                tid = int(task.name)
                io = dict(line.split(": ") for line in (task / "io").read_text().splitlines())
                label = names.get(tid) or (task / "comm").read_text().strip()
            except (OSError, ValueError):
                continue  # ended meanwhile
            label = re.sub(r"\d+", "N", label)  # Thread-12 (sync), ray's numbered pools: one line each
            wrote = int(io["write_bytes"]) - int(io["cancelled_write_bytes"])
            self.seen[tid] = (label, max(wrote, self.seen.get(tid, ("", 0))[1]))

    def since(self, before: dict[int, tuple[str, int]]) -> Counter[str]:
        by_label: Counter[str] = Counter()
        for tid, (label, wrote) in self.seen.items():
            by_label[label] += wrote - before.get(tid, (label, 0))[1]
        return by_label


def kept_checkpoints(results: Path, since: float) -> tuple[int, int]:
    """(bytes, count) of the checkpoint folders of the sweeps started after `since`."""
    total = count = 0
    for sweep in (results / "ray").glob("*"):
        if not (sweep / "sweep.json").exists() or sweep.stat().st_mtime < since:
            continue
        for ckpt in sweep.glob("*/checkpoint_*"):
            count += 1
            total += sum(f.stat().st_size for f in ckpt.rglob("*") if f.is_file())
    return total, count


class StoreCost:
    """What creating (or checking) the MLflow store costs the driver, measured apart: the first
    `prepare_store` call, which an entry script makes once its own checks have passed and before
    its sweep starts (MLflow's ~60 schema migrations, about 10 MB, when the store is new)."""

    def __init__(self) -> None:
        self.called = False
        self.bytes, self.user, self.system, self.wall = 0, 0.0, 0.0, 0.0

    def wrap(self, prepare: Callable[..., None]) -> Callable[..., None]:
        def measured(*args: object, **kwargs: object) -> None:
            if self.called:  # later checks of an existing store are the sweep's own cost
                return prepare(*args, **kwargs)
            self.called = True
            print(f"load before: {os.getloadavg()[0]:.1f} (1-min average, {os.cpu_count()} cores)", flush=True)
            before, wall, written_before = resource.getrusage(resource.RUSAGE_SELF), time.time(), written()
            try:
                return prepare(*args, **kwargs)
            finally:
                after = resource.getrusage(resource.RUSAGE_SELF)
                self.bytes = written() - written_before
                self.wall = time.time() - wall
                self.user, self.system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime

        return measured


def results_dir(args: Sequence[str]) -> Path:
    """The entry script's --results-dir (default ./results), read as its own parser reads it."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--results-dir", default="results")
    return Path(p.parse_known_args(args)[0].results_dir).resolve()


def main(argv: Sequence[str] | None = None) -> int:
    p = OneLineParser(
        prog="python bench/driver_cost.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("script", help="the entry script to run, e.g. tune_jobs/phase1.py")
    rest = p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="the entry script's own arguments")
    rest.required = False  # none is fine: a missing script is the one thing to name
    given = p.parse_args(argv)
    script, args = given.script, given.args
    if not Path(script).is_file():
        p.error(f"entry script {script!r} is not a file; name one such as tune_jobs/phase1.py")
    from tune_jobs.core.tracking import store

    # The entry script creates the store itself, after its own checks: a mistake in its
    # arguments is its one line, before anything is written. The creation is measured apart.
    store_cost = StoreCost()
    store.prepare_store = store_cost.wrap(store.prepare_store)
    threads = ThreadBytes()
    threads.sample()
    at_start = dict(threads.seen)
    threads.start()
    start, start_wall, start_bytes = resource.getrusage(resource.RUSAGE_SELF), time.time(), written()
    sys.argv = [script, *args]
    code: int = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    threads.stop()
    if not store_cost.called:  # stopped before its sweep: its own error, --help or --dry-run
        return code
    # The driver's own cost, the store's creation taken out (it is printed apart).
    end = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.time() - start_wall - store_cost.wall
    driver_bytes, store_bytes = written() - start_bytes - store_cost.bytes, store_cost.bytes
    user = end.ru_utime - start.ru_utime - store_cost.user
    system = end.ru_stime - start.ru_stime - store_cost.system
    kept, count = kept_checkpoints(results_dir(args), start_wall)
    print(f"\nexit code {code}; wall {wall:.0f} s; load after: {os.getloadavg()[0]:.1f}")
    print(f"driver CPU: {user:.1f} s user + {system:.1f} s system = {(user + system) / wall:.2%} of one core")
    ratio = lambda b: f"{b / kept:.2f}x" if kept else "n/a"
    print(
        f"driver wrote {driver_bytes / 1e6:.1f} MB; the sweep keeps {count} checkpoints, {kept / 1e6:.1f} MB: "
        f"{ratio(driver_bytes)}"
    )
    print(
        f"creating the MLflow store beforehand wrote {store_bytes / 1e6:.1f} MB (0 when it existed); with it: "
        f"{(driver_bytes + store_bytes) / 1e6:.1f} MB, {ratio(driver_bytes + store_bytes)}"
    )
    by_thread = threads.since(at_start)
    total = driver_bytes + store_bytes
    print("by thread (the store's creation included):")
    small = 0
    for label, wrote in by_thread.most_common():
        if wrote >= 0.005 * total:
            print(f"  {wrote / 1e6:7.1f} MB  {label}")
        else:
            small += wrote
    print(f"  {small / 1e6:7.1f} MB  the other threads")
    print(f"  {(total - sum(by_thread.values())) / 1e6:7.1f} MB  unattributed (threads that ended between samples)")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
