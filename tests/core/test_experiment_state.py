"""The driver's bookkeeping for Tune: result.json written to the sweep folder as results come,
and checkpoints pruned so that the ones Tune's recent saves point to survive (a resume
restores from them). Real folders; the trials are the parts of Tune's Trial these callbacks read."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

from tracking_helpers import new_sweep, refused_twice, resume_args

from tune_jobs.core.experiment_state import (
    CheckpointPruner,
    ResultLog,
    checkpoint_save_period,
    configure_experiment_state,
    save_period,
)
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
