"""What a sweep's driver process itself costs: its CPU time as a share of one core over the
sweep's wall time, and the bytes it wrote against the bytes of the checkpoints the sweep keeps.

    python bench/driver_cost.py tune_jobs/phase1.py                 # the default phase1 sweep (~35 min, 2 cores)
    python bench/driver_cost.py tune_jobs/phase1.py --quick         # any entry script and its arguments

Runs the entry script in this process (as `python <script> ...` would), then reads this
process's own CPU time (getrusage, the driver only: not Ray's processes nor the trials) and
the bytes it wrote to the file system (/proc/self/io: write_bytes - cancelled_write_bytes), and
sums the checkpoints left under the sweep's folder (results/ray/<experiment>-<sweep id>/).
A store that does not exist yet is created first and its bytes are printed apart: MLflow's
schema migrations write about 10 MB once per store, whatever the sweeps that follow.
"""

from __future__ import annotations

import os
import resource
import runpy
import sys
import time
from pathlib import Path


def written() -> int:
    io = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(io["write_bytes"]) - int(io["cancelled_write_bytes"])


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


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    script, args = sys.argv[1], sys.argv[2:]
    results = Path(args[args.index("--results-dir") + 1] if "--results-dir" in args else "results").resolve()
    print(f"load before: {os.getloadavg()[0]:.1f} (1-min average, {os.cpu_count()} cores)", flush=True)
    # A new MLflow store is created once (MLflow's ~60 schema migrations, about 10 MB written):
    # a cost of the store, not of the sweep, counted apart.
    from tune_jobs.core.paths import tracking_uri
    from tune_jobs.core.store import prepare_store

    before_store = written()
    prepare_store(tracking_uri(args[args.index("--mlflow-uri") + 1] if "--mlflow-uri" in args else None))
    store_bytes = written() - before_store
    start, start_wall, start_bytes = resource.getrusage(resource.RUSAGE_SELF), time.time(), written()
    sys.argv = [script, *args]
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    end, wall, driver_bytes = (
        resource.getrusage(resource.RUSAGE_SELF),
        time.time() - start_wall,
        written() - start_bytes,
    )
    user, system = end.ru_utime - start.ru_utime, end.ru_stime - start.ru_stime
    kept, count = kept_checkpoints(results, start_wall)
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
    return code


if __name__ == "__main__":
    raise SystemExit(main())
