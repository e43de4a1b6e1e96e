"""Publish a sweep's MLflow runs into another tracking store, e.g. a team's MLflow server.

python -m tune_jobs.publish results/ray/phase1-20261121-070828-1dbb --to http://mlflow.internal:5000
python -m tune_jobs.publish 20261121-070828-1dbb --to http://mlflow.internal:5000   # by id, in ./mlflow.db
python -m tune_jobs.publish phase1 --to sqlite:////shared/mlflow.db --mlflow-uri sqlite:///other.db

The parent run and every trial run go into the experiment of the same name there (made if
missing), with their params, tags, full metric histories, status, times and artifacts. Run it
again at any time: runs already there are left alone, runs that changed since (a sweep resumed
after an interrupt) or a publish that stopped half-way are brought up to date; nothing is copied
twice. A server's login comes from MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or
~/.mlflow/credentials, as MLflow reads them; it needs EDIT on the experiment.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tune_jobs.core.cli import OneLineParser
from tune_jobs.core.commands import command_line
from tune_jobs.core.errors import ConfigError, one_line
from tune_jobs.core.interrupts import EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    p = OneLineParser(prog="python -m tune_jobs.publish", description=__doc__.splitlines()[0])
    p.add_argument(
        "sweep",
        help="the sweep's folder (results/ray/<experiment>-<sweep id>), or a sweep id, parent run id, "
        "experiment or study name (its newest sweep) in --mlflow-uri",
    )
    p.add_argument("--to", required=True, metavar="URI", help="where to: http://host:port, sqlite:///path.db, ...")
    p.add_argument(
        "--mlflow-uri",
        default=None,
        help="the sweep's store (default: the one its folder names, else $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)",
    )
    args = p.parse_args(argv)
    from tune_jobs.core.tracking import publish as pub
    from tune_jobs.core.tracking import tracking_uri
    from tune_jobs.core.tracking.uri import check_uri_has_no_password

    try:
        if not args.to.strip():
            raise ConfigError("--to is empty; give the destination's tracking URI, e.g. http://host:5000")
        check_uri_has_no_password(args.to, "--to")
        source = pub.find_source(args.sweep, args.mlflow_uri)
        dest = pub.open_destination(tracking_uri(args.to), source)
        note = pub.unsent_note(source.sweep_dir)  # after the checks: an error stays one line
        if note:
            print(f"warning: {note}", file=sys.stderr, flush=True)
        experiment = source.experiment.name
        print(f"publishing sweep {source.sweep_id} (experiment {experiment}) to {dest.uri}", flush=True)
        done = pub.publish(source, dest, say=lambda line: print(f"  {line}", flush=True))
    except ConfigError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        again = command_line("python", "-m", "tune_jobs.publish", *(sys.argv[1:] if argv is None else argv))
        print(f"\ninterrupted: publish again to finish (nothing is copied twice): {again}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        failure = pub.store_failure(exc)
        if failure is None:
            raise
        print(f"error: {failure}; run this again: it goes on where it stopped", file=sys.stderr)
        return 1
    print(
        f"sweep {source.sweep_id}: {len(done.copied)} runs copied, {len(done.already)} already there, "
        f"{len(done.updated)} updated"
    )
    print(f"  parent run:  {done.ids[source.parent.info.run_id]} in experiment {experiment}")
    print(f"  browse:      {pub.browse_line(dest, has_view=pub.VIEW_TAG in source.experiment.tags)}")
    if done.running:
        print(
            f"  note: {len(done.running)} runs are still RUNNING in the source (the sweep runs, or was interrupted); "
            "publish again once it has finished"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
