"""What the tests of the MLflow path share: a new outbox and a result row for it, the folder of a
stopped sweep as a resume reads it, a command refused in one line, a sweep's runs checked whole."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import ROOT, job_env
from mlflow import MlflowClient

from tune_jobs.core.tracking import Outbox
from tune_jobs.core.tracking.state import STATE_FILE, write_json
from tune_jobs.core.tracking.sweep_file import SweepRecord


def new_mirror(sweep: Path) -> Outbox:
    return Outbox.create(
        sweep,
        experiment_name="e",
        artifact_location=None,
        tags={"sweep.id": "s1", "sweep.study": "phase1"},
        base={"seed": 0, "data.n_components": 1},  # the study's default of what the trials vary
        run_prefix="e",
    )


def row(trial: str, step: int) -> dict:
    return {"trial": trial, "step": step, "ts": 1000 + step, "metrics": {"val/nmse": 1.0 / (step + 1)}}


def find_sweep_dirs(workdir: Path) -> list[Path]:
    ray_dir = workdir / "results" / "ray"
    return sorted(ray_dir.glob("phase1-*")) if ray_dir.exists() else []


def assert_sweep_complete(client: MlflowClient, parent, trials, expected_steps: list[int]) -> None:
    assert parent.info.status == "FINISHED"
    for r in trials:
        assert r.info.status == "FINISHED", r.info.run_name
        for key in ("val/nmse", "train/loss"):
            steps = sorted(m.step for m in client.get_metric_history(r.info.run_id, key))
            assert steps == expected_steps, (r.info.run_name, key, steps)  # none lost, none twice


SWEEP_ID = "20990101-000000-abcd"


def new_sweep(root: Path) -> Path:
    """The folder of a stopped `phase1.py --quick` sweep under root/results/ray, as far as a
    resume reads it before Ray starts: its whole sweep.json and a good mlflow_runs.json."""
    from tune_jobs.core.paths import experiment_file
    from tune_jobs.core.plan import compose, plan
    from tune_jobs.core.space import load_experiment
    from tune_jobs.phase1 import STUDY

    experiment = load_experiment(experiment_file("phase1"))
    composed = compose(STUDY, experiment, profile=None, quick=True, overrides=[])
    sweep = root / "results" / "ray" / f"phase1-{SWEEP_ID}"
    sweep.mkdir(parents=True)
    SweepRecord(
        study="phase1",
        sweep_id=SWEEP_ID,
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        experiment=experiment.name,
        experiment_file=str(experiment.path),
        profile=composed.profile,
        quick=True,
        base=composed.base,
        points=[t.point for t in plan(composed).trials],
    ).write(sweep)
    state = {"experiment": "phase1", "tags": {"sweep.id": SWEEP_ID}, "base": {}, "run_prefix": "phase1"}
    state |= {"start_ms": 0, "trials": {}, "journal_offset": 0, "parent_cfg_logged": False, "ended": False}
    write_json(sweep / STATE_FILE, state)
    return sweep


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`python tune_jobs/<script> ARGS` from `cwd`, this checkout's code first."""
    script, *rest = args
    env = {**job_env(), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(ROOT / "tune_jobs" / script), *rest],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def refused_twice(args: list[str], root: Path) -> str:
    """Runs the command twice: each time exit 2 and one line `error: ...`, nothing else on
    stderr, and no file under `root` added, changed or removed. Returns that line."""
    before = files(root)
    for _ in range(2):
        out = run(args, root)
        lines = out.stderr.splitlines()
        assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-3000:]
        assert files(root) == before
    return lines[0]


def resume_args(root: Path) -> list[str]:
    return ["phase1.py", "--resume", SWEEP_ID, "--results-dir", str(root / "results")]
