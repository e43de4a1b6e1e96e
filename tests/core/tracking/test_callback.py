"""The Tune callback: its hooks write files only and never wait for a tracking server that hangs
(a socket that accepts and never answers); the sweep's end waits for it a bounded time."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from bench.hung_server import hung_server  # the benchmark's server: one socket that never answers
from tune_jobs.core.tracking.state import JOURNAL_FILE


class FakeTrial:
    """What the tracker reads from a Tune trial."""

    def __init__(self, trial_id: str, path: Path) -> None:
        self.trial_id, self.path, self.status = trial_id, str(path), "RUNNING"
        self.config = {"point": {"data.n_components": int(trial_id[-1])}}
        self.checkpoint, self.last_result = None, {}


def test_tune_callbacks_never_wait_for_a_hung_server_and_the_end_waits_a_bounded_time(tmp_path, caplog):
    from tune_jobs.core.tracking import MlflowTracker
    from tune_jobs.core.tracking.sync import END_PROBE_S

    trials = [FakeTrial(f"t{i}", tmp_path / f"t{i}") for i in (1, 2)]
    with hung_server() as uri, caplog.at_level(logging.WARNING):
        tracker = MlflowTracker(
            tracking_uri=uri,
            experiment_name="e",
            sweep_dir=str(tmp_path / "sweep"),
            tags={"sweep.id": "s1"},
            base={"seed": 0},
            metrics=("step", "val/nmse"),
            run_prefix="e",
            flush_seconds=0.5,
        )
        hooks = []

        def timed(hook, **kwargs) -> None:
            t0 = time.perf_counter()
            hook(**kwargs)
            hooks.append(time.perf_counter() - t0)

        timed(tracker.setup)
        for i, trial in enumerate(trials):
            timed(tracker.on_trial_start, iteration=i, trials=trials, trial=trial)
        for step in range(20):
            for trial in trials:
                result = {"step": step, "val/nmse": 1.0 / (step + 1)}
                timed(tracker.on_trial_result, iteration=step, trials=trials, trial=trial, result=result)
            time.sleep(0.05)
        for trial in trials:
            trial.status = "TERMINATED"
            timed(tracker.on_trial_complete, iteration=20, trials=trials, trial=trial)
        t0 = time.perf_counter()
        tracker.on_experiment_end(trials=trials)
        end = time.perf_counter() - t0
    assert max(hooks) < 1.0, hooks  # file writes only, whatever the server does
    assert end < END_PROBE_S + 3.0, end
    assert f"MLflow at {uri} did not answer within 2 s at the end of the sweep; it still lacks" in caplog.text
    assert f"python tune_jobs/report.py --replay {tmp_path / 'sweep'}" in caplog.text
    rows = (tmp_path / "sweep" / JOURNAL_FILE).read_text().splitlines()
    assert len(rows) == 40  # everything kept for the replay
