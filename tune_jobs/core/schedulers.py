"""The trial schedulers a sweep can use, and the one wrapper every sweep runs them in.

`scheduler:` in an experiment YAML picks one:
- `{kind: fifo}`: every trial runs to its end, in the order the search gives them.
- `{kind: asha, max_t, grace_period, reduction_factor}`: ASHA with promotion, as Li et al.
  define it ("A System for Massively Parallel Hyperparameter Tuning", MLSys 2020,
  Algorithm 2), `PromotionASHA` (tune_jobs/core/asha.py). A trial that reaches a rung waits there, paused, until
  it is among the top 1/eta of that rung; a freed slot first promotes a waiting trial (the
  highest rung first), else starts a new trial. Pausing goes through Tune's checkpoints: the
  trial resumes from the checkpoint it reported at the rung. This saves compute however few
  the slots are.
- `{kind: asha, promote: false, ...}`: Ray Tune's `AsyncHyperBandScheduler`, which never
  pauses: it stops a trial that lags its rung's peers when it reaches the rung, and lets the
  others run on. With fewer slots than trials the first trials reach `max_t` before any rung
  has peers to compare with (ray issues 32634, 44256), so keep it for clusters with many slots.
- `{kind: hyperband, max_t, reduction_factor}`: Ray Tune's `HyperBandScheduler` (synchronous
  brackets; pauses trials too).

Every scheduler runs inside `SweepScheduler` (tune_jobs/core/experiment_state.py), which makes a resumed sweep trust what the
sweep recorded after Tune last saved its experiment state (see `tune_jobs.core.experiment_state`):
a trial that `mlflow_runs.json` says has ended is not run again, whatever Tune's older
snapshot says.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, HyperBandScheduler, TrialScheduler

from tune_jobs.core.asha import PromotionASHA
from tune_jobs.core.experiment_state import CHECKPOINT_SAVE_S, SweepScheduler
from tune_jobs.core.tracking.outbox import Outbox
from tune_jobs.core.tracking.shapes import RUNG_JOURNAL


def ended_trials(outbox: Outbox | str | Path) -> dict[str, str]:
    """Trials the sweep's record (its outbox, or the one in a sweep folder) says have ended:
    trial id -> outcome (finished, diverged or error). The tracker writes a trial's end there,
    atomically, in the same controller step as Tune learns of it."""
    if not isinstance(outbox, Outbox):
        outbox = Outbox(outbox)
    with outbox.lock:
        trials = outbox.state.get("trials", {})
        return {
            trial_id: entry.get("end_tags", {}).get("sweep.status", "finished")
            for trial_id, entry in trials.items()
            if "status" in entry and not entry.get("interrupted")  # closed by a Ctrl-C: it goes on
        }


def make_scheduler(
    settings: Mapping[str, Any],
    *,
    sweep_dir: str | Path | None = None,
    outbox: Outbox | None = None,
    save_on_add: bool = False,
    save_every: float = 10.0,
    checkpoint_save_every: float = CHECKPOINT_SAVE_S,
) -> SweepScheduler:
    """The scheduler an experiment's `scheduler:` settings name, inside `SweepScheduler`."""
    settings = dict(settings)
    kind = settings.pop("kind")
    inner: TrialScheduler
    if kind == "fifo":
        inner = FIFOScheduler()
    elif kind == "asha" and settings.pop("promote", True):
        journal = str(Path(sweep_dir) / RUNG_JOURNAL) if sweep_dir else None
        inner = PromotionASHA(journal=journal, **settings)
    elif kind == "asha":
        inner = AsyncHyperBandScheduler(**settings)
    elif kind == "hyperband":
        inner = HyperBandScheduler(**settings)
    else:
        raise ValueError(f"unknown scheduler kind {kind!r}")
    return SweepScheduler(
        inner,
        sweep_dir=str(sweep_dir) if sweep_dir else None,
        ended_trials=ended_trials,
        outbox=outbox,
        save_on_add=save_on_add,
        save_every=save_every,
        checkpoint_save_every=checkpoint_save_every,
    )
