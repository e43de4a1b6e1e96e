"""ASHA with promotion under real Ray Tune and MLflow, on 2 slots: trials wait paused at a rung
and resume from the checkpoint they reported there; a driver killed while trials wait loses
none of them on --resume.

The study is the tests' toy study (tests/toy_study.py): a learning curve per trial whose final
score is `trainer.quality`, so every rung ranks the trials the same way."""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from pathlib import Path

import pytest
from helpers import crash_when, job_env, sweep_runs, toy_command

# The best first: the first trials to reach rung 1 wait there until enough peers arrive.
QUALITIES = [0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
EXPERIMENT = f"""\
# python tests/toy_study.py --experiment curves.yaml
study: toy
metric: val/score
mode: max
search: grid
scheduler: {{kind: asha, max_t: 9, grace_period: 1, reduction_factor: 3}}
resources: {{cpu: 1}}
fixed: {{trainer.epochs: 9, trainer.first: 1, trainer.seconds: 0.4}}
space:
  trainer.quality: {{grid: {QUALITIES}}}
"""
RUNGS, MAX_T = (1, 3), 9


def command(tmp_path: Path, *args: str) -> list[str]:
    (tmp_path / "curves.yaml").write_text(EXPERIMENT)
    return toy_command(tmp_path / "curves.yaml", *args)


def journal(workdir: Path) -> list[dict]:
    found = list((workdir / "results" / "ray").glob("curves-*/asha_rungs.jsonl"))
    if not found:
        return []
    lines = found[0].read_bytes().splitlines(keepends=True)
    return [json.loads(line) for line in lines if line.endswith(b"\n")]


def check_runs(workdir: Path) -> dict[float, list[int]]:
    """Every trial has one FINISHED run whose steps are 1..n, n a rung or max_t; returns them."""
    client, parents, trials = sweep_runs(workdir, "curves")
    assert len(parents) == 1 and len(trials) == len(QUALITIES)
    steps = {}
    for r in trials:
        assert r.info.status == "FINISHED", r.info.run_name
        s = sorted(m.step for m in client.get_metric_history(r.info.run_id, "val/score"))
        assert s == list(range(1, len(s) + 1)), (r.info.run_name, s)  # no gap, no step twice
        assert len(s) in (*RUNGS, MAX_T), (r.info.run_name, s)
        steps[float(r.data.params["trainer.quality"])] = s
    return steps


@pytest.mark.slow
def test_asha_with_promotion_pauses_trials_at_rungs_and_resumes_them_from_their_checkpoints(tmp_path, workdir):
    out = subprocess.run(command(tmp_path), cwd=workdir, env=job_env(), capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    steps = check_runs(workdir)
    assert len(steps[0.6]) == MAX_T  # the best is promoted at every rung
    spent = sum(len(s) for s in steps.values())
    assert spent <= len(QUALITIES) * MAX_T / 2, steps

    events = journal(workdir)
    trial_of = {}
    for e in events:
        trial_of.setdefault(e["trial"], len(trial_of))
    # Some trial waited at a rung (other decisions came between its record and its promotion)
    # and then went on: it restarted from the checkpoint it reported at the rung, so its
    # result.json has every epoch once.
    waited = [
        e["trial"]
        for i, e in enumerate(events)
        if e["event"] == "promote" and not (events[i - 1]["event"] == "rung" and events[i - 1]["trial"] == e["trial"])
    ]
    assert waited, events
    for trial_id in waited:
        (result,) = (workdir / "results" / "ray").glob(f"curves-*/*{trial_id}/result.json")
        reported = [json.loads(line)["step"] for line in result.read_text().splitlines()]
        assert reported == sorted(set(reported)), reported
    # The report's compute line: the epochs run against the full budget.
    assert f"compute: {spent} of {len(QUALITIES) * MAX_T} trial-epochs" in out.stdout, out.stdout[-2000:]


@pytest.mark.slow
def test_a_driver_killed_while_trials_wait_at_a_rung_loses_none_of_them_on_resume(tmp_path, workdir):
    def two_wait_at_a_rung() -> set[str] | None:
        events = journal(workdir)
        waiting = {e["trial"] for e in events if e["event"] == "rung"}
        waiting -= {e["trial"] for e in events if e["event"] in ("promote", "end")}
        return waiting if len(waiting) >= 2 else None

    with open(tmp_path / "driver.log", "w") as log:
        driver = subprocess.Popen(
            command(tmp_path), cwd=workdir, env=job_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        # settle: the moment Tune pauses the waiting trials
        waiting = crash_when(driver, two_wait_at_a_rung, settle=1.0, log=tmp_path / "driver.log")
    before = journal(workdir)
    time.sleep(2)

    out = subprocess.run(
        command(tmp_path, "--resume"), cwd=workdir, env=job_env(), capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    steps = check_runs(workdir)  # none lost: each trial has its one run, ended, without a gap
    after = journal(workdir)
    assert after[: len(before)] == before  # the resumed sweep continued the same decisions
    # Each trial that waited at the kill was decided after the resume: promoted, or stopped at its rung.
    for trial_id in waiting:
        decided = [e for e in after[len(before) :] if e["trial"] == trial_id and e["event"] in ("promote", "end")]
        assert decided, (trial_id, after)
        # It was not run again from the start: no second record at the rung it waited at.
        rung = next(e["rung"] for e in before if e["trial"] == trial_id and e["event"] == "rung")
        assert sum(1 for e in after if e["trial"] == trial_id and e["event"] == "rung" and e["rung"] == rung) == 1
    assert len(steps[0.6]) == MAX_T


@pytest.mark.slow
def test_rungs_ranked_by_another_metric_promote_by_it_and_the_sweep_still_picks_its_best_by_its_metric(
    tmp_path, workdir
):
    rank = ["sweep.scheduler.rank_by=val/loss", "sweep.scheduler.rank_mode=min"]
    out = subprocess.run(
        command(tmp_path, *rank), cwd=workdir, env=job_env(), capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    steps = check_runs(workdir)
    # The loss is lowest for the lowest quality: that trial is the one promoted at every rung.
    assert len(steps[0.1]) == MAX_T and len(steps[0.6]) < MAX_T, steps
    scored = [e for e in journal(workdir) if e["event"] == "rung"]
    assert all("val/loss" in e["result"] and "val/score" in e["result"] for e in scored)
    # The best trial is still the best by val/score where each trial stopped (which trials reach
    # rung 3 depends on arrival order), never the one the loss ranked first.
    final = {q: q * (1 - math.exp(-len(s) / 2)) for q, s in steps.items()}
    best = max(final, key=final.get)
    assert best != 0.1, final
    assert re.search(rf"best trial \S*quality={best}: val/score", out.stdout), (final, out.stdout[-2000:])
