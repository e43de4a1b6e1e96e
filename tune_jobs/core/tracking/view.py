"""Where a person opens a finished sweep in the MLflow UI: a view that compares its trials.

MLflow 3's UI opens an experiment on its GenAI overview and lists a sweep as one collapsed
parent run with no metric or parameter column. The link printed here lands on the runs table
of classic model training (`workflowType=machine_learning`) with a view the UI itself knows how
to share: an experiment tag `mlflow.sharedViewState.<key>` that the link names
(`viewStateShareKey=<key>`). The view shows the trials grouped by sweep, best first by the
sweep metric (a measurement grid, which has no best, in the order its trials started), with the
metric and every searched value as columns, and the run names wide enough to read. The UI
loads 100 runs at a time in that order, so a sweep of 1,000 trials opens on its best 100 and
its group row's best is the sweep's. It needs nothing stored in the browser, so a fresh
profile sees it too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tune_jobs.core.commands import command_line
from tune_jobs.core.errors import one_line
from tune_jobs.core.tracking.client import open_client
from tune_jobs.core.tracking.uri import uri_scheme

log = logging.getLogger(__name__)

VIEW_KEY = "sweeps"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui --port 5000` serves, as README says
RUN_NAME_COLUMN = "attributes.`Run Name`"


def _px(chars: int, lo: int, hi: int) -> int:
    """A column width in pixels for `chars` characters of the UI's table font."""
    return max(lo, min(hi, 8 * chars + 48))


def view_state(
    metric: str, keys: Sequence[str], run_names: Iterable[str] = (), best: str | None = None
) -> dict[str, Any]:
    """The UI's view state: trials grouped by sweep, the metric and the searched values as columns.

    `best` is the metric's mode ("min" or "max") for a search: its trials sorted best first, a
    sweep's group row showing its best; None for a measurement grid (goal: measure), where no
    trial is the best: trials in the order they started, the group row their average."""
    metric_col = f"metrics.`{metric}`"
    param_cols = [f"params.`{k}`" for k in keys]
    longest = max((len(n) for n in run_names), default=24)
    return {
        "searchFilter": "tags.`sweep.role` = 'trial'",
        "orderByKey": metric_col if best else "attributes.start_time",
        "orderByAsc": best != "max",
        "groupBy": {
            "aggregateFunction": best or "average",
            "groupByKeys": [{"mode": "tag", "groupByData": "sweep.id"}],
        },
        "selectedColumns": [metric_col, *param_cols],
        # The UI applies column widths to the columns listed in columnOrder only.
        "columnOrder": [RUN_NAME_COLUMN, metric_col, *param_cols],
        "columnWidths": {
            RUN_NAME_COLUMN: _px(longest, 240, 640),
            metric_col: _px(max(len(metric), 18), 160, 260),  # a float as MLflow prints it
            **{c: _px(len(k), 110, 260) for c, k in zip(param_cols, keys)},
        },
    }


def view_url(base: str, experiment_id: str) -> str:
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"


def searched_keys(experiment: Any, points: Sequence[Mapping[str, Any]]) -> list[str]:
    """The searched config keys: every key of the grid's points, or the sampled dimensions."""
    keys: dict[str, None] = {}
    for point in points:
        keys.update(dict.fromkeys(point))
    if not keys:
        keys.update(dict.fromkeys(d.key for d in experiment.space))
    return list(keys)


def publish_view(client: Any, experiment_id: str, experiment: Any, keys: Sequence[str]) -> None:
    """Store the view on the experiment (set again by every sweep: same metric and keys)."""
    names = [r.info.run_name for r in client.search_runs([experiment_id], max_results=500)]
    best = None if experiment.goal == "measure" else experiment.mode
    state = view_state(experiment.metric, keys, names, best)
    client.set_experiment_tag(experiment_id, VIEW_TAG, json.dumps(state))


def runs_view(
    tracking_uri: str, experiment_id: str | None, experiment: Any, points: Sequence[Mapping[str, Any]]
) -> str:
    """How to open the sweep in the MLflow UI on its comparison view ('' when there is no UI)."""
    scheme = uri_scheme(tracking_uri)
    if experiment_id is None or scheme not in ("sqlite", "http", "https"):
        return ""
    try:
        publish_view(open_client(tracking_uri), experiment_id, experiment, searched_keys(experiment, points))
    except Exception as exc:  # the sweep is done and recorded; only the saved view is missing
        log.warning("the MLflow UI view was not saved (%s); the runs are all there", one_line(exc)[:200])
    if scheme == "sqlite":
        return (
            f"{command_line('mlflow', 'ui', '--backend-store-uri', tracking_uri, '--port', '5000')}   "
            f"then open {view_url(LOCAL_UI, experiment_id)}"
        )
    return view_url(tracking_uri, experiment_id)
