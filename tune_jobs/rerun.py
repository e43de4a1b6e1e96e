"""Rerun one trial from its MLflow run, with exactly its settings, as a new sweep of one, and
compare every metric it reports with the original's.

python tune_jobs/rerun.py <run id>
python tune_jobs/rerun.py <sweep id> <trial>     # the trial as its run is named: phase1/n_components=4

The rerun's sweep is the experiment `rerun-<experiment>` (its parent tagged `sweep.rerun_of`).
A rerun of other code is said in one line first: the trial's commit against this checkout's,
and uncommitted changes on either side (the original's are its parent run's uncommitted.diff).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

from tune_jobs.core.cli import OneLineParser
from tune_jobs.core.commands import command_line
from tune_jobs.core.errors import ConfigError, one_line
from tune_jobs.core.interrupts import EXIT_INTERRUPTED, Interrupted


def main(argv: Sequence[str] | None = None) -> int:
    p = OneLineParser(prog="python tune_jobs/rerun.py", description=__doc__.splitlines()[0])
    p.add_argument("run", help="the trial's MLflow run id, or its sweep's id followed by the trial's name")
    p.add_argument("trial", nargs="?", help="the trial's run name, when RUN is a sweep id")
    p.add_argument("--mlflow-uri", default=None, help="default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    p.add_argument("--results-dir", default="results", help="where the rerun's sweep goes (default ./results)")
    p.add_argument("--gpus", type=float, default=0, help="GPUs for the trial (default 0)")
    args = p.parse_args(argv)
    try:
        from tune_jobs.api import open_store
        from tune_jobs.core.tracking.trial_runs import find_trial

        client = open_store(args.mlflow_uri, hint="pass --mlflow-uri")
        run = find_trial(client, args.run, args.trial)
        parent = client.get_run(run.data.tags["mlflow.parentRunId"])
        study, config = _study_and_config(client, run, parent)
    except ConfigError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # the store failed (a server down, a refused login): one line
        from tune_jobs.core.tracking import tracking_uri
        from tune_jobs.core.tracking.failures import failure_line, mark_if_from_store

        if not mark_if_from_store(exc):
            raise
        print(f"error: {failure_line(exc, tracking_uri(args.mlflow_uri))}; try again", file=sys.stderr)
        return 1
    warning = code_warning(parent.data.tags.get("git.commit", ""))
    if warning:
        print(f"warning: {warning}", flush=True)
    tags = parent.data.tags
    print(f"rerunning {run.info.run_name} (run {run.info.run_id}, sweep {tags['sweep.id']})", flush=True)
    from tune_jobs.api import run_config

    try:
        rerun = run_config(
            study,
            config,
            f"rerun-{tags['sweep.experiment']}",
            metric=tags["sweep.metric"],
            mode=tags.get("sweep.mode", "min"),
            description=f"rerun of {run.info.run_name} (run {run.info.run_id})",
            gpus=args.gpus,
            results_dir=args.results_dir,
            mlflow_uri=args.mlflow_uri,
            verbose=1,
        )
    except ConfigError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt):
        # A rerun is a new sweep of one: started again, it starts from the trial's settings.
        again = command_line("python", "tune_jobs/rerun.py", *(sys.argv[1:] if argv is None else argv))
        print(f"\ninterrupted: the rerun stopped; start it again with: {again}", file=sys.stderr)
        return EXIT_INTERRUPTED
    (again,) = rerun.trials
    rerun.client.set_tag(rerun.parent.info.run_id, "sweep.rerun_of", run.info.run_id)
    same, lines = compare(client, run.info.run_id, again.run_id)
    print("\n".join(lines))
    print(
        f"rerun {again.name} (run {again.run_id}): "
        + ("every value of every metric is the original's, bit for bit" if same else "its metrics differ (above)")
    )
    return 0


def _study_and_config(client: Any, run: Any, parent: Any) -> tuple[Any, Any]:
    """The study the sweep ran and the trial's typed config."""
    from tune_jobs.core.config import build_config
    from tune_jobs.core.study import load_study
    from tune_jobs.core.tracking.trial_runs import trial_settings

    tags = parent.data.tags
    study = load_study(tags["sweep.study"], tags.get("sweep.study_module", ""), tags.get("sweep.study_file", ""))
    try:
        return study, build_config(study.config, trial_settings(client, run))
    except ConfigError as exc:
        raise ConfigError(f"the trial's settings no longer fit study {study.name}'s config: {exc}") from None


def code_warning(ran_at: str) -> str:
    """One line when the rerun's code may not be the trial's: another commit, or uncommitted
    changes on either side; empty when both are the same clean commit."""
    from tune_jobs.core.paths import git_commit

    now = git_commit()
    if not ran_at or ran_at == "unknown" or now == "unknown":
        return "the trial's commit or this checkout's is unknown: the rerun may run other code"
    if ran_at.removesuffix("-dirty") != now.removesuffix("-dirty"):
        return (
            f"the trial ran at commit {ran_at[:12]}, this checkout is at {now[:12]}: its numbers may differ "
            f"(git checkout {ran_at.removesuffix('-dirty')[:12]} reruns the trial's code)"
        )
    if ran_at.endswith("-dirty") or now.endswith("-dirty"):
        return (
            "uncommitted changes (the trial's are its sweep's uncommitted.diff, this checkout's git diff): "
            "its numbers may differ"
        )
    return ""


def compare(client: Any, original: str, rerun: str) -> tuple[bool, list[str]]:
    """Every metric's history in both runs: whether they are equal, and a table of each metric's
    last value in both and the steps where they differ."""
    from trainables.common.tables import table_lines
    from tune_jobs.core.tracking.trial_runs import histories

    before, after = histories(client, original), histories(client, rerun)
    rows, same = [], True
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key, []), after.get(key, [])
        differ = sum(1 for a, b in zip(old, new, strict=False) if not _same(a, b)) + abs(len(old) - len(new))
        same = same and differ == 0
        rows.append(
            (
                key,
                _shown(old[-1][1] if old else None),
                _shown(new[-1][1] if new else None),
                "equal" if differ == 0 else f"{differ} of {max(len(old), len(new))} values differ",
            )
        )
    return same, table_lines(["metric", "original (last)", "rerun (last)", "every step"], rows)


def _same(a: tuple[int, float], b: tuple[int, float]) -> bool:
    """The same step and value (NaN at the same step counts as the same)."""
    return a[0] == b[0] and (a[1] == b[1] or (math.isnan(a[1]) and math.isnan(b[1])))


def _shown(value: float | None) -> str:
    return "-" if value is None else repr(value)


if __name__ == "__main__":
    raise SystemExit(main())
