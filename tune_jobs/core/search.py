"""What a sweep's search tries: Tune's param space from the planned points or the searched
space, the seeded random search, the Optuna search with its study in the sweep folder (with
`seeds: N`, each point it suggests run on N seeds, the study told the point's mean), and where a
person opens that study (the Optuna dashboard)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tune_jobs.core.adapter import POINT_KEY
from tune_jobs.core.commands import command_line
from tune_jobs.core.plan import SEED_KEY, Composed, first_seed
from tune_jobs.core.space import Experiment

log = logging.getLogger(__name__)

DASHBOARD_UI = "http://127.0.0.1:8080"  # optuna-dashboard's default address


def _domain(dim: Any) -> Any:
    from ray import tune

    lo, hi = dim.values[0], dim.values[-1] if dim.kind != "quniform" else dim.values[1]
    return {
        "grid": lambda: tune.grid_search(list(dim.values)),
        "choice": lambda: tune.choice(list(dim.values)),
        "uniform": lambda: tune.uniform(lo, hi),
        "loguniform": lambda: tune.loguniform(lo, hi),
        "randint": lambda: tune.randint(lo, hi + 1),  # the YAML's high is inclusive
        "quniform": lambda: tune.quniform(lo, hi, dim.values[2]),
    }[dim.kind]()


def param_space(experiment: Experiment, points: list[dict[str, Any]]) -> dict[str, Any]:
    from ray import tune

    if experiment.search == "grid":
        # One grid_search over the planned points keeps the plan's order and its slice.
        return {POINT_KEY: tune.grid_search(points)}
    return {dim.key: _domain(dim) for dim in experiment.space}


def search_alg(composed: Composed, sweep_dir: Path, sweep_id: str, *, drawn: int = 0) -> Any:
    """The search of a sweep's Tune run; `drawn`: samples an extended sweep drew before it."""
    experiment = composed.experiment
    seed = draw_seed(experiment.seed, drawn)
    if experiment.search == "random":
        from ray.tune.search import BasicVariantGenerator

        return BasicVariantGenerator(random_state=seed)
    if experiment.search != "optuna":
        return None
    import optuna
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    # A persistent study in the sweep directory: the search keeps its history on resume.
    storage = optuna.storages.RDBStorage(f"sqlite:///{sweep_dir / 'optuna.db'}")
    optuna_search = OptunaSearch(
        metric=experiment.metric,
        mode=experiment.mode,
        # Several trials are asked for before the earlier ones report: TPE's constant liar
        # counts those still running as bad results, so it does not suggest the same region to
        # every free slot at once.
        sampler=optuna.samplers.TPESampler(seed=seed, constant_liar=True),
        storage=storage,
        study_name=f"{experiment.name}-{sweep_id}",
    )
    searcher = (
        optuna_search if experiment.seeds == 1 else seeded_search(optuna_search, experiment.seeds, first_seed(composed))
    )
    # Tune asks a searcher that is not in a ConcurrencyLimiter for one pending trial at a time:
    # trials shorter than a round of Tune's controller then ran one by one, whatever the slots.
    return ConcurrencyLimiter(searcher, max_concurrent=experiment.max_concurrent or _slots_now(experiment))


def _slots_now(experiment: Any) -> int:
    """The trials the Ray cluster holds at once now; at least 1 (a trial bigger than the
    cluster waits for nodes to join)."""
    import ray

    from tune_jobs.core.space import ray_resources, slots

    return max(1, slots(ray_resources(experiment.resources), ray.cluster_resources()))


def draw_seed(seed: int, drawn: int) -> int:
    """The sampler's seed: the experiment's, so that the same seed draws the same trials; for an
    extension that goes on after `drawn` samples, another one derived from both (the same one
    would draw the first samples again)."""
    import numpy as np

    return seed if not drawn else int(np.random.SeedSequence([seed, drawn]).generate_state(1)[0])


def seeded_search(searcher: Any, seeds: int, first: int) -> Any:
    """`searcher` with each point it suggests run `seeds` times, `seed` counting up from `first`.

    Ray's Repeater groups a point's trials and tells the searcher their mean once every one has
    ended (its groups are saved with Tune's search state, so a resumed sweep keeps them); this
    puts the trial's place in its group into the study's `seed` instead of Repeater's index key."""
    from ray.tune.search import Repeater
    from ray.tune.search.repeater import TRIAL_INDEX

    class SeedRepeater(Repeater):
        def suggest(self, trial_id: str) -> Any:
            config = super().suggest(trial_id)  # a copy of the group's config, with the index
            if isinstance(config, dict) and TRIAL_INDEX in config:
                config[SEED_KEY] = first + config.pop(TRIAL_INDEX)
            return config

    return SeedRepeater(searcher, repeat=seeds, set_index=True)


def close_orphan_optuna_trials(sweep_dir: Path) -> int:
    """File as failed the Optuna trials still running once a sweep has ended; their number.

    The search asks Optuna for a trial (a RUNNING row in optuna.db) before Tune adds it and
    saves its state: a driver killed in between leaves that row, and the resumed search, which
    never heard of it, asks for another. Once the sweep has ended nothing runs, so the study
    (and its dashboard) must not show a trial running forever."""
    import optuna
    from optuna.trial import TrialState

    path = sweep_dir / "optuna.db"
    if not path.exists():
        return 0
    storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
    closed = 0
    try:
        for study in storage.get_all_studies():
            for trial in storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                closed += 1
    finally:
        storage.engine.dispose()
    if closed:
        log.info("%d Optuna trial(s) asked for by a driver that stopped before they started: filed as failed", closed)
    return closed


def dashboard_command(sweep_dir: Path) -> str:
    """The optuna-dashboard command of an Optuna search's study (one study per sweep folder);
    the MLflow UI's view of a sweep is tune_jobs/core/tracking/view.py."""
    db = Path(sweep_dir) / "optuna.db"
    if not db.exists():
        return ""
    return (
        f"{command_line('optuna-dashboard', f'sqlite:///{db}')}   then open {DASHBOARD_UI}/dashboard/studies/1/trials"
    )
