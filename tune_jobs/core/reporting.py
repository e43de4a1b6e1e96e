"""Report plumbing shared by every study: read a sweep back from MLflow, save figures as
PNG + PDF, and attach the report folder to the sweep's parent run.

Reports are built from what MLflow holds, never from a sweep's in-memory results, so any
sweep's report can be rebuilt at any time: `python tune_jobs/report.py <sweep-id|experiment>`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tune_jobs.core.errors import ConfigError
from tune_jobs.core.paths import safe_name
from tune_jobs.core.store import upload_folder


@dataclass
class TrialRun:
    run_id: str
    name: str
    status: str
    point: dict[str, Any]  # the searched values, typed
    params: dict[str, str]  # the whole flattened config, as MLflow stores it
    metrics: dict[str, float]  # the last value of each metric
    tags: dict[str, str]


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
    from mlflow.entities import ViewType

    experiments = client.search_experiments(view_type=ViewType.ACTIVE_ONLY)
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


def build_report(study: Any, tracking_uri: str, parent_ref: str, results_dir: Path) -> tuple[Path, str]:
    """Rebuild `study`'s report for one sweep from MLflow and attach it to the parent run.

    Returns the report folder and a line naming the best trial.
    """
    import matplotlib

    matplotlib.use("Agg")
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    parent = find_parent(client, parent_ref)
    sweep = SweepData(client, parent)
    out_dir = Path(results_dir) / safe_name(study.name) / safe_name(f"{sweep.experiment}-{sweep.sweep_id}")
    out_dir.mkdir(parents=True, exist_ok=True)
    study.report(sweep, out_dir)
    stopped = write_trial_status(sweep, out_dir)
    best = sweep.best()
    summary = "no trial reported the sweep metric"
    if best is not None:
        summary = (
            f"best trial {best.name}: {sweep.tags['sweep.metric']} = {best.metrics[sweep.tags['sweep.metric']]:.4g}"
        )
        metric = sweep.tags["sweep.metric"]
        for key, value in (
            ("sweep.best_run", best.name),
            ("sweep.best_run_id", best.run_id),
            (f"sweep.best_{metric}", f"{best.metrics[metric]:.6g}"),
        ):
            client.set_tag(parent.info.run_id, key, value)
    if stopped:
        summary += f"; {len(stopped)} trial(s) did not finish: {', '.join(stopped)} (see trial_status.md)"
    upload_folder(client, parent.info.run_id, out_dir, "report")  # never a temp file a writer left
    return out_dir, summary


def write_trial_status(sweep: SweepData, out_dir: Path) -> list[str]:
    """trial_status.md: every trial's outcome, with the reason of those that did not finish.

    Returns 'name (status)' of the trials that diverged, failed or never ended."""
    rows, stopped = [], []
    for t in sweep.trials:
        outcome = t.tags.get("sweep.status") or ("finished" if t.status == "FINISHED" else t.status.lower())
        reason = t.tags.get("sweep.error", "")
        rows.append(f"| {t.name} | {outcome} | {t.status} | {reason.replace('|', '/')} |")
        if outcome != "finished":
            stopped.append(f"{t.name} ({outcome})")
    lines = [
        f"# Trials of sweep {sweep.sweep_id}",
        "",
        f"{len(sweep.trials)} trials, {len(sweep.trials) - len(stopped)} finished.",
        "",
        "| trial | outcome | MLflow status | reason |",
        "|---|---|---|---|",
        *rows,
    ]
    (out_dir / "trial_status.md").write_text("\n".join(lines) + "\n")
    return stopped
