"""The trial context's checkpoints without Ray: what counts as unreadable, the fallback to the
newest checkpoint that loads, the one line when none does, and LocalContext's two checkpoints."""

from __future__ import annotations

import collections
import logging
import pickle
import shutil
from functools import partial
from pathlib import Path

import pytest
import torch
from helpers import Interrupt, StopAfter

from trainables.common import LocalContext, NoLoadableCheckpoint, UnreadableCheckpoint, load_state, save_state
from trainables.common.context import STATE_FILE, restore_newest
from trainables.phase1 import Config
from trainables.phase1.train import train
from tune_jobs.core.config import build_config


class Exploit:
    def __reduce__(self):
        return (exec, ("import tests_exploit_marker",))  # would raise ImportError if ever run


def a_state(step: int) -> dict:
    return {"step": step, "w": torch.arange(2000.0) + step, "rng": torch.get_rng_state()}


def record(path: Path, suffix: str = "") -> tuple[int, int]:
    """(start, size) of the bytes of a zip record: the one ending in `suffix`, else the largest
    (a tensor's data)."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        infos = [i for i in z.infolist() if i.filename.endswith(suffix)] if suffix else z.infolist()
        info = max(infos, key=lambda i: i.file_size)
    return info.header_offset + 30 + len(info.filename.encode()) + len(info.extra), info.file_size


# Each way a checkpoint file goes bad, as (what it does to the file, what the message says).
def overwrite_tensor_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    start, size = record(path)
    middle = start + size // 2
    data[middle : middle + 64] = b"\xa5" * 64
    path.write_bytes(bytes(data))


def overwrite_pickle_bytes(path: Path, name: str = "data.pkl") -> None:
    data = bytearray(path.read_bytes())
    start = record(path, name)[0] + 10
    data[start : start + 32] = b"\x00" * 32
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def empty(path: Path) -> None:
    path.write_bytes(b"")


def remove_file(path: Path) -> None:
    path.unlink()


def remove_folder(path: Path) -> None:
    shutil.rmtree(path.parent)


def a_tensor(path: Path) -> None:
    torch.save(torch.zeros(3), path)


def model_weights(path: Path) -> None:
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)


def unmarked_dict(path: Path) -> None:
    torch.save({"model": torch.nn.Linear(2, 2).state_dict(), "epoch": 3}, path)


def holding_code(path: Path) -> None:
    torch.save({"step": 3, "payload": Exploit()}, path)


DAMAGE = {
    "bytes overwritten in a tensor": (overwrite_tensor_bytes, "damaged: bytes overwritten (record"),
    "bytes overwritten in the pickle": (overwrite_pickle_bytes, "damaged: bytes overwritten (record"),
    "truncated": (truncate, "damaged: its zip structure is broken"),
    "zero bytes": (empty, "empty (0 bytes)"),
    "state file missing": (remove_file, "missing from its checkpoint folder"),
    "folder missing": (remove_folder, "missing: its checkpoint folder is gone"),
    "a tensor": (a_tensor, "not a trial state written by save_state (it holds torch.Tensor)"),
    "a model's weights": (model_weights, "not a trial state written by save_state (it holds collections.OrderedDict"),
    "another dict": (unmarked_dict, "not a trial state written by save_state (it holds dict without"),
    "code": (holding_code, "refused: it holds code or objects beyond tensors and plain data (Unsupported global"),
}


def plain_state(step: int) -> dict:
    return {"step": step, "best": 0.25, "history": [1.0, 0.5], "name": "x", "seen": {1, 2}, "pair": (1, None)}


def plain_holding_code(path: Path) -> None:
    """save_state's plain zip, its pickle swapped for one that would run exec."""
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("state.pkl", pickle.dumps({"step": 3, "payload": Exploit()}))


PLAIN_DAMAGE = {
    "bytes overwritten in the pickle": (
        partial(overwrite_pickle_bytes, name="state.pkl"),
        "damaged: bytes overwritten (record state.pkl",
    ),
    "truncated": (truncate, "damaged: its zip structure is broken"),
    "zero bytes": (empty, "empty (0 bytes)"),
    "code": (plain_holding_code, "refused: it holds code or objects beyond tensors and plain data (builtins.exec)"),
}


@pytest.mark.parametrize("kind", [*DAMAGE, *(f"plain, {k}" for k in PLAIN_DAMAGE)])
def test_every_kind_of_bad_checkpoint_is_one_line_naming_the_file_and_what_is_wrong(tmp_path, kind):
    state, damage, says = (
        (plain_state, *PLAIN_DAMAGE[kind[7:]]) if kind.startswith("plain, ") else (a_state, *DAMAGE[kind])
    )
    path = tmp_path / "checkpoint_000001" / STATE_FILE
    save_state(state(1), path)
    damage(path)
    with pytest.raises(UnreadableCheckpoint) as caught:
        load_state(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and says in message, message
    assert "\n" not in message and "weights_only" not in message  # never the advice to load unsafely
    assert pickle.loads(pickle.dumps(caught.value)).why == caught.value.why  # crosses Ray's process boundary


def test_torch_alone_loads_overwritten_tensor_bytes_without_a_word(tmp_path):
    """Why load_state checks the zip records' CRC-32 first: torch.load returns the damaged numbers."""
    path = tmp_path / "state.pt"
    save_state(a_state(1), path)
    overwrite_tensor_bytes(path)
    silently = torch.load(path, weights_only=True)
    assert not torch.equal(silently["w"], a_state(1)["w"])
    with pytest.raises(UnreadableCheckpoint, match=r"bytes overwritten \(record data/\d+ fails its CRC-32 check\)"):
        load_state(path)


def test_a_state_loads_as_it_was_saved_without_the_mark(tmp_path):
    state = a_state(7)
    save_state(state, tmp_path / "s.pt")
    back = load_state(tmp_path / "s.pt")
    assert set(back) == set(state) and back["step"] == 7
    assert torch.equal(back["w"], state["w"]) and torch.equal(back["rng"], state["rng"])


def test_a_state_of_plain_data_is_saved_and_loaded_without_importing_torch(tmp_path):
    """A trainable without tensors never pays for torch's import in its worker."""
    import subprocess
    import sys

    code = (
        "import sys; from pathlib import Path; from trainables.common.context import save_state, load_state;"
        f"state = {plain_state(4)!r}; path = Path({str(tmp_path / 's.pt')!r});"
        "save_state(state, path); assert load_state(path) == state, load_state(path);"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stdout + out.stderr
    # A state holding a tensor still goes through torch, and loads as it was saved.
    save_state({**plain_state(5), "w": torch.ones(2)}, tmp_path / "t.pt")
    back = load_state(tmp_path / "t.pt")
    assert back["step"] == 5 and torch.equal(back["w"], torch.ones(2)) and back["seen"] == {1, 2}


def two_checkpoints(path: Path) -> LocalContext:
    ctx = LocalContext(path)
    for step in (1, 2, 3):
        ctx.report({"step": step}, a_state(step))
    return ctx


def test_local_context_keeps_the_last_two_checkpoints_in_numbered_folders(tmp_path):
    ctx = two_checkpoints(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("checkpoint_*")) == ["checkpoint_000001", "checkpoint_000002"]
    assert ctx.checkpoint_path == tmp_path / "checkpoint_000002" / STATE_FILE
    assert LocalContext(tmp_path).restored_state()["step"] == 3
    assert (
        LocalContext(tmp_path / "new").restored_state() is None
        and LocalContext(tmp_path / "new").checkpoint_path is None
    )


# A LocalContext knows its checkpoints by their folders: one whose folder is gone is not one
# (Tune, which keeps its own list, is covered in test_adapter.py).
@pytest.mark.parametrize("kind", [k for k in DAMAGE if k != "folder missing"])
def test_a_bad_newest_checkpoint_falls_back_to_the_older_with_one_warning(tmp_path, kind, caplog):
    damage, says = DAMAGE[kind]
    ctx = two_checkpoints(tmp_path)
    newest = ctx.checkpoint_path
    damage(newest)
    with caplog.at_level(logging.WARNING):
        state = LocalContext(tmp_path).restored_state()
    assert state["step"] == 2 and torch.equal(state["w"], a_state(2)["w"])
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    text = warning.getMessage()
    assert f"skipped the unreadable checkpoint {newest}: " in text and says in text, text
    assert text.endswith(f"continuing from the older {tmp_path / 'checkpoint_000001' / STATE_FILE}")
    assert "\n" not in text and "weights_only" not in text


def test_when_no_checkpoint_loads_one_line_names_them_and_how_to_start_over(tmp_path, caplog):
    ctx = two_checkpoints(tmp_path)
    newest, older = ctx.checkpoint_path, tmp_path / "checkpoint_000001" / STATE_FILE
    truncate(newest)
    holding_code(older)
    with pytest.raises(NoLoadableCheckpoint) as caught:
        LocalContext(tmp_path).restored_state()
    message = str(caught.value)
    assert "\n" not in message and "weights_only" not in message
    assert f"({newest}: damaged: its zip structure is broken" in message
    assert "; the older checkpoint_000001: refused: it holds code" in message
    assert message.endswith(f"to start it over from scratch: LocalContext({str(tmp_path)!r}, resume=False)")
    # ... and that is what starts it over: the unreadable checkpoints are gone, training restarts.
    again = LocalContext(tmp_path, resume=False)
    assert again.restored_state() is None and not list(tmp_path.glob("checkpoint_*"))
    again.report({"step": 0}, a_state(0))
    assert LocalContext(tmp_path).restored_state()["step"] == 0


def test_restore_newest_with_start_over_returns_none_and_says_so(caplog):
    def bad():
        raise UnreadableCheckpoint("/x/checkpoint_000004/state.pt", "empty (0 bytes)")

    with caplog.at_level(logging.WARNING):
        assert restore_newest([("/x/checkpoint_000004/state.pt", bad)], trial="trial t", start_over=True) is None
    assert "trial t: no checkpoint loads (/x/checkpoint_000004/state.pt: empty (0 bytes)); starting it over" in (
        caplog.text
    )
    assert restore_newest([], trial="trial t") is None  # never checkpointed: a fresh start, no warning


TINY = {
    "model.n_embd": 16,
    "model.n_layer": 1,
    "model.n_head": 2,
    "trainer.batch_size": 8,
    "trainer.steps": 40,
    "trainer.eval_every": 10,
    "trainer.checkpoint_every": 20,
    "trainer.eval_prompts": 32,
    "trainer.final_eval_prompts": 64,
    "trainer.warmup_steps": 5,
    "data.n_components": 2,
}


def test_a_trainable_resumed_past_a_damaged_checkpoint_ends_as_if_never_stopped(tmp_path, caplog):
    cfg = build_config(Config, TINY)
    straight = LocalContext(tmp_path / "straight")
    train(cfg, straight)

    with pytest.raises(Interrupt):
        train(cfg, StopAfter(tmp_path / "resumed", checkpoints=2))  # checkpoints after steps 0 and 20
    overwrite_tensor_bytes(tmp_path / "resumed" / "checkpoint_000001" / STATE_FILE)
    resumed = LocalContext(tmp_path / "resumed")
    with caplog.at_level(logging.WARNING):
        train(cfg, resumed)
    assert "checkpoint_000001/state.pt: damaged: bytes overwritten" in caplog.text
    assert resumed.history[0]["step"] == 10  # from the step-0 checkpoint, not from scratch
    assert resumed.history == straight.history[1:]  # bit for bit on CPU


def test_not_ours_includes_a_plain_dict_of_tensors_saved_by_torch(tmp_path):
    path = tmp_path / "state.pt"
    torch.save(collections.OrderedDict(w=torch.zeros(1)), path)
    with pytest.raises(UnreadableCheckpoint, match="not a trial state"):
        load_state(path)
