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
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from trainables.common.context import STATE_FILE, artifact_dir, load_state, save_state
from tune_jobs.core.config import build_config

POINT_KEY = "point"  # grid trials carry their searched values as {"point": {dotted: value}}
NODE_KEY = "node_id"  # the Ray node id, in every result
GPU_IDS_KEY = "gpu_ids"  # the GPU ids Ray gave the trial, "0,1" (only when it asked for GPUs)
CUDA_DEVICES_KEY = "cuda_visible_devices"  # CUDA_VISIBLE_DEVICES as Ray set it for the trial
DIVERGED_KEY = "sweep/diverged"
STOP_REASON_KEY = "sweep/stop_reason"

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


class RayContext:
    def __init__(self, watch: Sequence[str] = ()) -> None:
        import ray
        from ray import tune

        self._tune = tune
        self.watch = tuple(watch)
        self._last_step = -1
        self.trial_dir = Path(tune.get_context().get_trial_dir())
        self._node = {NODE_KEY: ray.get_runtime_context().get_node_id(), **gpu_placement(ray.get_gpu_ids())}

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
        with checkpoint.as_directory() as path:
            return load_state(Path(path) / STATE_FILE)


def make_trainable(
    name: str,
    train: Callable[[Any, Any], None],
    config_cls: type,
    base: Mapping[str, Any],
    threads: int,
    watch: Sequence[str] = (),
) -> Callable[[dict[str, Any]], None]:
    """A Tune function trainable running `train` on the trial's composed config."""
    base = dict(base)

    def trainable(trial_config: dict[str, Any]) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        cfg = build_config(config_cls, base, trial_point(trial_config))
        ctx = RayContext(watch)
        try:
            try:
                train(cfg, ctx)
            except FloatingPointError as exc:  # a trainable's own divergence check
                ctx.stop_diverged(str(exc).split(";")[0])
        except Diverged:
            return  # the reason is in the trial's last result

    trainable.__name__ = trainable.__qualname__ = name
    return trainable
