"""The command line every study shares: `python tune_jobs/<study>.py [options] [key=value ...]`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from tune_jobs.core.commands import command_line, resume_command
from tune_jobs.core.config import build_config, describe_fields, to_flat
from tune_jobs.core.errors import ConfigError, one_line
from tune_jobs.core.interrupts import EXIT_INTERRUPTED, Interrupted, describe_with
from tune_jobs.core.paths import experiment_file
from tune_jobs.core.plan import Composed, Plan, compose, plan, trial_label
from tune_jobs.core.preflight import check_fits, check_paths, local_resources
from tune_jobs.core.space import load_experiment, ray_resources
from tune_jobs.core.study import Study
from tune_jobs.core.tracking import MLFLOW_EVERY_ENV, mlflow_every, tracking_uri


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line naming it and the fix (exit 2), like every error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {one_line(message)}; see {self.prog} --help\n")


def parser(study: Study) -> argparse.ArgumentParser:
    p = OneLineParser(
        prog=f"python tune_jobs/{study.name}.py",
        description=f"Run the {study.name} study as one Ray Tune sweep, every trial logged to MLflow.",
        epilog="Overrides: dotted key=value, e.g. trainer.steps=500 space.n_components=[1,2] "
        "resources.cpu=2 resources.gpu=0.25 resources.custom.worker_slot=1 sweep.num_samples=20 profile=full. --help-config lists the keys.",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument(
        "--experiment",
        default=study.default_experiment,
        help=f"search_spaces/NAME.yaml or a path to a YAML (default: {study.default_experiment})",
    )
    p.add_argument(
        "--profile",
        choices=[k for k in study.profiles if k != "quick"],
        default=None,
        help="model/data sizes: local (default, a laptop) or full (the paper's, for GPUs)",
    )
    p.add_argument("--quick", action="store_true", help="a 1-2 minute smoke version of the sweep")
    p.add_argument("--dry-run", action="store_true", help="print the trials and exit without starting Ray")
    p.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        metavar="SWEEP_ID",
        help="finish an interrupted sweep (the newest of this experiment, or SWEEP_ID)",
    )
    p.add_argument(
        "--start-over",
        action="append",
        default=[],
        metavar="TRIAL",
        help="with --resume: TRIAL (its id or name) starts from scratch if none of its checkpoints loads; "
        "failed trials are retried too",
    )
    p.add_argument("--start-from", type=int, default=None, metavar="N", help="first grid trial to run (1-based)")
    p.add_argument("--stop-at", type=int, default=None, metavar="N", help="last grid trial to run (inclusive)")
    p.add_argument("--address", default=None, help="join a running Ray cluster ('auto' or host:port)")
    p.add_argument(
        "--mlflow-uri", default=None, help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)"
    )
    p.add_argument(
        "--mlflow-every",
        default=None,
        metavar="SECONDS",
        help="how often trials' results reach MLflow, in one batch per trial (default 30; starts and ends go at once)",
    )
    p.add_argument("--results-dir", default="results", help="where Ray results and reports go (default ./results)")
    p.add_argument("--help-config", action="store_true", help="list every config key with its default and help")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="show Ray's own output on the terminal (by default it goes to ray.log in the sweep's folder)",
    )
    return p


def _fmt_big(x: float) -> str:
    for unit, size in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= size:
            return f"{x / size:.3g}{unit}"
    return f"{x:.3g}"


def print_settings(c: Composed) -> None:
    """Every shared setting that a layer sets or that differs from the config's default, with
    where it was set: the study's profile, the experiment file (its `fixed:` or its per-profile
    values), --quick, or an override on the command line."""
    defaults = to_flat(c.study.config())
    values = to_flat(build_config(c.study.config, c.base, cross_check=False))
    shown = [k for k, v in values.items() if k in c.sources or defaults.get(k) != v]
    if not shown:
        return
    print("settings and where they come from (default: the study's config class):")
    rows = []
    for key in shown:
        same = " (= the default)" if key in c.sources and defaults.get(key) == values[key] else ""
        rows.append((f"{key} = {values[key]}", c.sources.get(key, "default") + same))
    _print_columns(rows, justify="left", gap=3)


def _print_columns(
    rows: Sequence[Sequence[str]], header: Sequence[str] = (), justify: str = "right", gap: int = 2
) -> None:
    """Columns `gap` spaces apart, indented by two, never wrapped (rich's table, no borders)."""
    import io

    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, padding=(0, gap // 2, 0, gap - gap // 2), show_header=bool(header))
    for name in header or rows[0]:
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*row)
    out = io.StringIO()
    Console(file=out, width=100_000, highlight=False, soft_wrap=True).print(table)
    for line in out.getvalue().splitlines():
        print("  " + line.rstrip())


def print_plan(p: Plan, extension: dict[str, Any] | None = None) -> None:
    """The sweep as it will run (an extension: its new trials only)."""
    if extension:
        from tune_jobs.core.extend import run_plan

        p = run_plan(p, extension)
        print("extends the finished sweep: the trials below are added, the others ran already")
    c = p.composed
    exp = c.experiment
    sched = ", ".join(f"{k}={v}" for k, v in exp.scheduler.items())
    res = ", ".join(f"{k}={v}" for k, v in ray_resources(exp.resources).items())
    print(f"study {c.study.name}, experiment {exp.name} ({exp.path})")
    print(
        f"search {exp.search}, scheduler {sched}, metric {exp.metric} ({exp.mode}, goal {exp.goal}), profile {c.profile}"
        + (" + quick" if c.quick else "")
    )
    print(f"resources per trial: {res}; max_failures={exp.max_failures}")
    if c.overrides:
        print("overrides: " + " ".join(c.overrides))
    print_settings(c)
    if p.sampled:
        per = f" ({exp.num_samples} points x {exp.seeds} seeds)" if exp.seeds > 1 else ""
        print(f"{p.count} trials sampled by {exp.search}{per} from:")
        for dim in exp.space:
            print(f"  {dim.key}: {dim.kind} {list(dim.values)}")
        return
    rows = []
    total_flops = 0.0
    for t in p.trials:
        row = {"#": str(t.number), "trial": trial_label(t.point)}
        if c.study.describe:
            row.update({k: str(v) for k, v in c.study.describe(t.cfg).items()})
        if c.study.estimate:
            est = c.study.estimate(t.cfg)
            total_flops += est.get("flops", 0.0)
            row.update({k: _fmt_big(v) for k, v in est.items()})
        rows.append(row)
    n = exp.seeds
    if extension:
        print(f"{len(rows)} new trials:")
    else:
        print(
            f"{len(rows)} trials" + (f" ({len(rows) // n} points x {n} seeds):" if n > 1 and not len(rows) % n else ":")
        )
    if rows:
        _print_columns([list(r.values()) for r in rows], header=list(rows[0]))
    if total_flops:
        print(f"compute estimate: {_fmt_big(total_flops)}FLOP of training in all (the study's estimate)")


def _resume_plan(study: Study, args: argparse.Namespace, results_dir: Path) -> tuple[Plan, Path, dict[str, Any]]:
    """The sweep to resume (its plan, its folder) and, when sweep.num_samples=N or
    sweep.seeds=N asks for more trials, what that extension adds ({} otherwise)."""
    from tune_jobs.core.extend import EXTENDS, extend, extended_overrides, override_key
    from tune_jobs.core.runner import check_resume_files, find_sweep
    from tune_jobs.core.tracking import sweep_finished
    from tune_jobs.core.tracking.sweep_file import SweepRecord

    more = [o for o in args.overrides if override_key(o) in EXTENDS]
    if len(more) < len(args.overrides) or args.quick or args.profile or args.start_from or args.stop_at:
        raise ConfigError(
            "--resume continues a sweep with its own settings; drop the overrides and --quick/--profile/--start-from/--stop-at "
            "(only sweep.num_samples=N and sweep.seeds=N, which extend a finished sweep)"
        )
    name = Path(args.experiment).stem
    sweep_dir = find_sweep(results_dir / "ray", name, args.resume or None)
    saved = SweepRecord.read(sweep_dir, resume=True)
    if saved.study != study.name:
        raise ConfigError(
            f"sweep {saved.sweep_id} belongs to study {saved.study}; "
            f"resume it with {resume_command(saved.script, saved.sweep_id)}"
        )
    experiment = load_experiment(Path(saved.experiment_file))
    composed = compose(study, experiment, profile=saved.profile, quick=saved.quick, overrides=saved.overrides)
    p = plan(composed)
    if saved.points:
        p.trials = [t for t in p.trials if t.point in saved.points]
    if composed.base != saved.base or [t.point for t in p.trials] != saved.points:
        raise ConfigError(
            f"{experiment.path} changed since sweep {saved.sweep_id} started; restore the file or start a new sweep"
        )
    check_resume_files(sweep_dir)
    if not more:
        return p, sweep_dir, {}
    overrides = extended_overrides(saved.overrides, more)
    wider = plan(compose(study, experiment, profile=saved.profile, quick=saved.quick, overrides=overrides))
    finished = sweep_finished(sweep_dir)
    p, share = extend(
        p, wider, sweep_id=saved.sweep_id, finished=finished, resume=_resume_command(study, args, saved.sweep_id)
    )
    return p, sweep_dir, share


def check_start_over(sweep_dir: Path | None, trials: Sequence[str]) -> None:
    """ConfigError unless the sweep is resumed and every name is one of its trials (its id or
    its label). Checked here, once, before a dry run or a sweep."""
    if sweep_dir is None:
        raise ConfigError("--start-over restarts trials of an interrupted sweep; use it with --resume")
    from tune_jobs.core.tracking import SweepFileError, recorded_trials

    try:
        known = recorded_trials(sweep_dir)  # a damaged record counts for nothing: the resume rebuilds it
    except SweepFileError as exc:
        raise ConfigError(str(exc)) from None
    names = set(known) | set(known.values())
    unknown = [t for t in trials if t not in names]
    if unknown:
        listed = ", ".join(f"{tid} ({name})" for tid, name in known.items()) or "none started yet"
        raise ConfigError(f"--start-over {unknown[0]}: no such trial in {sweep_dir.name}; its trials: {listed}")


def _script(study: Study) -> str:
    """The entry script as the user ran it (tune_jobs/<study>.py when run from Python)."""
    argv0 = sys.argv[0] if sys.argv else ""
    return argv0 if argv0.endswith(".py") and Path(argv0).name != "__main__.py" else f"tune_jobs/{study.name}.py"


def interrupted_line(study: Study, args: argparse.Namespace, exc: BaseException) -> str:
    """The one line printed after a Ctrl-C: what was stopped and the command that goes on."""
    if not isinstance(exc, Interrupted):  # raised outside run_sweep's own handling
        from tune_jobs.core import interrupts

        exc = Interrupted(interrupts.progress.sweep_id, interrupts.progress.stage)
    if exc.sweep_id is None:
        return "interrupted before the sweep started; nothing was run"
    if exc.stage == "report":
        uri = "" if args.mlflow_uri is None else f" --mlflow-uri {command_line(args.mlflow_uri)}"
        return (
            f"interrupted while building the report of sweep {exc.sweep_id} (its trials are all in MLflow); "
            f"build it with: python tune_jobs/report.py {exc.sweep_id}{uri}"
        )
    done = f" with {exc.finished} of {exc.total} trials finished" if exc.total else ""
    return (
        f"interrupted: sweep {exc.sweep_id} stopped{done}; finish it with: {_resume_command(study, args, exc.sweep_id)}"
    )


def _resume_command(study: Study, args: argparse.Namespace, sweep_id: str) -> str:
    return resume_command(_script(study), sweep_id, None if args.results_dir == "results" else args.results_dir)


def preflight(p: Plan, results_dir: Path, uri: str, address: str | None) -> None:
    """What would otherwise fail only after Ray started: a local Ray too small for one trial,
    a results folder or MLflow store that cannot be written."""
    import os

    if address is None and not os.environ.get("RAY_ADDRESS"):
        check_fits(ray_resources(p.composed.experiment.resources), local_resources())
    check_paths(results_dir, uri)
    from tune_jobs.core.tracking.mounts import network_store_warning

    warning = network_store_warning(uri)
    if warning:
        print(warning, file=sys.stderr, flush=True)


_SWEEP_HELP = """\
settings of the sweep, as key=value overrides too (an experiment YAML sets them at its top level):
  profile=NAME (default local): the study's settings for a machine: {profiles}
  space.KEY=[a,b,c]: the values of a key the experiment searches (a grid's points, a search's
    choices); space.KEY=a runs that one value; space.KEY={{loguniform:[lo,hi]}} any value kind
  sweep.num_samples=N (>= 1): trials an optuna or random search samples
  sweep.seeds=N (>= 1): every point of a grid or an optuna search run N times, seed, seed+1, ...;
    the summary gives each point's mean and spread over them
  sweep.max_concurrent=N (>= 0): trials at a time at most; 0 leaves it to the free resources
  sweep.max_failures=N (>= 0): restarts of a crashed trial from its last checkpoint
  sweep.scheduler.SETTING=V: a setting of the experiment's scheduler ({schedulers})
  resources.cpu=N (> 0), resources.gpu=N (>= 0; below 1 shares a GPU), resources.custom.NAME=N:
    what one trial asks Ray for\
"""


def main(study: Study, argv: Sequence[str] | None = None) -> int:
    args = parser(study).parse_intermixed_args(argv)  # key=value overrides on both sides of an option
    if args.help_config:
        from tune_jobs.core.plan import study_profiles
        from tune_jobs.core.space import SCHEDULERS

        profiles = [p for p in study_profiles(study) if p != "quick"]
        schedulers = "; ".join(f"{kind}: {', '.join(keys)}" for kind, keys in SCHEDULERS.items() if keys)
        sweep_help = _SWEEP_HELP.format(profiles=", ".join(profiles), schedulers=schedulers)
        print(f"config keys of study {study.name}:\n{describe_fields(study.config)}\n\n{sweep_help}")
        return 0
    try:
        results_dir = Path(args.results_dir).resolve()
        uri = tracking_uri(args.mlflow_uri)
        every = mlflow_every(args.mlflow_every)
        if every is not None:  # read by the tracker, a resumed sweep's restored one too
            os.environ[MLFLOW_EVERY_ENV] = str(every)
        resume_dir, extension = None, {}
        if args.resume is not None:
            p, resume_dir, extension = _resume_plan(study, args, results_dir)
        else:
            experiment = load_experiment(experiment_file(args.experiment))
            composed = compose(study, experiment, profile=args.profile, quick=args.quick, overrides=args.overrides)
            p = plan(composed, start_from=args.start_from, stop_at=args.stop_at)
        if args.start_over:
            check_start_over(resume_dir, args.start_over)
        if args.dry_run:
            check_paths(results_dir, uri)  # what the real run would refuse here; nothing is written
            print_plan(p, extension)
            return 0
        preflight(p, results_dir, uri, args.address)
        from tune_jobs.core.runner import run_sweep
        from tune_jobs.core.sweep_result import print_result
        from tune_jobs.core.tracking.login import check_login
        from tune_jobs.core.tracking.store import prepare_store
        from tune_jobs.core.tracking.sweep_file import SweepRecord

        # The store is created, checked or repaired once, under its lock, before Ray starts (and
        # before the plan is shown, so that a store it cannot use ends the command in one line).
        store_uri = SweepRecord.read(resume_dir).tracking_uri if resume_dir else uri
        prepare_store(store_uri)
        check_login(store_uri, p.composed.experiment.name)  # a team server's login, one line if refused
        print_plan(p, extension)

        describe_with(lambda exc: interrupted_line(study, args, exc))
        result = run_sweep(
            p,
            results_dir=results_dir,
            tracking_uri=uri,
            address=args.address,
            resume_dir=resume_dir,
            extension=extension,
            start_over=args.start_over,
            verbose=2 if args.verbose else 1,
        )
    except ConfigError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt) as exc:
        print(f"\n{interrupted_line(study, args, exc)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return print_result(result)
