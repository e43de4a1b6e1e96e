"""The MLflow client as the sweep uses it: opened with short network time-outs on a store
prepared first (store.py), every call's failure marked as the store's, and a health probe."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from tune_jobs.core.tracking import store
from tune_jobs.core.tracking.failures import mark_store

# A tracking server that does not answer must not hold a sync for minutes per call (MLflow's
# own defaults: 7 retries, 120 s timeout); the sweep's journal keeps what was not sent.
CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def open_client(uri: str) -> Any:
    """An MlflowClient for `uri`, its store prepared first (see prepare_store)."""
    from mlflow import MlflowClient

    for key, value in CLIENT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    store.prepare_store(uri)  # looked up here, so a benchmark may wrap it
    return MlflowClient(uri)


class MarkedClient:
    """An MLflow client whose every failure is marked as the store's, every success noted."""

    def __init__(self, client: Any, progress: Callable[[], None] | None = None) -> None:
        self._client, self._progress = client, progress

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                out = method(*args, **kwargs)
            except Exception as exc:
                raise mark_store(exc) from None
            if self._progress is not None:
                self._progress()
            return out

        return call


def probe(uri: str, timeout: float) -> bool:
    """Whether a tracking server answers at all (any HTTP status) within `timeout`."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False
