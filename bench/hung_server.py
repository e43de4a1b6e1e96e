"""What a tracking server that hangs costs a sweep: the same phase1 sweep, side by side, into a
local SQLite store and into a "server" that accepts connections and never answers.

    python bench/hung_server.py                      # 2 trials x 60 steps, both sweeps at once
    python bench/hung_server.py --trials 8 --steps 301 --sequential

Both sweeps run at the same time by default (each with its own local Ray, each in its own
fresh folder), so a loaded machine slows both alike; `--sequential` runs the SQLite one first.
Printed: each sweep's wall time, the ratio hung / SQLite, and what the hung sweep said at its
end. Checked: both exit 0, the SQLite store holds every trial FINISHED, and the hung sweep
names the replay command.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tune_jobs.core.cli import OneLineParser

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def hung_server() -> Iterator[str]:
    """http://127.0.0.1:PORT where connections are accepted and never answered."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(listener.accept()[0])  # kept open, never read, never answered

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


def sweep_args(trials: int, steps: int) -> list[str]:
    points = ",".join(str(k) for k in range(1, trials + 1))
    return [
        "--quick",
        f"space.n_components=[{points}]",
        f"trainer.steps={steps}",
        f"trainer.eval_every={max(1, steps // 6)}",
        f"trainer.checkpoint_every={max(1, steps // 3)}",
        "trainer.eval_prompts=64",
    ]


def start(args: list[str], workdir: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_ADDRESS"))}
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tune_jobs" / "phase1.py"), *args],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finished_trials(workdir: Path) -> int:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("phase1")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`sweep.role` = 'trial'")
    return sum(r.info.status == "FINISHED" for r in runs)


def main() -> None:
    p = OneLineParser(
        prog="python bench/hung_server.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--trials", type=int, default=2)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--sequential", action="store_true", help="run the SQLite sweep first, then the hung one")
    args = p.parse_args()
    if args.steps < 1:
        p.error(f"--steps {args.steps}: a trial needs at least 1 step, e.g. --steps 60")
    if args.trials < 1:
        p.error(f"--trials {args.trials}: at least 1 trial, e.g. --trials 2")

    common = sweep_args(args.trials, args.steps)
    with tempfile.TemporaryDirectory() as tmp, hung_server() as uri:
        work = {name: Path(tmp) / name for name in ("sqlite", "hung")}
        extra = {"sqlite": [], "hung": ["--mlflow-uri", uri]}
        for d in work.values():
            d.mkdir()
        seconds, outputs, codes = {}, {}, {}

        def run(name: str) -> None:
            t0 = time.perf_counter()
            proc = start(common + extra[name], work[name])
            outputs[name], _ = proc.communicate()
            seconds[name], codes[name] = time.perf_counter() - t0, proc.returncode

        threads = [threading.Thread(target=run, args=(name,)) for name in work]
        for t in threads:
            t.start()
            if args.sequential:
                t.join()
        for t in threads:
            t.join()

        for name, code in codes.items():
            if code != 0:
                sys.exit(f"the {name} sweep exited {code}:\n{outputs[name][-3000:]}")
        if finished_trials(work["sqlite"]) != args.trials:
            sys.exit("the SQLite store lacks trials")
        if "python tune_jobs/report.py --replay" not in outputs["hung"]:
            sys.exit(f"the hung sweep did not name the replay command:\n{outputs['hung'][-3000:]}")
        said = [line.strip() for line in outputs["hung"].splitlines() if "still lacks" in line]
    mode = "one after the other" if args.sequential else "at the same time"
    print(f"SQLite store       {seconds['sqlite']:7.1f} s")
    print(f"hung server        {seconds['hung']:7.1f} s")
    print(f"  it said: {said[0] if said else '(nothing)'}")
    print(
        f"ratio (hung / SQLite): {seconds['hung'] / seconds['sqlite']:.2f}x  "
        f"[phase1 --quick, {args.trials} trials x {args.steps} steps, run {mode}]"
    )


if __name__ == "__main__":
    main()
