"""The scheduler catalogue (tune_jobs/core/schedulers.py): each YAML kind makes its scheduler,
inside SweepScheduler, pickled by Tune with its settings only."""

from __future__ import annotations

import pickle

from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, HyperBandScheduler
from scheduler_fakes import Controller, trial

from tune_jobs.core.asha import PromotionASHA
from tune_jobs.core.schedulers import make_scheduler


def test_the_yaml_kinds_make_their_schedulers(tmp_path):
    def inner(settings):
        return make_scheduler(settings, sweep_dir=tmp_path).inner

    assert isinstance(inner({"kind": "fifo"}), FIFOScheduler)
    promo = inner({"kind": "asha", "max_t": 20, "grace_period": 2, "reduction_factor": 3})
    assert isinstance(promo, PromotionASHA) and promo.rungs == [2, 6, 18]
    assert promo._journal == str(tmp_path / "asha_rungs.jsonl")
    assert isinstance(inner({"kind": "asha", "promote": False, "max_t": 9}), AsyncHyperBandScheduler)
    assert isinstance(inner({"kind": "hyperband", "max_t": 9, "reduction_factor": 3}), HyperBandScheduler)
    # Tune pickles the scheduler into tuner.pkl: settings only, no trials, no decisions.
    s = make_scheduler({"kind": "asha", "max_t": 9}, sweep_dir=tmp_path)
    s.set_search_properties("score", "max")
    s.on_trial_add(Controller(s), trial("a"))
    again = pickle.loads(pickle.dumps(s))
    assert again.inner.rungs == [1, 3] and again.inner._trials == {} and again._ended is None
