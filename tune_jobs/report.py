"""Rebuild a sweep's report from MLflow, any time after (or during) the sweep.

python tune_jobs/report.py phase1                 # the newest sweep of experiment/study phase1
python tune_jobs/report.py 20261121-070828-1dbb   # one sweep by id
python tune_jobs/report.py --replay results/ray/phase1-20261121-070828-1dbb
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from tune_jobs.core.cli import OneLineParser
from tune_jobs.core.errors import ConfigError, one_line
from tune_jobs.core.paths import tracking_uri


def main(argv: Sequence[str] | None = None) -> int:
    p = OneLineParser(prog="python tune_jobs/report.py", description=__doc__.splitlines()[0])
    p.add_argument("sweep", nargs="?", help="sweep id, parent run id, experiment or study name")
    p.add_argument(
        "--mlflow-uri", default=None, help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)"
    )
    p.add_argument(
        "--results-dir",
        default=None,
        help="reports go to RESULTS_DIR/<study>/<sweep> (default ./results; with --replay, the sweep's own)",
    )
    p.add_argument(
        "--replay",
        metavar="SWEEP_DIR",
        help="send what a sweep recorded but could not send to MLflow (server down), then build its report",
    )
    args = p.parse_args(argv)
    try:
        if args.replay:
            return _replay(Path(args.replay).resolve(), args.mlflow_uri, args.results_dir)
        uri = tracking_uri(args.mlflow_uri)
        if not args.sweep:
            raise ConfigError("name the sweep: python tune_jobs/report.py <sweep-id|experiment|study>")
        from mlflow import MlflowClient

        from tune_jobs.core.reporting import build_report, find_parent
        from tune_jobs.core.study import load_study

        if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).exists():
            raise ConfigError(f"no MLflow store at {uri}; run from the folder holding mlflow.db or pass --mlflow-uri")
        parent = find_parent(MlflowClient(uri), args.sweep)
        study = load_study(parent.data.tags["sweep.study"])
        out, best = build_report(study, uri, parent.info.run_id, Path(args.results_dir or "results").resolve())
    except ConfigError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    print(f"report of sweep {parent.data.tags['sweep.id']} in {out} (and attached to MLflow run {parent.info.run_id})")
    print(best)
    return 0


def _replay(sweep_dir: Path, uri: str | None, results_dir: str | None) -> int:
    """Sync a sweep's recorded runs and results to MLflow, then build its report."""
    from tune_jobs.core.reporting import build_report
    from tune_jobs.core.runner import SWEEP_FILE
    from tune_jobs.core.study import load_study
    from tune_jobs.core.tracking import STATE_FILE, Mirror, client_for

    if not (sweep_dir / STATE_FILE).exists() or not (sweep_dir / SWEEP_FILE).exists():
        raise ConfigError(
            f"{sweep_dir} is not a sweep folder (no {STATE_FILE} or {SWEEP_FILE}); "
            "pass results/ray/<experiment>-<sweep id>"
        )
    saved = json.loads((sweep_dir / SWEEP_FILE).read_text())
    uri = tracking_uri(uri or saved["tracking_uri"])  # where the sweep's runs belong
    mirror = Mirror(sweep_dir)
    pending = mirror.pending()
    try:
        mirror.sync(client_for(uri))
    except Exception as exc:
        print(
            f"error: MLflow at {uri} is still unreachable ({one_line(exc)[:200]}); nothing was lost, "
            "run this again when it is up",
            file=sys.stderr,
        )
        return 1
    print(f"sent to {uri}: {pending or 'nothing was pending'}")
    study = load_study(saved["study"])
    if study.report is None:
        return 0
    out, best = build_report(study, uri, mirror.parent_run_id, Path(results_dir or sweep_dir.parents[1]).resolve())
    print(f"report of sweep {saved['sweep_id']} in {out} (and attached to MLflow run {mirror.parent_run_id})")
    print(best)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
