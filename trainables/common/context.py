"""The trainable contract: `train(cfg, ctx)` talks to whoever runs it only through `ctx`.

`ctx.report(metrics, state)` hands over one row of metrics and, when `state` is given, a
checkpoint (model, optimizer, RNG, step: everything needed to continue bit for bit).
`ctx.restored_state()` returns the last such state when the trial is resumed, else None.
Files a trainable writes under `ctx.artifact_dir` (logs, tables, figures, the best model) are
attached to the trial's MLflow run when the trial ends. Tune copies that folder to the sweep's
storage when the trial reports, so write them before the last `ctx.report`.
The Ray adapter (tune_jobs.core.adapter) and `LocalContext` below both implement it, so the
same function runs under Tune, in unit tests and in a notebook.

A checkpoint that cannot be used (missing, empty, truncated, bytes overwritten, holding code,
or not a state written by `save_state`) is never fatal while an older one loads: both contexts
keep the last two, and `restored_state` returns the newest that loads, with one warning naming
the damaged file. When none loads it raises `NoLoadableCheckpoint`: one line naming the files
and how to start the trial over.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
PLAIN_RECORD = "state.pkl"  # the one record of save_state's zip for a state without tensors
# save_state marks what it writes, so a valid torch file that is something else (a model's
# weights, a tensor, another tool's checkpoint) is refused at restore, not used as a state.
STATE_MARK = "tune_sweeps_state"
STATE_VERSION = 1
CHECKPOINT_DIR = re.compile(r"checkpoint_(\d+)")  # Tune's folder names: checkpoint_000003
KEEP_CHECKPOINTS = 2  # as the sweeps keep (CheckpointConfig(num_to_keep=2)): one to fall back on
ARTIFACTS = "artifacts"  # <trial dir>/artifacts/: attached to the trial's MLflow run at its end


class TrialContext(Protocol):
    trial_dir: Path

    @property
    def artifact_dir(self) -> Path:
        """A folder for the trial's files; everything in it ends up in its MLflow run."""

    def report(self, metrics: Mapping[str, float], state: Mapping[str, Any] | None = None) -> None:
        """Hand over one row of metrics (and a checkpoint when `state` is given)."""

    def restored_state(self) -> dict[str, Any] | None:
        """The state of the newest checkpoint that loads when this trial is being resumed, else
        None; NoLoadableCheckpoint (one line) when it has checkpoints and none of them loads."""


def pick_device(name: str) -> torch.device:
    """`auto` is CUDA when present, else the CPU; `cpu` and `cuda` are taken as given."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def user_path(text: str) -> Path:
    """A path from the config; a relative one is taken from where the sweep was started
    (Ray Tune runs each trial inside its own folder and leaves the start folder in
    TUNE_ORIG_WORKING_DIR)."""
    path = Path(text).expanduser()
    if path.is_absolute():
        return path
    return Path(os.environ.get("TUNE_ORIG_WORKING_DIR") or os.getcwd()) / path


def artifact_dir(trial_dir: Path) -> Path:
    path = trial_dir / ARTIFACTS
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def atomic_file(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside `path` to write to; it replaces `path` only when the block ends
    without error, so a reader (or a crash) never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class UnreadableCheckpoint(Exception):
    """A checkpoint that cannot be used; `str()` is one line: the file, then what is wrong."""

    def __init__(self, path: str | os.PathLike[str], why: str) -> None:
        super().__init__(str(path), why)  # both in args: the error crosses processes (Ray) intact
        self.path, self.why = str(path), why

    def __str__(self) -> str:
        return f"{self.path}: {self.why}"


class RefusedCheckpoint(UnreadableCheckpoint, pickle.UnpicklingError):
    """The weights-only loader refused the file: it holds code or objects other than tensors
    and plain data, which a checkpoint never needs."""


class NoLoadableCheckpoint(Exception):
    """None of a trial's checkpoints loads; the message names them and how to start over."""


def save_state(state: Mapping[str, Any], path: Path) -> None:
    """Write a checkpoint atomically: a crash mid-write never leaves a torn file behind.

    A state of plain data (numbers, strings, lists, dicts: no tensor) is written as a zip
    holding one pickle, without torch: a trainable that does not use torch never imports it
    (about 1.3 s of CPU in each of a sweep's workers). Anything else is written by torch.save.
    Both are zips whose records carry a CRC-32, read back by load_state without running code."""
    marked = {**state, STATE_MARK: STATE_VERSION}
    with atomic_file(path) as tmp:
        if _plain(marked):
            with zipfile.ZipFile(tmp, "w") as archive:
                archive.writestr(PLAIN_RECORD, pickle.dumps(marked, protocol=pickle.HIGHEST_PROTOCOL))
        else:
            import torch  # here, not at the top: the sweep's own commands use this module without torch

            torch.save(marked, tmp)


def _plain(obj: Any) -> bool:
    """Whether `obj` is plain data all the way down: a pickle of it builds no object by name."""
    kind = type(obj)
    if kind is dict:
        return all(_plain(k) and _plain(v) for k, v in obj.items())
    if kind in (list, tuple, set, frozenset):
        return all(_plain(v) for v in obj)
    return kind in (str, bytes, int, float, bool, type(None))


class _PlainUnpickler(pickle.Unpickler):
    """Reads plain data only: every object a pickle would build by name is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"{module}.{name}")


def load_state(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by `save_state`, never running code it holds: plain data by a
    loader that builds nothing by name, torch's files with weights_only=True. Anything else
    raises UnreadableCheckpoint, one line saying what is wrong: a missing or empty file, a
    truncated one, bytes overwritten (the zip records carry a CRC-32, checked before loading:
    torch itself would load damaged tensor bytes silently), a file holding code
    (RefusedCheckpoint), or a file that is not a state of ours."""
    path = Path(path)
    plain = _check_file(path)
    if plain is not None:
        try:
            obj = _PlainUnpickler(io.BytesIO(plain)).load()
        except pickle.UnpicklingError as exc:
            raise RefusedCheckpoint(path, _refused(_first_line(exc))) from None
        except Exception as exc:
            raise UnreadableCheckpoint(path, f"damaged: its pickle cannot be read ({_first_line(exc)[:200]})") from None
    else:
        import torch

        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise RefusedCheckpoint(path, _refusal(exc)) from None
        except Exception as exc:
            raise UnreadableCheckpoint(path, f"damaged: torch cannot read it ({_torch_error(exc)})") from None
    if not isinstance(obj, dict) or obj.get(STATE_MARK) != STATE_VERSION:
        raise UnreadableCheckpoint(path, f"not a trial state written by save_state (it holds {_kind(obj)})")
    return {k: v for k, v in obj.items() if k != STATE_MARK}


def _check_file(path: Path) -> bytes | None:
    """Check that `path` is a whole zip whose records pass their CRC-32; return the pickle of a
    plain-data state (save_state's own zip), None for a torch file."""
    if not path.is_file():
        where = (
            "missing from its checkpoint folder" if path.parent.is_dir() else "missing: its checkpoint folder is gone"
        )
        raise UnreadableCheckpoint(path, where)
    size = path.stat().st_size
    if size == 0:
        raise UnreadableCheckpoint(path, "empty (0 bytes)")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()  # reads every record and checks its CRC-32
            plain = archive.read(PLAIN_RECORD) if bad is None and archive.namelist() == [PLAIN_RECORD] else None
    except Exception as exc:
        raise UnreadableCheckpoint(
            path, f"damaged: its zip structure is broken ({size} bytes, truncated or overwritten; {_first_line(exc)})"
        ) from None
    if bad is not None:
        record = bad.split("/", 1)[-1]  # without the archive's own folder, named after a temporary file
        raise UnreadableCheckpoint(path, f"damaged: bytes overwritten (record {record} fails its CRC-32 check)")
    return plain


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _torch_error(exc: BaseException) -> str:
    """torch's reason in a few words, never its advice to load with weights_only=False."""
    text = _first_line(exc)
    return type(exc).__name__ if "weights_only" in text else f"{type(exc).__name__}: {text}"[:200]


def _refusal(exc: pickle.UnpicklingError) -> str:
    """Why the weights-only loader refused the file, without torch's advice to turn it off."""
    found = re.search(r"WeightsUnpickler error: (.+?)(?: was not an allowed global|\. |\.?$)", str(exc), re.M)
    return _refused(found.group(1).strip() if found else "an object it may not build")


def _refused(what: str) -> str:
    return f"refused: it holds code or objects beyond tensors and plain data ({what}), which a checkpoint may not"


def _kind(obj: Any) -> str:
    name = (
        type(obj).__qualname__
        if type(obj).__module__ == "builtins"
        else f"{type(obj).__module__}.{type(obj).__qualname__}"
    )
    return f"{name} without save_state's mark" if isinstance(obj, dict) else name


def restore_newest(
    checkpoints: Iterable[tuple[str, Callable[[], dict[str, Any]]]],
    *,
    trial: str,
    start_over: bool = False,
    how_to_start_over: str = "",
) -> dict[str, Any] | None:
    """The state of the newest checkpoint that loads. `checkpoints` are (state file, loader),
    newest first. Skipped ones are named in one warning; when none loads: with `start_over`
    a warning and None (the trial starts from scratch), else NoLoadableCheckpoint, one line
    naming the files and `how_to_start_over`. No checkpoints at all: None."""
    failed: list[UnreadableCheckpoint] = []
    for label, load in checkpoints:
        try:
            state = load()
        except UnreadableCheckpoint as exc:
            failed.append(exc if exc.path == label else UnreadableCheckpoint(label, exc.why))
            continue
        if failed:
            log.warning(
                "%s: skipped the unreadable checkpoint %s; continuing from the older %s", trial, _named(failed), label
            )
        return state
    if not failed:
        return None
    if start_over:
        log.warning("%s: no checkpoint loads (%s); starting it over from scratch, as asked", trial, _named(failed))
        return None
    message = f"{trial}: no checkpoint of it loads ({_named(failed)})"
    raise NoLoadableCheckpoint(f"{message}; {how_to_start_over}" if how_to_start_over else message)


def _named(failed: list[UnreadableCheckpoint]) -> str:
    """The first (newest) in full; the older ones by their folder, to keep the line short."""
    older = [f"the older {Path(f.path).parent.name}: {f.why}" for f in failed[1:]]
    return "; ".join([str(failed[0]), *older])


def checkpoint_index(name: str) -> int | None:
    """3 for a checkpoint folder named checkpoint_000003, else None."""
    found = CHECKPOINT_DIR.fullmatch(name)
    return int(found.group(1)) if found else None


class LocalContext:
    """Runs a trainable in-process: metrics are kept in a list, the last two checkpoints in
    numbered folders under trial_dir (checkpoint_000000, ...), as Tune keeps them.

    With `resume=False` the folder's checkpoints are deleted first: the trial starts from
    scratch (the way out when none of them loads)."""

    def __init__(self, trial_dir: str | os.PathLike[str], *, resume: bool = True) -> None:
        self.trial_dir = Path(trial_dir)
        self.trial_dir.mkdir(parents=True, exist_ok=True)
        self.history: list[dict[str, float]] = []
        self.checkpoints = 0
        if not resume:
            for folder in self._checkpoint_dirs():
                shutil.rmtree(folder)

    @property
    def artifact_dir(self) -> Path:
        return artifact_dir(self.trial_dir)

    @property
    def checkpoint_path(self) -> Path | None:
        """The newest checkpoint's state file, None before the first."""
        folders = self._checkpoint_dirs()
        return folders[0] / STATE_FILE if folders else None

    def _checkpoint_dirs(self) -> list[Path]:
        """The numbered checkpoint folders, newest first."""
        found = [(checkpoint_index(p.name), p) for p in self.trial_dir.iterdir() if p.is_dir()]
        return [p for i, p in sorted(((i, p) for i, p in found if i is not None), reverse=True)]

    def report(self, metrics: Mapping[str, float], state: Mapping[str, Any] | None = None) -> None:
        self.history.append(dict(metrics))
        if state is None:
            return
        folders = self._checkpoint_dirs()
        index = checkpoint_index(folders[0].name) + 1 if folders else 0
        save_state(state, self.trial_dir / f"checkpoint_{index:06d}" / STATE_FILE)
        self.checkpoints += 1
        for old in folders[KEEP_CHECKPOINTS - 1 :]:
            shutil.rmtree(old)

    def restored_state(self) -> dict[str, Any] | None:
        return restore_newest(
            [(str(d / STATE_FILE), partial(load_state, d / STATE_FILE)) for d in self._checkpoint_dirs()],
            trial=f"trial {self.trial_dir}",
            how_to_start_over=f"to start it over from scratch: LocalContext({str(self.trial_dir)!r}, resume=False)",
        )
