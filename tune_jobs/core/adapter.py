"""The one adapter between the trainable contract and Ray Tune.

`train(cfg, ctx)` never imports Ray; here `ctx.report` becomes `tune.report` (with a
`tune.Checkpoint` holding the state file when a state is given) and `ctx.restored_state`
reads `tune.get_checkpoint()`. Every result also carries the Ray node the trial runs on
(`node_id`, beside Tune's own `node_ip` and `hostname`): nodes on one machine share an IP.
A trial given GPUs also carries their ids (`gpu_ids`, from `ray.get_gpu_ids()`) and the
`CUDA_VISIBLE_DEVICES` Ray set for it; where CUDA is absent (a CPU node started with
`--num-gpus`), the trial says so in one log line and trains on the CPU (`device: auto`).

A trial that diverges is stopped here: one whose sweep metric or any reported `*loss` is
NaN or infinite, or whose `train` raises FloatingPointError (the trainables' own check of
the loss). Its last result carries `sweep/diverged` and the reason; the trial ends, not as
an error, so `max_failures` does not rerun a run that would diverge again; the sweep goes on.

A restored trial continues from the newest of its checkpoints that loads (Tune hands over
the newest; the older ones Tune keeps are beside it): a damaged one costs one warning naming
it, not the trial. When none loads the trial fails with one line naming the files and the
command that starts it over from scratch (`--resume SWEEP --start-over TRIAL`); the driver
prints that line instead of Tune's traceback of it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import posixpath
import sys
import tempfile
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from trainables.common.context import (
    STATE_FILE,
    NoLoadableCheckpoint,
    UnreadableCheckpoint,
    artifact_dir,
    checkpoint_index,
    load_state,
    restore_newest,
    save_state,
)
from tune_jobs.core.commands import command_line
from tune_jobs.core.config import build_config
from tune_jobs.core.errors import one_line
from tune_jobs.core.plan import trial_label
from tune_jobs.core.ray_compat import TUNE_CONTROLLER_LOGGER

POINT_KEY = "point"  # grid trials carry their searched values as {"point": {dotted: value}}
NODE_KEY = "node_id"  # the Ray node id, in every result
GPU_IDS_KEY = "gpu_ids"  # the GPU ids Ray gave the trial, "0,1" (only when it asked for GPUs)
CUDA_DEVICES_KEY = "cuda_visible_devices"  # CUDA_VISIBLE_DEVICES as Ray set it for the trial
DIVERGED_KEY = "sweep/diverged"
STOP_REASON_KEY = "sweep/stop_reason"
# Warnings the trainable's side logged (a damaged checkpoint skipped, a trial started over):
# they ride on the trial's next result to the driver, which shows each once on the terminal
# (a trial's own output goes to the sweep's ray.log with the rest of Ray's).
WARNINGS_KEY = "sweep/warnings"

log = logging.getLogger(__name__)


class Diverged(Exception):
    """A watched metric became NaN or infinite; the trial stops, the sweep goes on."""


def diverged_metric(metrics: Mapping[str, Any], watch: Sequence[str]) -> str | None:
    """The first watched metric (or any `*loss`) that is NaN or infinite, else None."""
    for key, value in metrics.items():
        if (key in watch or key.endswith("loss")) and isinstance(value, float) and not math.isfinite(value):
            return key
    return None


def trial_point(trial_config: Mapping[str, Any]) -> dict[str, Any]:
    """The searched values of a trial from Tune's config (grid point or sampled values)."""
    if POINT_KEY in trial_config and isinstance(trial_config[POINT_KEY], Mapping):
        return dict(trial_config[POINT_KEY])
    return dict(trial_config)


def gpu_placement(gpu_ids: Sequence[int | str]) -> dict[str, str]:
    """The GPUs Ray gave this trial, for its results (nothing for a CPU trial). Logs one line
    when there is no CUDA to use them: the trainables' `device: auto` then trains on the CPU."""
    if not gpu_ids:
        return {}
    import torch

    ids = ",".join(str(g) for g in gpu_ids)
    cuda = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if not torch.cuda.is_available():
        log.warning(
            "Ray gave this trial GPU %s (CUDA_VISIBLE_DEVICES=%s) but CUDA is not available: training on the CPU",
            ids,
            cuda,
        )
    return {GPU_IDS_KEY: ids, CUDA_DEVICES_KEY: cuda}


def limit_threads(threads: int) -> None:
    """Give torch `threads` threads in this worker, without importing it: a trainable that does
    not use torch does not pay for its import (about 1.3 s of CPU in each worker)."""
    torch = sys.modules.get("torch")
    if torch is not None:  # a reused worker whose earlier trial imported it
        torch.set_num_threads(threads)
    else:  # read when the trainable imports torch
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)


class RayContext:
    def __init__(
        self,
        watch: Sequence[str] = (),
        *,
        label: str = "",
        start_over: Collection[str] = (),
        resume_command: str = "",
    ) -> None:
        """`label` names the trial in messages (its searched values); `start_over` holds the
        trials (ids or labels) that start from scratch when none of their checkpoints loads;
        `resume_command` resumes this sweep, for the message that offers that choice."""
        import ray
        from ray import tune

        self._tune = tune
        self.watch = tuple(watch)
        self._last_step = -1
        context = tune.get_context()
        # The trial's working directory, which Ray copies to the sweep's storage (from any node)
        # with each checkpoint and when the trial ends. (`get_trial_dir()` is the driver's staging
        # folder for a trial that starts a worker, which reaches storage only when Tune saves
        # its experiment state.)
        self.trial_dir = Path(context.get_storage().trial_working_directory)
        self.trial_id = context.get_trial_id()
        self.trial = f"trial {label} ({self.trial_id})" if label else f"trial {self.trial_id}"
        self._start_over = bool({self.trial_id, label} & set(start_over))
        self._resume_command = resume_command
        self._node = {NODE_KEY: ray.get_runtime_context().get_node_id(), **gpu_placement(ray.get_gpu_ids())}
        self._warnings: list[str] = []

    @property
    def artifact_dir(self) -> Path:
        return artifact_dir(self.trial_dir)

    def report(self, metrics: Mapping[str, float], state: Mapping[str, Any] | None = None) -> None:
        bad = diverged_metric(metrics, self.watch)
        if bad is not None:
            where = f" at step {metrics['step']}" if "step" in metrics else ""
            self.stop_diverged(f"{bad} became {metrics[bad]}{where}", metrics)
        self._last_step = int(metrics.get("step", self._last_step + 1))
        result = {**metrics, **self._node}
        if self._warnings:
            result[WARNINGS_KEY] = "\n".join(self._warnings)
            self._warnings = []
        if state is None:
            self._tune.report(result)
            return
        with tempfile.TemporaryDirectory(prefix="ckpt-") as tmp:
            save_state(state, Path(tmp) / STATE_FILE)
            self._tune.report(result, checkpoint=self._tune.Checkpoint.from_directory(tmp))

    def stop_diverged(self, reason: str, metrics: Mapping[str, Any] | None = None) -> None:
        """Report the trial's last result, marked diverged with `reason`, and stop it."""
        reason = f"{reason}; trial stopped, its last good checkpoint is kept"
        last = dict(metrics) if metrics else {"step": self._last_step + 1}
        for key in self.watch:
            last.setdefault(key, float("nan"))  # Tune needs the sweep metric in every result
        self._tune.report({**last, **self._node, DIVERGED_KEY: 1, STOP_REASON_KEY: reason})
        raise Diverged(reason)

    def restored_state(self) -> dict[str, Any] | None:
        checkpoint = self._tune.get_checkpoint()
        if checkpoint is None:
            return None
        how = f"to start it over from scratch: {self._resume_command} --start-over {command_line(self.trial_id)}"
        with _warnings_into(self._warnings):
            return restore_newest(
                checkpoint_chain(checkpoint),
                trial=self.trial,
                start_over=self._start_over,
                how_to_start_over=how if self._resume_command else "",
            )


@contextlib.contextmanager
def _warnings_into(found: list[str]) -> Iterator[None]:
    """Collect the warnings the trial context logs meanwhile (they are logged as well)."""

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            found.append(record.getMessage())

    handler = Collect(logging.WARNING)
    context_log = logging.getLogger("trainables.common.context")
    context_log.addHandler(handler)
    try:
        yield
    finally:
        context_log.removeHandler(handler)


def checkpoint_chain(checkpoint: Any) -> list[tuple[str, Callable[[], dict[str, Any]]]]:
    """(state file, loader) for a Tune checkpoint and the older ones beside it, newest first.

    Tune names a trial's checkpoint folders checkpoint_000000, checkpoint_000001, ... in the
    trial's storage folder; a folder numbered above the one Tune hands over was written after
    the driver last saved its state and is not Tune's to restore, so it is left out."""
    from pyarrow.fs import FileSelector, FileType
    from ray.tune import Checkpoint

    fs, path = checkpoint.filesystem, checkpoint.path.rstrip("/")
    folders = [path]
    parent, name = posixpath.split(path)
    newest = checkpoint_index(name)
    if newest is not None:
        try:
            found = fs.get_file_info(FileSelector(parent))
        except OSError:
            found = []  # the trial folder cannot be listed: only Tune's own checkpoint is tried
        older = [
            (index, info.path)
            for info in found
            if info.type == FileType.Directory
            and (index := checkpoint_index(info.base_name)) is not None
            and index < newest
        ]
        folders += [p for _, p in sorted(older, reverse=True)]
    return [
        (posixpath.join(folder, STATE_FILE), partial(_load_checkpoint, Checkpoint(folder, filesystem=fs)))
        for folder in folders
    ]


def _load_checkpoint(checkpoint: Any) -> dict[str, Any]:
    label = posixpath.join(checkpoint.path, STATE_FILE)
    try:
        with checkpoint.as_directory() as path:
            return load_state(Path(path) / STATE_FILE)
    except UnreadableCheckpoint:
        raise
    except Exception as exc:  # a folder that cannot be fetched from the storage (or is gone)
        raise UnreadableCheckpoint(label, f"its folder cannot be read ({one_line(exc)[:200]})") from None


class OneLineRestoreFailure(logging.Filter):
    """On Tune's controller logger (the driver): a trial that failed because none of its
    checkpoints loads is logged as its one line, once, instead of Tune's traceback through
    Ray's frames each time it retries (the traceback stays in the trial's error.txt)."""

    def __init__(self) -> None:
        super().__init__()
        self._shown: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        cause = getattr(error, "cause", error)  # Ray wraps what the trainable raised
        if not isinstance(cause, NoLoadableCheckpoint):
            return True
        line = one_line(cause)
        if line in self._shown:
            return False
        self._shown.add(line)
        record.msg, record.args, record.exc_info, record.exc_text = line, (), None, None
        return True


def quiet_restore_failures() -> None:
    """Install OneLineRestoreFailure on Tune's controller logger (once per process)."""
    logger = logging.getLogger(TUNE_CONTROLLER_LOGGER)
    if not any(isinstance(f, OneLineRestoreFailure) for f in logger.filters):
        logger.addFilter(OneLineRestoreFailure())


def make_trainable(
    name: str,
    train: Callable[[Any, Any], None],
    config_cls: type,
    base: Mapping[str, Any],
    threads: int,
    watch: Sequence[str] = (),
    *,
    resume_command: str = "",
    start_over: Collection[str] = (),
) -> Callable[[dict[str, Any]], None]:
    """A Tune function trainable running `train` on the trial's composed config.

    `resume_command` (which resumes the sweep) starts the command a trial without a loadable
    checkpoint offers; the trials in `start_over` (ids or labels) start from scratch in that
    case instead."""
    base = dict(base)
    start_over = frozenset(start_over)
    quiet_restore_failures()  # here, in the driver, which logs the trials' failures

    def trainable(trial_config: dict[str, Any]) -> None:
        limit_threads(max(1, threads))
        point = trial_point(trial_config)
        cfg = build_config(config_cls, base, point)
        ctx = RayContext(watch, label=trial_label(point), start_over=start_over, resume_command=resume_command)
        try:
            try:
                train(cfg, ctx)
            except FloatingPointError as exc:  # a trainable's own divergence check
                ctx.stop_diverged(str(exc).split(";")[0])
        except Diverged:
            return  # the reason is in the trial's last result

    trainable.__name__ = trainable.__qualname__ = name
    return trainable
