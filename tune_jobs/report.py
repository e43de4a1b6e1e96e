"""Rebuild a sweep's report from MLflow, any time after (or during) the sweep.

python tune_jobs/report.py phase1                 # the newest sweep of experiment/study phase1
python tune_jobs/report.py 20261121-070828-1dbb   # one sweep by id
python tune_jobs/report.py --replay results/ray/phase1-20261121-070828-1dbb
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tune_jobs.core.cli import OneLineParser
from tune_jobs.core.commands import resume_command
from tune_jobs.core.errors import ConfigError, one_line
from tune_jobs.core.tracking import sqlite_file, tracking_uri

if TYPE_CHECKING:
    from tune_jobs.core.tracking.sweep_file import SweepRecord


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
        from tune_jobs.core.reporting import build_report, find_parent
        from tune_jobs.core.study import load_study
        from tune_jobs.core.tracking.client import open_client

        db = sqlite_file(uri)
        if db is not None and not db.exists():
            raise ConfigError(f"no MLflow store at {uri}; run from the folder holding mlflow.db or pass --mlflow-uri")
        parent = find_parent(open_client(uri), args.sweep)
        tags = parent.data.tags
        study = load_study(tags["sweep.study"], tags.get("sweep.study_module", ""), tags.get("sweep.study_file", ""))
        out, best = build_report(study, uri, parent.info.run_id, Path(args.results_dir or "results").resolve())
    except ConfigError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        from tune_jobs.core.tracking.failures import failure_line, mark_if_from_store

        if not mark_if_from_store(exc):
            raise
        print(f"error: {failure_line(exc, tracking_uri(args.mlflow_uri))}; try again", file=sys.stderr)
        return 1
    print(f"report of sweep {parent.data.tags['sweep.id']} in {out} (and attached to MLflow run {parent.info.run_id})")
    print(best)
    return 0


def _replay(sweep_dir: Path, uri: str | None, results_dir: str | None) -> int:
    """Sync a sweep's recorded runs and results to MLflow, then build its report."""
    from tune_jobs.core.reporting import build_report
    from tune_jobs.core.study import load_study
    from tune_jobs.core.tracking import STATE_FILE, Outbox, SweepFileError, failure_line, state_damage
    from tune_jobs.core.tracking.client import open_client
    from tune_jobs.core.tracking.failures import mark_if_from_store
    from tune_jobs.core.tracking.sweep_file import SWEEP_FILE, SweepRecord
    from tune_jobs.core.tracking.sync import sync

    if not (sweep_dir / SWEEP_FILE).exists() or not list(sweep_dir.glob(f"{STATE_FILE}*")):
        raise ConfigError(
            f"{sweep_dir} is not a sweep folder (no {STATE_FILE} or {SWEEP_FILE}); "
            "pass results/ray/<experiment>-<sweep id>"
        )
    saved = SweepRecord.read(sweep_dir)
    saved_uri, study_name, sweep_id = saved.tracking_uri, saved.study, saved.sweep_id
    study_module, study_file = saved.study_module, saved.study_file
    uri = tracking_uri(uri or saved_uri)  # where the sweep's runs belong
    from tune_jobs.core.tracking.login import check_login

    check_login(uri, saved.experiment)  # a team server's refusal is one line, before anything is sent
    # A record that cannot be used is said before the sweep is held: a replay that stops here
    # writes nothing (no lock file, no copy of the damaged file).
    damage = state_damage(sweep_dir)
    if damage:
        raise _rebuild_by_resume(damage, saved, sweep_dir)
    try:
        mirror = Outbox(sweep_dir, lock_s=0)  # the one writer of the sweep's files while it runs
    except SweepFileError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    try:
        if mirror.recovered or not mirror.state:  # damaged since it was checked above
            raise _rebuild_by_resume(state_damage(sweep_dir) or f"{mirror.state_path} is damaged", saved, sweep_dir)
        pending = mirror.pending()
        client = open_client(uri)  # a store that cannot be used is a ConfigError: one line, exit 2
        try:
            sync(mirror, client)
        except Exception as exc:
            fix = "run this again when it is up" if "unreachable" in failure_line(exc, uri) else "run this again"
            print(f"error: {failure_line(exc, uri, still=True)}; nothing was lost, {fix}", file=sys.stderr)
            return 1
    finally:
        mirror.release()
    print(f"sent to {uri}: {pending or 'nothing was pending'}")
    study = load_study(study_name, study_module, study_file)
    try:
        out, best = build_report(study, uri, mirror.parent_run_id, Path(results_dir or sweep_dir.parents[1]).resolve())
    except Exception as exc:
        if not mark_if_from_store(exc):
            raise
        print(
            f"error: the report could not be built: {failure_line(exc, uri)}; build it with: "
            f"python tune_jobs/report.py {sweep_id} --mlflow-uri {uri}",
            file=sys.stderr,
        )
        return 1
    print(f"report of sweep {sweep_id} in {out} (and attached to MLflow run {mirror.parent_run_id})")
    print(best)
    return 0


def _rebuild_by_resume(damage: str, saved: SweepRecord, sweep_dir: Path) -> ConfigError:
    """The error of a replay whose mlflow_runs.json (and its previous version) cannot be used:
    the sweep's resume rebuilds them. The resume needs the sweep's whole record (sweep.json):
    when that is damaged too, its fix comes first."""
    from tune_jobs.core.tracking.sweep_file import SweepRecord

    try:
        SweepRecord.read(sweep_dir, resume=True)
    except ConfigError as exc:
        return ConfigError(f"{damage}; the resume that rebuilds it needs the sweep's whole record, but {exc}")
    resume = resume_command(saved.script, saved.sweep_id, sweep_dir.parents[1])
    return ConfigError(
        f"{damage}; the sweep's resume rebuilds its record from its settings, its journal and MLflow: {resume}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
