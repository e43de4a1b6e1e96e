"""A sweep as MLflow holds it, read back for its reports (its parent run and its trial runs),
and the figure saver every report uses. Imported by the sweep summary and the studies' reports;
building a sweep's report from them is tune_jobs/core/reporting.py's."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tune_jobs.core.errors import ConfigError


@dataclass
class TrialRun:
    run_id: str
    name: str
    status: str
    point: dict[str, Any]  # the searched values, typed
    params: dict[str, str]  # the whole flattened config, as MLflow stores it
    metrics: dict[str, float]  # the last value of each metric
    tags: dict[str, str]


SMOKE_NOTE = (
    "Smoke run (--quick): tiny models trained briefly to check the pipeline end to end; "
    "these numbers answer none of the study's questions, and no conclusion is drawn from them."
)


class SweepData:
    """One sweep as MLflow holds it: the parent run and its nested trial runs."""

    def __init__(self, client: Any, parent: Any) -> None:
        self.client = client
        self.parent = parent
        self.tags = parent.data.tags
        runs = client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
            max_results=10000,
        )
        self.trials = sorted(
            (
                TrialRun(
                    run_id=r.info.run_id,
                    name=r.info.run_name,
                    status=r.info.status,
                    point=json.loads(r.data.tags.get("sweep.point", "{}")),
                    params=r.data.params,
                    metrics=r.data.metrics,
                    tags=r.data.tags,
                )
                for r in runs
            ),
            key=lambda t: t.name,
        )

    @property
    def sweep_id(self) -> str:
        return self.tags["sweep.id"]

    @property
    def smoke(self) -> bool:
        """A --quick sweep: a check of the pipeline, whose numbers support no conclusion."""
        return self.tags.get("sweep.quick") == "true"

    @property
    def experiment(self) -> str:
        return self.tags["sweep.experiment"]

    def best(self) -> TrialRun | None:
        """The trial with the best final value of the sweep's metric (NaN never wins)."""
        metric, sign = self.tags.get("sweep.metric"), -1 if self.tags.get("sweep.mode") == "max" else 1
        scored = [t for t in self.trials if metric in t.metrics and t.metrics[metric] == t.metrics[metric]]
        return min(scored, key=lambda t: sign * t.metrics[metric]) if scored else None

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) pairs of one metric, in step order."""
        return sorted((m.step, m.value) for m in self.client.get_metric_history(run_id, key))


def find_parent(client: Any, ref: str) -> Any:
    """A sweep's parent run by sweep id, parent run id, or the newest of an experiment/study."""
    experiments = client.search_experiments()  # the active ones
    ids = [e.experiment_id for e in experiments]
    if not ids:
        raise ConfigError("the MLflow store holds no experiments yet; run a sweep first")
    ref_q = ref.replace("'", "")
    for filt in (
        f"tags.`sweep.role` = 'parent' and tags.`sweep.id` = '{ref_q}'",
        f"tags.`sweep.role` = 'parent' and attributes.run_id = '{ref_q}'",
        f"tags.`sweep.role` = 'parent' and tags.`sweep.experiment` = '{ref_q}'",
        f"tags.`sweep.role` = 'parent' and tags.`sweep.study` = '{ref_q}'",
    ):
        runs = client.search_runs(ids, filter_string=filt, order_by=["attributes.start_time DESC"], max_results=1)
        if runs:
            return runs[0]
    raise ConfigError(f"no sweep matches {ref!r} in the MLflow store; give a sweep id, an experiment or a study name")


def save_figure(fig: Any, out_dir: Path, stem: str) -> list[Path]:
    """Save a matplotlib figure as PNG (for screens) and PDF (for papers), then close it."""
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths
