"""The one adapter between the trainable contract and Ray Tune.

`train(cfg, ctx)` never imports Ray; here `ctx.report` becomes `tune.report` (with a
`tune.Checkpoint` holding the state file when a state is given) and `ctx.restored_state`
reads `tune.get_checkpoint()`. Every result also carries the Ray node the trial runs on
(`node_id`, beside Tune's own `node_ip` and `hostname`): nodes on one machine share an IP.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from trainables.common.context import STATE_FILE, artifact_dir, load_state, save_state
from tune_jobs.core.config import build_config

POINT_KEY = "point"  # grid trials carry their searched values as {"point": {dotted: value}}
NODE_KEY = "node_id"  # the Ray node id, in every result


def trial_point(trial_config: Mapping[str, Any]) -> dict[str, Any]:
    """The searched values of a trial from Tune's config (grid point or sampled values)."""
    if POINT_KEY in trial_config and isinstance(trial_config[POINT_KEY], Mapping):
        return dict(trial_config[POINT_KEY])
    return dict(trial_config)


class RayContext:
    def __init__(self) -> None:
        import ray
        from ray import tune

        self._tune = tune
        self.trial_dir = Path(tune.get_context().get_trial_dir())
        self._node = {NODE_KEY: ray.get_runtime_context().get_node_id()}

    @property
    def artifact_dir(self) -> Path:
        return artifact_dir(self.trial_dir)

    def report(self, metrics: Mapping[str, float], state: Mapping[str, Any] | None = None) -> None:
        result = {**metrics, **self._node}
        if state is None:
            self._tune.report(result)
            return
        with tempfile.TemporaryDirectory(prefix="ckpt-") as tmp:
            save_state(state, Path(tmp) / STATE_FILE)
            self._tune.report(result, checkpoint=self._tune.Checkpoint.from_directory(tmp))

    def restored_state(self) -> dict[str, Any] | None:
        checkpoint = self._tune.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as path:
            return load_state(Path(path) / STATE_FILE)


def make_trainable(
    name: str, train: Callable[[Any, Any], None], config_cls: type, base: Mapping[str, Any], threads: int
) -> Callable[[dict[str, Any]], None]:
    """A Tune function trainable running `train` on the trial's composed config."""
    base = dict(base)

    def trainable(trial_config: dict[str, Any]) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        cfg = build_config(config_cls, base, trial_point(trial_config))
        train(cfg, RayContext())

    trainable.__name__ = trainable.__qualname__ = name
    return trainable
