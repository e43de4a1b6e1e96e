"""The MLflow path of a sweep, in one package, each module importing only those above it:

- uri.py: where the records go (the tracking URI, its SQLite file, its artifacts) and how often;
- mounts.py: the warning for a SQLite store on a network file system;
- shapes.py, sweep_file.py: the sweep's files as declared shapes that check themselves;
- failures.py: what failed, our files or the tracking store;
- store.py, client.py, artifacts.py: the SQLite store prepared once, the MLflow client, artifacts;
- view.py: the MLflow UI's saved view that compares a sweep's trials;
- state.py, outbox.py: what must reach MLflow, kept on disk (the state file, its backup, the
  journals, the sweep's lock);
- sync.py: the sync of the outbox to MLflow and its thread;
- callback.py: the Tune callback that fills the outbox (the one module that imports Ray);
- trial_runs.py: a finished trial read back (its run, its settings, its metrics) for a rerun;
- publish.py: a sweep's runs copied into another store (a team's server), again without twins.

The journals are JSON-lines files written with trainables/common/jsonl.py.
"""

from typing import Any

from tune_jobs.core.tracking.artifacts import upload_folder
from tune_jobs.core.tracking.client import open_client
from tune_jobs.core.tracking.failures import SweepBusy, SweepFileError, failure_line
from tune_jobs.core.tracking.outbox import Outbox
from tune_jobs.core.tracking.shapes import RUNG_JOURNAL, parse_rung_event, rung_journal_problem
from tune_jobs.core.tracking.state import STATE_FILE, recorded_trials, state_damage, sweep_finished
from tune_jobs.core.tracking.store import prepare_store, readable_sqlite
from tune_jobs.core.tracking.sweep_file import DAMAGED_FIX, SWEEP_FILE, SweepRecord
from tune_jobs.core.tracking.sync import replay
from tune_jobs.core.tracking.uri import (
    MLFLOW_EVERY_ENV,
    artifact_location,
    mlflow_every,
    sqlite_file,
    tracking_uri,
    uri_scheme,
)
from tune_jobs.core.tracking.view import runs_view

__all__ = [
    "DAMAGED_FIX",
    "MLFLOW_EVERY_ENV",
    "RUNG_JOURNAL",
    "STATE_FILE",
    "SWEEP_FILE",
    "MlflowTracker",
    "Outbox",
    "SweepBusy",
    "SweepFileError",
    "SweepRecord",
    "artifact_location",
    "failure_line",
    "mlflow_every",
    "open_client",
    "parent_tags",
    "parse_rung_event",
    "prepare_store",
    "readable_sqlite",
    "recorded_trials",
    "replay",
    "rung_journal_problem",
    "runs_view",
    "sqlite_file",
    "state_damage",
    "sweep_finished",
    "tracking_uri",
    "upload_folder",
    "uri_scheme",
]


def __getattr__(name: str) -> Any:
    # The Tune callback imports Ray: only where a sweep runs (a replay and the report do not).
    # Tune's saved state names the callback as tune_jobs.core.tracking.MlflowTracker.
    if name in ("MlflowTracker", "parent_tags"):
        from tune_jobs.core.tracking import callback

        return getattr(callback, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
