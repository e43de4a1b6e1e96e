"""Extending a finished sweep (tune_jobs/core/extend.py): `--resume ID sweep.seeds=N` runs only
the missing seeds of every grid point, `--resume ID sweep.num_samples=N` only the new samples of
a search, the Optuna study going on from its history; what cannot be extended is one line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import optuna
import pytest
from helpers import job_env, sweep_runs, toy_command
from toy_study import STUDY as TOY

from tune_jobs.core.errors import ConfigError
from tune_jobs.core.extend import extend, extended_overrides, run_plan
from tune_jobs.core.plan import compose, plan
from tune_jobs.core.space import load_experiment

GRID = """\
study: toy
metric: val/score
mode: max
seeds: 2
fixed: {trainer.epochs: 2, trainer.first: 1, trainer.noise: 0.05}
space:
  trainer.quality: {grid: [0.5, 0.9]}
"""

SEARCH = """\
study: toy
metric: val/score
mode: max
search: SEARCH
num_samples: 3
fixed: {trainer.epochs: 1, trainer.first: 1}
space:
  trainer.quality: {uniform: [0.1, 1.0]}
"""


def run(workdir: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    out = subprocess.run(
        toy_command(workdir / f"{name}.yaml", *args),
        cwd=workdir,
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def sweep_id(workdir: Path, name: str) -> str:
    (folder,) = (workdir / "results" / "ray").glob(f"{name}-*")
    return folder.name.removeprefix(f"{name}-")


def test_more_seeds_for_a_finished_grid_run_only_the_missing_ones(tmp_path):
    (tmp_path / "grid.yaml").write_text(GRID)
    run(tmp_path, "grid")
    sid = sweep_id(tmp_path, "grid")
    before = {r.info.run_id: (r.info.start_time, r.info.end_time) for r in sweep_runs(tmp_path, "grid")[2]}

    dry = run(tmp_path, "grid", "--resume", sid, "sweep.seeds=3", "--dry-run")
    assert "2 new trials:" in dry.stdout and "quality=0.5,seed=2" in dry.stdout and "seed=1" not in dry.stdout
    out = run(tmp_path, "grid", "--resume", sid, "sweep.seeds=3")
    assert f"sweep {sid}: 6 trials, 0 failed; best point quality=0.9" in out.stdout

    _, (parent,), trials = sweep_runs(tmp_path, "grid")
    assert sorted((r.data.tags["sweep.point_group"], r.data.tags["sweep.seed"]) for r in trials) == [
        ('{"trainer.quality": 0.5}', s) for s in "012"
    ] + [('{"trainer.quality": 0.9}', s) for s in "012"]  # each point on each seed once
    after = {r.info.run_id: (r.info.start_time, r.info.end_time) for r in trials}
    assert {k: after[k] for k in before} == before  # the first four ran once, untouched
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["sweep.seeds"] == "3" and parent.data.tags["sweep.trials"] == "6"
    (summary,) = (tmp_path / "results" / "toy").glob(f"grid-{sid}/sweep_summary.md")
    assert "| quality=0.9 | 3 |" in summary.read_text() and "| quality=0.5 | 3 |" in summary.read_text()
    record = json.loads((tmp_path / "results" / "ray" / f"grid-{sid}" / "sweep.json").read_text())
    assert record["overrides"] == ["sweep.seeds=3"] and len(record["points"]) == 6

    again = run(tmp_path, "grid", "--resume", sid)  # the extended sweep resumes as a whole: nothing to run
    assert f"sweep {sid}: 6 trials, 0 failed" in again.stdout
    assert len(sweep_runs(tmp_path, "grid")[2]) == 6


@pytest.mark.parametrize(("search", "more"), [("optuna", 10), ("random", 2)])
def test_more_samples_for_a_finished_search_run_exactly_the_new_ones(tmp_path, search, more):
    (tmp_path / "drawn.yaml").write_text(SEARCH.replace("SEARCH", search))
    run(tmp_path, "drawn")
    sid = sweep_id(tmp_path, "drawn")
    old = {float(r.data.params["trainer.quality"]) for r in sweep_runs(tmp_path, "drawn")[2]}

    out = run(tmp_path, "drawn", "--resume", sid, f"sweep.num_samples={3 + more}")
    assert out.stdout.count(" started ") == more
    trials = sweep_runs(tmp_path, "drawn")[2]
    assert len(trials) == 3 + more and {r.info.status for r in trials} == {"FINISHED"}
    new = {float(r.data.params["trainer.quality"]) for r in trials} - old
    assert len(new) == more  # new samples, not the first ones drawn again
    if search == "optuna":
        (db,) = (tmp_path / "results" / "ray").glob("drawn-*/optuna.db")
        (study,) = optuna.get_all_study_names(f"sqlite:///{db}")
        history = optuna.load_study(study_name=study, storage=f"sqlite:///{db}").trials
        assert [t.number for t in history] == list(range(3 + more))  # one study, its old trials first
        assert {t.state.name for t in history} == {"COMPLETE"}
        assert sorted(t.params["trainer.quality"] for t in history[:3]) == pytest.approx(sorted(old))


def plans(tmp_path: Path, text: str, more: list[str]):
    (tmp_path / "x.yaml").write_text(text)
    experiment = load_experiment(tmp_path / "x.yaml")
    old = plan(compose(TOY, experiment))
    return old, plan(compose(TOY, experiment, overrides=extended_overrides([], more)))


@pytest.mark.parametrize(
    ("text", "more", "finished", "message"),
    [
        (GRID, ["sweep.seeds=1"], True, r"^sweep S ran sweep.num_samples=1 sweep.seeds=2; --resume adds trials"),
        (GRID, ["sweep.seeds=3"], False, r"^sweep S has not finished; finish it first with: RESUME, then extend it$"),
        (
            GRID.replace("seeds: 2\n", "scheduler: {kind: asha, max_t: 2}\n"),
            ["sweep.seeds=1"],
            True,
            None,
        ),
        (
            SEARCH.replace("SEARCH", "optuna") + "seeds: 2\n",
            ["sweep.seeds=3"],
            True,
            r"^sweep.seeds: the Optuna study of sweep S was told each point's mean over 2 seeds",
        ),
        (
            SEARCH.replace("SEARCH", "optuna") + "scheduler: {kind: asha, max_t: 2}\n",
            ["sweep.num_samples=5"],
            True,
            r"^sweep S runs under asha, whose rungs were decided without the new trials; start a new sweep",
        ),
    ],
)
def test_what_cannot_be_extended_is_one_line(tmp_path, text, more, finished, message):
    old, new = plans(tmp_path, text, more)
    if message is None:  # asking for what it has is no extension
        assert extend(old, new, sweep_id="S", finished=finished, resume="RESUME") == (old, {})
        return
    with pytest.raises(ConfigError, match=message):
        extend(old, new, sweep_id="S", finished=finished, resume="RESUME")


def test_an_extension_of_a_slice_of_a_grid_stays_in_the_slice(tmp_path):
    (tmp_path / "x.yaml").write_text(GRID.replace("[0.5, 0.9]", "[0.5, 0.7, 0.9]"))
    experiment = load_experiment(tmp_path / "x.yaml")
    old = plan(compose(TOY, experiment), start_from=3, stop_at=4)  # quality 0.7 on seeds 0 and 1
    new = plan(compose(TOY, experiment, overrides=["sweep.seeds=3"]))
    wider, share = extend(old, new, sweep_id="S", finished=True, resume="")
    assert [t.point for t in wider.trials] == [{"trainer.quality": 0.7, "seed": s} for s in (0, 1, 2)]
    assert share == {"points": [{"trainer.quality": 0.7, "seed": 2}]}
    assert [t.point for t in run_plan(wider, share).trials] == share["points"]


def test_a_driver_killed_before_the_extensions_tune_run_saved_starts_that_run_anew(tmp_path):
    """The record names the extension before Tune writes the new run's tuner.pkl: a kill in
    between leaves the finished run's, which a plain --resume must not restore (it holds none
    of the new trials)."""
    import os

    from tune_jobs.core.runner import _tune_run_saved
    from tune_jobs.core.tracking.sweep_file import SweepRecord

    record = SweepRecord(study="toy", sweep_id="s", tracking_uri="sqlite:///m.db")
    extended = SweepRecord(
        study="toy", sweep_id="s", tracking_uri="sqlite:///m.db", extension={"points": [{"seed": 2}]}
    )
    assert not _tune_run_saved(tmp_path, record)  # no Tune run saved yet
    (tmp_path / "tuner.pkl").write_bytes(b"the finished run")
    extended.write(tmp_path)
    os.utime(tmp_path / "tuner.pkl", (1, 1))  # older than the record
    assert _tune_run_saved(tmp_path, record) and not _tune_run_saved(tmp_path, extended)
    (tmp_path / "tuner.pkl").write_bytes(b"the extension's run")  # Tune saved it: resume it
    assert _tune_run_saved(tmp_path, extended)
