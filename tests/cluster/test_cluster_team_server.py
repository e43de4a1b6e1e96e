"""A team's tracking server, for real: PostgreSQL (a throwaway cluster: initdb + pg_ctl on a
loopback port) under `python -m tune_jobs.mlflow_server --auth`, two users with their own
logins, real sweeps through it: a study's --quick sweep, four sweeps of two users at once, and
sweeps that outlive PostgreSQL stopping and the server being killed. Every trial's metrics in
MLflow equal the sweep's journal, once each; no password is left anywhere.

Needs Debian's postgresql package (see tests/team_helpers.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import psutil
import pytest
from helpers import ROOT, job_env, toy_command
from mlflow import MlflowClient
from team_helpers import ADMIN_PASSWORD, DB_PASSWORD, Postgres, TeamServer, add_users, login

ALICE, BOB = ("alice", "alice-team-pw-6d2e91"), ("bob", "bob-team-pw-0c7f44")
PASSWORDS = (ALICE[1], BOB[1], ADMIN_PASSWORD, DB_PASSWORD)
GRID = """\
study: toy
metric: val/score
mode: max
fixed: {{trainer.epochs: {epochs}, trainer.first: 1, trainer.seconds: {seconds}}}
space:
  trainer.quality: {{grid: {grid}}}
"""


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """PostgreSQL, the server with logins on it, alice and bob allowed to log to the experiments
    the tests use."""
    root = tmp_path_factory.mktemp("team")
    pg = Postgres(root / "pg")
    server = TeamServer(root, pg)
    server.start()
    try:
        add_users(server, dict([ALICE, BOB]), ["team_a", "team_b", "phase1", "outage"])
        yield server
    finally:
        server.stop()
        pg.remove()


class Sweep:
    """A user's sweep in the background, in its own folder, its output in a file."""

    def __init__(self, root: Path, server: TeamServer, who: tuple[str, str], args: list[str]) -> None:
        self.folder = root / f"{who[0]}-{len(list(root.glob(f'{who[0]}-*')))}"
        self.folder.mkdir(parents=True)
        self.log = self.folder / "out.log"
        env = {**job_env(), **login(*who)}
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [*args, "--mlflow-uri", server.uri], cwd=self.folder, env=env, stdout=out, stderr=subprocess.STDOUT
            )

    @classmethod
    def toy(cls, root, server, who, experiment: str, grid: list[float], epochs: int = 2, seconds: float = 0.0):
        root.mkdir(parents=True, exist_ok=True)
        spec = root / f"{experiment}.yaml"
        spec.write_text(GRID.format(epochs=epochs, seconds=seconds, grid=json.dumps(grid)))
        return cls(root, server, who, toy_command(spec))

    def finish(self, timeout: float = 900) -> str:
        self.proc.wait(timeout)
        out = self.log.read_text()
        assert self.proc.returncode == 0, out[-4000:]
        assert "Traceback" not in out, out[-4000:]
        return out

    def sweep_dir(self) -> Path:
        (found,) = [p.parent for p in (self.folder / "results" / "ray").glob("*/sweep.json")]
        return found


def journal(sweep_dir: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """trial id -> metric -> sorted (step, value) pairs, as the sweep journalled them."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for line in (sweep_dir / "mlflow_journal.jsonl").read_text().splitlines():
        row = json.loads(line)
        for key, value in row["metrics"].items():
            out[row["trial"]][key].append((row["step"], value))
    return {t: {k: sorted(v) for k, v in m.items()} for t, m in out.items()}


def assert_mlflow_equals_journal(server: TeamServer, sweep_dir: Path, trials: int) -> None:
    """The sweep's runs on the server: its parent FINISHED, one run per trial, every metric's
    history exactly the journal's (none lost, none twice)."""
    sweep_id = json.loads((sweep_dir / "sweep.json").read_text())["sweep_id"]
    os.environ.update(login("admin", ADMIN_PASSWORD))
    try:
        client = MlflowClient(server.uri)
        experiments = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(experiments, f"tags.`sweep.id` = '{sweep_id}'", max_results=1000)
        parents = [r for r in runs if r.data.tags["sweep.role"] == "parent"]
        children = [r for r in runs if r.data.tags["sweep.role"] == "trial"]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert len(children) == trials
        assert len({r.data.tags["sweep.trial_id"] for r in children}) == trials  # no trial twice
        journalled = journal(sweep_dir)
        assert len(journalled) == trials
        for run in children:
            assert run.info.status == "FINISHED"
            assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
            for key, expected in journalled[run.data.tags["sweep.trial_id"]].items():
                history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
                assert history == expected, (run.info.run_name, key)
            recorded = " ".join([*run.data.params.values(), *run.data.tags.values()])
            assert not any(p in recorded for p in PASSWORDS)
    finally:
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(key)


def secrets_in_ray_processes() -> list[str]:
    """Ray's processes (trials included) whose environment holds a password."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if not any("ray" in part for part in proc.info["cmdline"] or ()):
                continue
            if proc.info["cmdline"][:1] == [sys.executable] and "toy_study.py" in " ".join(proc.info["cmdline"]):
                continue  # the driver itself holds its login, as any MLflow client does
            environ = " ".join(proc.environ().values())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if any(p in environ for p in PASSWORDS):
            found.append(" ".join(proc.info["cmdline"])[:200])
    return found


@pytest.mark.slow
def test_a_study_quick_sweep_and_four_sweeps_of_two_users_at_once(team, tmp_path):
    # The study's --quick sweep runs beside the four others: five sweeps at once.
    quick = Sweep(tmp_path / "quick", team, ALICE, [sys.executable, str(ROOT / "tune_jobs" / "phase1.py"), "--quick"])
    grid = [round(0.2 + 0.03 * i, 2) for i in range(25)]  # 25 trials a sweep, 100 in all
    started = time.monotonic()
    sweeps = [
        Sweep.toy(tmp_path / "four", team, who, experiment, grid)
        for who in (ALICE, BOB)
        for experiment in ("team_a", "team_b")
    ]
    leaks: list[str] = []
    while any(s.proc.poll() is None for s in [quick, *sweeps]):
        leaks += secrets_in_ray_processes()
        time.sleep(2)
    for s in [quick, *sweeps]:
        s.finish()
    print(f"phase1 --quick and 4 sweeps of 25 trials at once: {time.monotonic() - started:.0f} s")
    assert not leaks, leaks
    assert_mlflow_equals_journal(team, quick.sweep_dir(), trials=len(journal(quick.sweep_dir())))
    for s in sweeps:
        assert_mlflow_equals_journal(team, s.sweep_dir(), trials=25)
    for path in (tmp_path).rglob("*"):
        # uncommitted.diff holds the checkout's own uncommitted changes, this test's constants
        # among them when it is being edited.
        if path.is_file() and path.name != "uncommitted.diff":
            assert not any(p.encode() in path.read_bytes() for p in PASSWORDS), path


def wait_for(condition, what: str, sweep: Sweep, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert sweep.proc.poll() is None, f"the sweep ended before {what}: {sweep.log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.5)


@pytest.mark.soak
def test_postgres_stopped_for_30_s_and_the_server_killed_mid_sweep_lose_nothing(team, tmp_path):
    # Long enough that the server is back well before the end: its restart takes a while on 2 busy cores.
    sweep = Sweep.toy(tmp_path, team, ALICE, "outage", [0.3, 0.9], epochs=120, seconds=1.0)

    def journalled() -> int:
        found = list((sweep.folder / "results" / "ray").glob("*/mlflow_journal.jsonl"))
        return len(found[0].read_text().splitlines()) if found else 0

    wait_for(lambda: journalled() >= 10, "results journalled", sweep)
    team.pg.stop()
    time.sleep(30)
    team.pg.start()
    before = journalled()
    wait_for(lambda: journalled() >= before + 10, "results after PostgreSQL came back", sweep)
    team.kill()
    time.sleep(5)
    team.start()
    assert sweep.proc.poll() is None, "the sweep ended before the server was back: lengthen it"
    sweep.finish()
    assert_mlflow_equals_journal(team, sweep.sweep_dir(), trials=2)
