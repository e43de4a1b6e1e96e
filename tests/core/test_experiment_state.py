"""The driver's bookkeeping for Tune: result.json written to the sweep folder as results come,
and checkpoints pruned so that the ones Tune's recent saves point to survive (a resume
restores from them). Real folders; the trials are the parts of Tune's Trial these callbacks read."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from types import SimpleNamespace

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler
from scheduler_fakes import Controller, asha
from tracking_helpers import new_sweep, refused_twice, resume_args

from tune_jobs.core.experiment_state import (
    CheckpointPruner,
    ResultLog,
    SweepScheduler,
    checkpoint_save_period,
    configure_experiment_state,
    save_period,
)
from tune_jobs.core.schedulers import ended_trials
from tune_jobs.core.tracking.shapes import parse_rung_event
from tune_jobs.core.tracking.sweep_file import DAMAGED_FIX


class FakeTrial:
    def __init__(self, trial_id: str, path: Path) -> None:
        self.trial_id, self.path = trial_id, str(path)
        self.checkpoint = None  # Tune's newest registered checkpoint


def write_checkpoint(trial: FakeTrial, index: int) -> SimpleNamespace:
    path = Path(trial.path) / f"checkpoint_{index:06d}"
    path.mkdir(parents=True)
    (path / "state.pt").write_bytes(b"x" * 10)
    return SimpleNamespace(path=str(path))


def register(pruner: CheckpointPruner, trial: FakeTrial, index: int) -> None:
    """As Tune does: callbacks hear of the checkpoint, then the trial registers it."""
    checkpoint = write_checkpoint(trial, index)
    pruner.on_checkpoint(0, [], trial, checkpoint)
    trial.checkpoint = checkpoint


def on_disk(trial: FakeTrial) -> list[int]:
    return sorted(int(p.name.split("_")[1]) for p in Path(trial.path).glob("checkpoint_*"))


def test_result_log_appends_every_result_to_the_trials_result_json(tmp_path):
    trial = FakeTrial("t1", tmp_path / "trial_t1")
    log = ResultLog()
    for step in range(3):
        log.on_trial_result(0, [], trial, {"step": step, "val/x": 0.5, "config": {"big": "not kept"}})
    rows = [json.loads(line) for line in (tmp_path / "trial_t1" / "result.json").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2] and "config" not in rows[0]


def test_the_pruner_keeps_the_newest_two_and_what_tunes_last_saves_point_to_with_its_fallback(tmp_path):
    pruner = CheckpointPruner(keep=2)
    pruner.setup()
    a = FakeTrial("a", tmp_path / "a")
    for i in range(4):
        register(pruner, a, i)
    assert on_disk(a) == [2, 3]  # no save of Tune's points to any of them yet

    pruner.get_state()  # Tune saves its state now: it points to checkpoint 3
    for i in range(4, 8):
        register(pruner, a, i)
    assert on_disk(a) == [2, 3, 6, 7]  # 3 is what the save on disk would restore; 2 if 3 is damaged
    pruner.get_state()  # points to 7
    pruner.get_state()  # points to 7
    register(pruner, a, 8)
    assert on_disk(a) == [2, 3, 6, 7, 8]  # three saves back still points to 3 (maybe being copied)
    pruner.get_state()  # points to 8; the save pointing to 3 is no longer among the last three
    register(pruner, a, 9)
    assert on_disk(a) == [6, 7, 8, 9]
    # At the end Tune's last save points to each trial's newest checkpoint: the newest two stay.
    pruner.on_experiment_end([])
    assert on_disk(a) == [8, 9]


def test_a_resumed_trial_keeps_the_checkpoint_it_was_restored_from_until_a_newer_save(tmp_path):
    a = FakeTrial("a", tmp_path / "a")
    write_checkpoint(a, 0)
    restored = write_checkpoint(a, 1)
    a.checkpoint = restored  # what Tune's saved state points to: the restore starts there
    pruner = CheckpointPruner(keep=2)
    pruner.setup()  # the resumed driver's pruner knows no checkpoint yet
    for i in (2, 3, 4):
        register(pruner, a, i)
    assert 1 in on_disk(a) and on_disk(a)[-2:] == [3, 4]
    for _ in range(3):  # three saves since the restore: none points to 1 any more
        pruner.get_state()
    register(pruner, a, 5)
    assert on_disk(a) == [0, 3, 4, 5]  # 0 predates this driver (not Tune's), left alone; 3 backs up 4


def test_tune_saves_its_state_less_often_the_more_trials_so_the_bytes_per_trial_stay_flat(monkeypatch):
    monkeypatch.delenv("TUNE_GLOBAL_CHECKPOINT_S", raising=False)
    assert save_period(8) == save_period(100) == 10.0  # Tune's own floor
    assert save_period(1000) == 100.0
    assert save_period(1000) / 1000 == save_period(200) / 200
    assert checkpoint_save_period(8) == 60.0 and checkpoint_save_period(1000) == 100.0  # checkpoints alone


def test_tunes_own_save_timer_is_a_backstop_unless_the_user_set_it(monkeypatch):
    monkeypatch.delenv("TUNE_GLOBAL_CHECKPOINT_S", raising=False)
    configure_experiment_state()
    assert os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == "600"
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "30")  # the user's
    configure_experiment_state()
    assert os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == "30"
    assert save_period(1000) == 30.0  # the user's period is the sweep's too
    assert checkpoint_save_period(8) == 30.0  # for checkpoints alone too


def test_tunes_list_of_a_trials_checkpoints_holds_only_those_on_disk_so_its_saves_stay_small(tmp_path):
    from ray.train import Checkpoint, CheckpointConfig
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.train._internal.session import _TrainingResult

    a = FakeTrial("a", tmp_path / "a")
    a.run_metadata = SimpleNamespace(checkpoint_manager=_CheckpointManager(CheckpointConfig()))
    manager = a.run_metadata.checkpoint_manager
    pruner = CheckpointPruner(keep=2)
    pruner.setup()
    for i in range(20):
        checkpoint = write_checkpoint(a, i)
        manager.register_checkpoint(_TrainingResult(Checkpoint(checkpoint.path), {"step": i}))
        pruner.on_checkpoint(0, [], a, checkpoint)
        a.checkpoint = checkpoint
        if i % 5 == 4:
            pruner.get_state()  # Tune saves now and then
    listed = sorted(int(Path(r.checkpoint.path).name.split("_")[1]) for r in manager.best_checkpoint_results)
    assert listed == on_disk(a) and len(listed) <= 2 + 2 * 3  # the newest two, the pinned and their fallbacks
    assert manager.latest_checkpoint_result.checkpoint.path == a.checkpoint.path


def test_an_experiment_state_of_the_wrong_shape_stops_the_resume_before_ray(tmp_path):
    sweep = new_sweep(tmp_path)
    (sweep / "experiment_state-2099-01-01_00-00-00.json").write_text('{"trial_data": null}')
    line = refused_twice(resume_args(tmp_path), tmp_path)
    assert line.startswith(f"error: {sweep / 'experiment_state-2099-01-01_00-00-00.json'} is damaged: ")
    assert line.endswith(DAMAGED_FIX)


def test_a_trial_result_line_of_the_wrong_shape_is_no_last_result(tmp_path):
    from types import SimpleNamespace

    from tune_jobs.core.experiment_state import RESULT_FILE, last_logged_result

    (tmp_path / RESULT_FILE).write_text('{"training_iteration": 3}\n[1, 2]\nnull\n')
    assert last_logged_result(SimpleNamespace(path=str(tmp_path))) == {"training_iteration": 3}
    assert parse_rung_event(b'{"event": "end", "trial": "a"}\n') == {"event": "end", "trial": "a"}
    for bad in (b"[]", b"null", b'{"event": "rung", "trial": "a", "rung": 0, "score": "x"}', b'{"event": "end"}'):
        assert parse_rung_event(bad) is None


# -- SweepScheduler: a resumed sweep's ended trials, and when Tune saves its state --


def write_mirror(sweep_dir, trials: dict) -> None:
    """A sweep record (mlflow_runs.json) as the tracker writes it, holding `trials`."""
    base = {"name": "t", "point": {}, "start_ms": 0, "params_logged": True, "ended": False}
    state = {
        "experiment": "e",
        "tags": {},
        "base": {},
        "run_prefix": "e",
        "start_ms": 0,
        "trials": {tid: {**base, **entry} for tid, entry in trials.items()},
        "journal_offset": 0,
        "parent_cfg_logged": True,
        "ended": False,
    }
    (sweep_dir / "mlflow_runs.json").write_text(json.dumps(state))


def test_a_resumed_sweep_files_the_trials_its_record_says_ended_as_ended(tmp_path):
    write_mirror(
        tmp_path,
        {
            "done": {"status": "FINISHED", "end_tags": {"sweep.status": "finished"}},
            "broke": {"status": "FAILED", "end_tags": {"sweep.status": "error"}},
            "nan": {"status": "FAILED", "end_tags": {"sweep.status": "diverged"}},
            "running": {"name": "x"},
        },
    )
    inner = asha(journal=str(tmp_path / "asha_rungs.jsonl"))
    s = SweepScheduler(inner, sweep_dir=str(tmp_path), ended_trials=ended_trials)
    ctl = Controller(s, finished=False)
    done, broke, nan, running, new = ctl.add("done", "broke", "nan", "running", "new")
    assert (done.status, broke.status, nan.status) == (Trial.TERMINATED, Trial.ERROR, Trial.TERMINATED)
    assert running.status == new.status == Trial.PENDING
    # The search hears of their end (a concurrency limit frees their places)...
    assert ctl.search_alg.completed == [("done", False), ("broke", True), ("nan", False)]
    # ... and the scheduler never sees them (nor counts one as waiting at a rung).
    assert set(inner._trials) == {"running", "new"}
    assert inner._ended == {"done", "broke", "nan"}


def test_a_trial_that_ended_after_tunes_last_save_tells_the_search_its_last_logged_result(tmp_path):
    write_mirror(tmp_path, {"done": {"status": "FINISHED", "end_tags": {"sweep.status": "finished"}}})
    trial_dir = tmp_path / "done_trial"
    trial_dir.mkdir()
    rows = [{"training_iteration": i, "score": s} for i, s in ((1, 0.1), (2, 0.7))]
    lines = "".join(json.dumps(r) + "\n" for r in rows)
    (trial_dir / "result.json").write_text(lines + '{"training_iteration": 3, "sc')  # torn last line

    class Restored(Trial):  # as Tune restores it: the trial folder, and its result at the older save
        path = str(trial_dir)

    s = SweepScheduler(FIFOScheduler(), sweep_dir=str(tmp_path), ended_trials=ended_trials)
    ctl = Controller(s)
    done = Restored("__fake", config={}, trial_id="done", stub=True)
    done.run_metadata.last_result = {"training_iteration": 1, "score": 0.1}
    s.on_trial_add(ctl, done)
    assert done.status == Trial.TERMINATED
    assert ctl.search_alg.results["done"] == rows[-1] == done.run_metadata.last_result


def test_save_on_add_saves_tunes_state_once_per_step_that_added_trials():
    s = SweepScheduler(FIFOScheduler(), save_on_add=True)
    ctl = Controller(s)
    ctl.add("a", "b")
    s.choose_trial_to_run(ctl)
    s.choose_trial_to_run(ctl)
    assert ctl.saves == [True]  # before the trials' workers start, and waiting for the copy
    ctl.add("c")
    s.choose_trial_to_run(ctl)
    assert ctl.saves == [True, True]


def test_tune_saves_its_state_when_something_a_resume_needs_changed_at_most_every_period(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("tune_jobs.core.experiment_state.time.monotonic", lambda: clock[0])
    s = SweepScheduler(FIFOScheduler(), save_every=10)
    s.set_search_properties("score", "max")
    ctl = Controller(s)

    def step(advance: float, result: dict | None = None) -> None:
        clock[0] += advance
        if result is not None:
            a.set_status(Trial.RUNNING)
            s.on_trial_result(ctl, a, {"training_iteration": 1, "score": 1.0, **result})
        s.choose_trial_to_run(ctl)

    (a,) = ctl.add("a")
    step(0)
    assert ctl.saves == [False]  # a trial was added
    for _ in range(3):  # results without a checkpoint: nothing a resume restores from changed
        step(20, {"checkpoint_dir_name": None})
    assert ctl.saves == [False]
    step(1, {"checkpoint_dir_name": "checkpoint_000000"})
    assert ctl.saves == [False, False]  # a checkpoint, 61 s after the last save
    step(4, {"checkpoint_dir_name": "checkpoint_000001"})
    assert ctl.saves == [False, False]  # 4 s after the last save: later
    step(6)
    assert ctl.saves == [False, False]  # a checkpoint alone waits 60 s
    step(49)
    assert ctl.saves == [False, False]
    step(1)
    assert ctl.saves == [False, False, False]
    step(4, {"checkpoint_dir_name": "checkpoint_000002"})
    s.on_trial_complete(ctl, a, {})  # an end does not wait for the checkpoints' period
    step(1)
    assert len(ctl.saves) == 3
    step(5)
    assert len(ctl.saves) == 4  # the trial's end, 10 s after the last save
    step(60)
    assert len(ctl.saves) == 4  # nothing changed since


def test_trials_keep_no_running_means_in_tunes_saved_state_so_each_save_is_smaller():
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    metrics = [f"m{i}" for i in range(30)]

    def fill(meta, steps: range) -> None:
        for step in steps:
            for i, m in enumerate(metrics):
                meta.update_metric(m, float(step * i), step=step + 1)

    plain = _TrainingRunMetadata()
    fill(plain, range(20))
    s = SweepScheduler(FIFOScheduler())
    ctl = Controller(s)
    (fresh,) = ctl.add("fresh")
    fill(fresh.run_metadata, range(20))
    assert not any(fresh.run_metadata.metric_n_steps.values())
    assert fresh.run_metadata.metric_analysis["m3"] == {"max": 57.0, "min": 0.0, "avg": 28.5, "last": 57.0}
    assert len(fresh.run_metadata.get_json_state()) < 0.45 * len(plain.get_json_state())

    # A trial restored from a save written before: its running means go at once.
    restored = Trial("__fake", config={}, trial_id="restored", stub=True)
    restored.restore_run_metadata(plain.get_json_state())
    s.on_trial_add(ctl, restored)
    fill(restored.run_metadata, range(20, 25))
    assert not any(restored.run_metadata.metric_n_steps.values())
    assert set(restored.run_metadata.metric_analysis["m3"]) == {"max", "min", "avg", "last"}
    assert restored.run_metadata.metric_analysis["m3"]["max"] == 72.0


def test_a_scheduler_pickled_before_the_checkpoint_period_existed_gets_the_default():
    s = SweepScheduler.__new__(SweepScheduler)
    s.__setstate__({"inner": FIFOScheduler(), "sweep_dir": None, "save_on_add": False, "save_every": 10.0})
    assert s.checkpoint_save_every == 60.0 and not s._checkpointed
    assert (
        pickle.loads(pickle.dumps(SweepScheduler(FIFOScheduler(), checkpoint_save_every=5))).checkpoint_save_every == 5
    )
