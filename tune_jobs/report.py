"""Rebuild a sweep's report from MLflow, any time after (or during) the sweep.

python tune_jobs/report.py phase1                 # the newest sweep of experiment/study phase1
python tune_jobs/report.py 20261121-070828-1dbb   # one sweep by id
python tune_jobs/report.py --replay results/ray/phase1-20261121-070828-1dbb
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tune_jobs.core.errors import ConfigError
from tune_jobs.core.paths import tracking_uri


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tune_jobs/report.py", description=__doc__.splitlines()[0])
    p.add_argument("sweep", nargs="?", help="sweep id, parent run id, experiment or study name")
    p.add_argument(
        "--mlflow-uri", default=None, help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)"
    )
    p.add_argument(
        "--results-dir", default="results", help="reports go to RESULTS_DIR/<study>/<sweep> (default ./results)"
    )
    p.add_argument("--replay", metavar="SWEEP_DIR", help="send what a sweep journalled but could not send to MLflow")
    args = p.parse_args(argv)
    try:
        uri = tracking_uri(args.mlflow_uri)
        if args.replay:
            from mlflow import MlflowClient

            from tune_jobs.core.tracking import STATE_FILE, replay

            sweep_dir = Path(args.replay)
            if not (sweep_dir / STATE_FILE).exists():
                raise ConfigError(
                    f"{sweep_dir} is not a sweep folder (no {STATE_FILE}); pass results/ray/<experiment>-<sweep id>"
                )
            sent = replay(MlflowClient(uri), sweep_dir)
            print(f"sent {sent} journalled bytes of results from {sweep_dir} to {uri}")
            return 0
        if not args.sweep:
            raise ConfigError("name the sweep: python tune_jobs/report.py <sweep-id|experiment|study>")
        from mlflow import MlflowClient

        from tune_jobs.core.reporting import build_report, find_parent
        from tune_jobs.core.study import load_study

        if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).exists():
            raise ConfigError(f"no MLflow store at {uri}; run from the folder holding mlflow.db or pass --mlflow-uri")
        parent = find_parent(MlflowClient(uri), args.sweep)
        study = load_study(parent.data.tags["sweep.study"])
        out, best = build_report(study, uri, parent.info.run_id, Path(args.results_dir).resolve())
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report of sweep {parent.data.tags['sweep.id']} in {out} (and attached to MLflow run {parent.info.run_id})")
    print(best)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
