"""The parts of Ray Tune this project reaches that are not Ray's public API, in one place.

Each was written against Ray 2.60.0 (the version requirements.txt pins); each says why no
public API does the job, and the upstream issue where there is one. A Ray upgrade starts here:
every function checks the layout it expects and does nothing on another one, so a changed
Ray loses an optimisation, never a sweep (`restored_hooks`, which a resume needs, says so instead). (Tune's TUNE_* environment variables that
experiment_state.py sets are documented: docs.ray.io/en/latest/tune/api/env.html.)
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

RAY_VERSION = "2.60.0"

# Tune's controller logs each failed trial's error (with its traceback) on this logger. Ray
# 2.60.0: the module name of ray/tune/execution/tune_controller.py; no public logger name exists.
TUNE_CONTROLLER_LOGGER = "ray.tune.execution.tune_controller"


def drop_running_means(trial: Any) -> None:
    """Keep only max, min, avg and last of each metric in a trial's run metadata: no running
    means over the last 5 and 10 results (and no window to compute them).

    Ray 2.60.0: `_TrainingRunMetadata._n_steps`, `metric_n_steps` and `invalidate_cache()`
    (ray/tune/trainable/metadata.py). No public setting turns those means off; Tune writes
    them with every trial at each save of its experiment state."""
    meta = getattr(trial, "run_metadata", None)
    if meta is None or not hasattr(meta, "_n_steps") or not isinstance(meta.metric_analysis, dict):
        return  # another Ray's layout: left as it is
    meta._n_steps = ()
    meta.metric_n_steps = {}
    for stats in meta.metric_analysis.values():  # a restored trial's
        for key in [k for k in stats if str(k).startswith("last-")]:
            del stats[key]
    meta.invalidate_cache()


def forget_checkpoints(trial: Any, paths: Collection[str]) -> None:
    """Drop checkpoints deleted from disk from Tune's list of the trial's checkpoints.

    Ray 2.60.0: `_CheckpointManager._checkpoint_results` (ray/train/_internal/checkpoint_manager.py).
    Tune's own pruning (`CheckpointConfig.num_to_keep`) may delete the checkpoint its last saved
    experiment state points to; there is no public way to prune by another rule and tell Tune."""
    manager = getattr(getattr(trial, "run_metadata", None), "checkpoint_manager", None)
    results = getattr(manager, "_checkpoint_results", None)
    if not isinstance(results, list):
        return  # another Ray's layout: its list stays as it is
    manager._checkpoint_results = [r for r in results if getattr(r.checkpoint, "path", None) not in paths]


def save_experiment_state(tune_controller: Any, wait: bool) -> None:
    """Have Tune save its experiment state now (`wait`: until its copy to the sweep folder is done).

    Ray 2.60.0: `TuneController.checkpoint(force=, wait=)`, reached through the private
    `_tune_controller` of the wrapper Tune hands to schedulers. Tune saves on its own timer
    only (TUNE_GLOBAL_CHECKPOINT_S; ray-project/ray#43689 made the save asynchronous); no
    public API asks for a save when something a resume needs has changed."""
    controller = getattr(tune_controller, "_tune_controller", tune_controller)
    controller.checkpoint(force=True, wait=wait)


def mark_running(tune_controller: Any, trial: Any) -> None:
    """Set a paused trial's status to RUNNING, so that stopping it next tells the search its
    last result, as for a running trial.

    Ray 2.60.0: `TuneController._set_trial_status`. Tune tells the search nothing of a paused
    trial it stops (ray-project/ray#5459 let searches hear of early-stopped trials, running
    ones only), and a scheduler has no public way to stop a trial with its result."""
    tune_controller._set_trial_status(trial, "RUNNING")


def restored_hooks(tuner: Any) -> list[Any]:
    """The callbacks and the scheduler a restored Tuner will run: the objects Tune unpickled
    from the sweep's tuner.pkl, which need the driver's live objects (the sweep's outbox) again.

    Ray 2.60.0: `Tuner._local_tuner` (a `TunerInternal`) and its `_run_config.callbacks` and
    `_tune_config.scheduler`. `Tuner.restore` takes neither callbacks nor a scheduler: a resumed
    run gets those it was started with. Unlike the functions above, another layout is an error:
    the sweep cannot run without its outbox."""
    internal = getattr(tuner, "_local_tuner", None)
    run_config = getattr(internal, "_run_config", None)
    tune_config = getattr(internal, "_tune_config", None)
    if run_config is None or tune_config is None:
        raise RuntimeError(f"Tuner.restore's layout is not Ray {RAY_VERSION}'s: see tune_jobs/core/ray_compat.py")
    return [*(run_config.callbacks or []), tune_config.scheduler]
