"""The Ray adapter's restore, without a Ray cluster: the chain of a trial's checkpoints as Tune
hands them over (real `ray.tune.Checkpoint`s on the local filesystem), the fallback through it,
and the driver's one line instead of Tune's traceback when none loads."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
import torch
from helpers import ROOT
from ray.exceptions import RayTaskError
from ray.tune import Checkpoint

from trainables.common import NoLoadableCheckpoint, save_state
from trainables.common.context import STATE_FILE, restore_newest
from tune_jobs.core.adapter import checkpoint_chain, quiet_restore_failures
from tune_jobs.core.ray_compat import TUNE_CONTROLLER_LOGGER


def trial_with_checkpoints(path: Path, indices: list[int]) -> Path:
    for i in indices:
        save_state({"step": i, "w": torch.full((3,), float(i))}, path / f"checkpoint_{i:06d}" / STATE_FILE)
    (path / "artifacts").mkdir(parents=True, exist_ok=True)  # not a checkpoint: never in the chain
    return path


def test_the_chain_is_tunes_checkpoint_then_the_older_ones_newest_first(tmp_path):
    trial = trial_with_checkpoints(tmp_path / "trial", [3, 4, 5, 7])
    chain = checkpoint_chain(Checkpoint(str(trial / "checkpoint_000005")))
    # checkpoint_000007 was written after the driver's last save: Tune does not know it.
    assert [label for label, _ in chain] == [str(trial / f"checkpoint_00000{i}" / STATE_FILE) for i in (5, 4, 3)]
    assert [load()["step"] for _, load in chain] == [5, 4, 3]


def test_a_damaged_or_vanished_newest_checkpoint_falls_back_to_the_older(tmp_path, caplog):
    trial = trial_with_checkpoints(tmp_path / "trial", [0, 1])
    newest = trial / "checkpoint_000001"
    data = bytearray((newest / STATE_FILE).read_bytes())
    data[-200:-150] = b"\x00" * 50  # bytes overwritten near the end (the zip's central directory)
    (newest / STATE_FILE).write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        state = restore_newest(checkpoint_chain(Checkpoint(str(newest))), trial="trial t")
    assert state["step"] == 0
    assert f"skipped the unreadable checkpoint {newest / STATE_FILE}: damaged" in caplog.text

    shutil.rmtree(newest)  # Tune still names it, but the folder is gone
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        state = restore_newest(checkpoint_chain(Checkpoint(str(newest))), trial="trial t")
    assert state["step"] == 0 and "missing: its checkpoint folder is gone" in caplog.text


def test_none_loads_one_line_with_the_command_to_start_over(tmp_path):
    trial = trial_with_checkpoints(tmp_path / "trial", [0, 1])
    for i in (0, 1):
        (trial / f"checkpoint_00000{i}" / STATE_FILE).write_bytes(b"")
    with pytest.raises(NoLoadableCheckpoint) as caught:
        restore_newest(
            checkpoint_chain(Checkpoint(str(trial / "checkpoint_000001"))),
            trial="trial n_components=2 (abc_00000)",
            how_to_start_over="to start it over from scratch: python tune_jobs/phase1.py --resume S --start-over abc_00000",
        )
    assert str(caught.value) == (
        f"trial n_components=2 (abc_00000): no checkpoint of it loads ({trial}/checkpoint_000001/state.pt: empty "
        "(0 bytes); the older checkpoint_000000: empty (0 bytes)); to start it over from scratch: "
        "python tune_jobs/phase1.py --resume S --start-over abc_00000"
    )


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def test_the_driver_logs_a_trial_without_a_loadable_checkpoint_as_one_line_once():
    quiet_restore_failures()
    quiet_restore_failures()  # installed once, however often trainables are made
    logger = logging.getLogger(TUNE_CONTROLLER_LOGGER)
    assert sum(type(f).__name__ == "OneLineRestoreFailure" for f in logger.filters) == 1
    lines = Lines()
    logger.addHandler(lines)
    try:
        cause = NoLoadableCheckpoint("trial x (t1): no checkpoint of it loads (/a/state.pt: empty (0 bytes))")
        # What Tune logs: Ray's error for the task, carrying the trainable's exception and traceback.
        error = RayTaskError("train", "Traceback (most recent call last):\n  File ...\n" * 20, cause)
        error = error.as_instanceof_cause()
        for _ in range(3):  # the first try and Tune's max_failures=2 retries
            logger.error("Trial task failed for trial phase1_t1", exc_info=error)
        other = RuntimeError("a bug")
        logger.error("Trial task failed for trial phase1_t2", exc_info=other)
    finally:
        logger.removeHandler(lines)
    first, rest = lines.records[0], lines.records[1:]
    assert first.getMessage() == str(cause) and first.exc_info is None
    # A failure of another kind keeps Tune's message and its traceback.
    assert [(r.getMessage(), r.exc_info[1]) for r in rest] == [("Trial task failed for trial phase1_t2", other)]


def test_a_trial_s_thread_count_reaches_torch_whether_imported_before_or_after():
    """limit_threads leaves torch unimported (a trainable without tensors never pays for it),
    and torch, imported later by the trainable or already by an earlier trial, uses the count."""
    import subprocess
    import sys

    code = (
        "import sys; from tune_jobs.core.adapter import limit_threads; limit_threads(1);"
        "assert 'torch' not in sys.modules; import torch; a = torch.get_num_threads();"
        "limit_threads(2); print(a, torch.get_num_threads())"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.split() == ["1", "2"], out.stdout + out.stderr
