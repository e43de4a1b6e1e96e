"""What the service adds to Ray Tune as a sweep grows, measured side by side in one run.

    python bench/scale.py                    # N = 10, 100, 1000 trivial trials (~25 min on 2 cores)
    python bench/scale.py --max-n 100        # N = 10, 100
    python bench/scale.py --speed-only       # only the trainable's own speed, inside Tune and bare
    python bench/scale.py --search optuna --seconds 0.2 --reports 1 --ns 100,1000   # an Optuna search

For each N: N trials that each sleep `--seconds` in `--reports` reports (a checkpoint with each,
as the studies do), `--cpu` CPU per trial, random search, FIFO; run (a) through the service (a
study written outside the repo, as tests/core/test_divergence.py writes one: entry script, YAML,
MLflow) and (b) through bare Ray Tune (the same loop as a function trainable, `tune.Tuner`,
`reuse_actors=True`, Tune's defaults otherwise), each in a fresh process with its own Ray. The
ideal is N x seconds / slots. Printed per N: wall times and their ratios, the time from the
Tuner's start to the first finished trial, and the driver process's own CPU seconds and bytes
written (to the file system, /proc/self/io) per trial.

With `--search optuna` both sides search with Optuna's TPE (the service as it always does; bare
Tune with `OptunaSearch`, as its docs show it, without a ConcurrencyLimiter), and each row adds
the mean number of trials running (their summed run times over the sweep's span, from each
trial's start and end) and the best val/score each had found at the same moment (the shorter
sweep's span from its own first trial start).

Then the trainable's own speed: one phase1 trial (the quick model, 1 CPU, 1 thread) through the
service, its steps/s from the times Tune measured between its reports, against the same
`train` run bare (no Ray) in this process with 1 thread, before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STUDY = '''
"""Trivial trials: sleep, report, checkpoint."""
import atexit
import json
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

from trainables.common import param, section
from tune_jobs.core.cli import main
from tune_jobs.core.study import Study


@dataclass
class Trainer:
    reports: int = param(5, "reports (each with a checkpoint)", ge=1)
    seconds: float = param(1.0, "seconds of sleep per trial, spread over its reports", ge=0)
    x: float = param(0.5, "the searched value")


@dataclass
class Config:
    seed: int = param(0, "seed")
    trainer: Trainer = section(Trainer, "the trial")


def train(cfg, ctx):
    state = ctx.restored_state()
    for step in range((state or {}).get("step", -1) + 1, cfg.trainer.reports):
        time.sleep(cfg.trainer.seconds / cfg.trainer.reports)
        ctx.report({"step": step, "val/score": cfg.trainer.x * (step + 1)}, {"step": step})


{usage}

STUDY = Study(
    name="trivial",
    train=train,
    config=Config,
    metrics=("step", "val/score"),
    default_experiment="trivial",
    report=lambda sweep, out: [],
)

if __name__ == "__main__":
    atexit.register(lambda: Path(os.environ["SCALE_USAGE"]).write_text(json.dumps(driver_usage())))
    raise SystemExit(main(STUDY))
'''


def driver_usage() -> dict:
    """This process's own CPU seconds and bytes written to the file system."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    io = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    written = int(io["write_bytes"]) - int(io["cancelled_write_bytes"])
    return {"user": ru.ru_utime, "sys": ru.ru_stime, "written": written}


EXPERIMENT = """\
# python trivial.py --experiment trivial.yaml
study: trivial
metric: val/score
mode: max
search: {search}
num_samples: {n}
scheduler: {{kind: fifo}}
resources: {{cpu: {cpu}}}
fixed: {{trainer.reports: {reports}, trainer.seconds: {seconds}}}
space:
  trainer.x: {{uniform: [0.0, 1.0]}}
"""


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_ADDRESS", "TUNE_"))}
    out["PYTHONPATH"] = str(ROOT) + os.pathsep + out.get("PYTHONPATH", "")
    return out


def through_service(work: Path, n: int, args: argparse.Namespace) -> dict:
    import inspect

    (work / "trivial.py").write_text(STUDY.replace("{usage}", inspect.getsource(driver_usage)))
    spec = EXPERIMENT.format(n=n, cpu=args.cpu, reports=args.reports, seconds=args.seconds, search=args.search)
    (work / "trivial.yaml").write_text(spec)
    usage = work / "usage.json"
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "trivial.py", "--experiment", "trivial.yaml", "--mlflow-uri", f"sqlite:///{work}/mlflow.db"],
        cwd=work,
        env={**env(), "SCALE_USAGE": str(usage)},
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"the service run (N={n}) failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    (state_file,) = (work / "results" / "ray").glob("trivial-*/mlflow_runs.json")
    state = json.loads(state_file.read_text())
    ends = [t["end_ms"] for t in state["trials"].values() if "end_ms" in t]
    assert len(ends) == n, f"{len(ends)} of {n} trials ended"
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{work}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("trivial").experiment_id], max_results=5000)
    spans = [
        (r.info.start_time / 1000, r.info.end_time / 1000, r.data.metrics["val/score"])
        for r in runs
        if r.data.tags.get("sweep.role") == "trial"
    ]
    return {
        "wall": wall,
        "first": (min(ends) - state["start_ms"]) / 1000,
        "spans": spans,
        **json.loads(usage.read_text()),
    }


def bare_tune(work: Path, n: int, args: argparse.Namespace) -> dict:
    usage = work / "usage.json"
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, "--bare-child", str(n), "--work", str(work), *_forward(args)],
        env={**env(), "SCALE_USAGE": str(usage)},
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"the bare Tune run (N={n}) failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return {"wall": wall, **json.loads(usage.read_text())}


def _forward(args: argparse.Namespace) -> list[str]:
    out = ["--cpu", str(args.cpu), "--reports", str(args.reports), "--seconds", str(args.seconds)]
    return [*out, "--search", args.search]


def bare_child(n: int, work: Path, args: argparse.Namespace) -> None:
    """Bare Ray Tune: the same loop as a function trainable, Tune's defaults otherwise."""
    import ray
    from ray import tune

    from trainables.common.context import save_state

    reports, seconds = args.reports, args.seconds

    def trainable(config: dict) -> None:
        checkpoint = tune.get_checkpoint()
        start = 0
        if checkpoint is not None:
            from trainables.common.context import load_state

            with checkpoint.as_directory() as d:
                start = load_state(Path(d) / "state.pt")["step"] + 1
        for step in range(start, reports):
            time.sleep(seconds / reports)
            with tempfile.TemporaryDirectory() as d:
                save_state({"step": step}, Path(d) / "state.pt")
                tune.report(
                    {"step": step, "val/score": config["x"] * (step + 1)}, checkpoint=tune.Checkpoint.from_directory(d)
                )

    class FirstDone(tune.Callback):
        def setup(self, **info):
            self.start, self.first, self.started, self.spans = time.time(), None, {}, []

        def on_trial_start(self, iteration, trials, trial, **info):
            self.started[trial.trial_id] = time.time()

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.first = self.first or time.time() - self.start
            score = trial.last_result["val/score"]
            self.spans.append((self.started.get(trial.trial_id, self.start), time.time(), score))

    first = FirstDone()
    search_alg = None
    if args.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(seed=0)  # as Tune's docs show it: no ConcurrencyLimiter
    ray.init(include_dashboard=False, logging_level="WARNING")
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": args.cpu}),
        param_space={"x": tune.uniform(0.0, 1.0)},
        tune_config=tune.TuneConfig(
            num_samples=n, metric="val/score", mode="max", reuse_actors=True, search_alg=search_alg
        ),
        run_config=tune.RunConfig(name="bare", storage_path=str(work / "ray"), callbacks=[first], verbose=1),
    )
    grid = tuner.fit()
    assert len(grid) == n and not grid.errors
    ray.shutdown()
    Path(os.environ["SCALE_USAGE"]).write_text(
        json.dumps({"first": first.first, "tune_start": first.start, "spans": first.spans, **driver_usage()})
    )


def running_mean(spans: list) -> float:
    """Trials running on average over the sweep's span: their summed run times over it."""
    return sum(end - start for start, end, _ in spans) / (max(e for _, e, _ in spans) - min(s for s, _, _ in spans))


def best_by(spans: list, seconds: float) -> float:
    """The best val/score among the trials that ended within `seconds` of the first start."""
    first = min(s for s, _, _ in spans)
    done = [score for _, end, score in spans if end - first <= seconds]
    return max(done) if done else float("nan")


def span(spans: list) -> float:
    return max(e for _, e, _ in spans) - min(s for s, _, _ in spans)


def trainable_speed(steps: int) -> tuple[float, float, float]:
    """(bare before, inside Tune, bare after): steps/s of one phase1 quick trial, 1 thread."""
    overrides = ["space.n_components=[2]", f"trainer.steps={steps}", "trainer.eval_every=100"]
    overrides += ["trainer.checkpoint_every=500", "resources.cpu=1"]

    def bare() -> float:
        import torch

        from trainables.common import LocalContext
        from tune_jobs.core.plan import compose, plan
        from tune_jobs.core.space import load_experiment
        from tune_jobs.phase1 import STUDY as PHASE1

        class Timed(LocalContext):
            def report(self, metrics, state=None):
                super().report(metrics, state)
                self.times.append((metrics["step"], time.perf_counter()))

        exp = load_experiment(ROOT / "search_spaces" / "phase1.yaml")
        (trial,) = plan(compose(PHASE1, exp, quick=True, overrides=overrides)).trials
        torch.set_num_threads(1)  # what the adapter sets for a 1-CPU trial
        with tempfile.TemporaryDirectory() as tmp:
            ctx = Timed(tmp)
            ctx.times = []
            PHASE1.train(trial.cfg, ctx)
        (s0, t0), (s1, t1) = ctx.times[0], ctx.times[-1]
        return (s1 - s0) / (t1 - t0)

    before = bare()
    with tempfile.TemporaryDirectory(prefix="scale-speed-") as tmp:
        work = Path(tmp)
        out = subprocess.run(
            [sys.executable, str(ROOT / "tune_jobs" / "phase1.py"), "--quick", *overrides, "--results-dir", "results"]
            + ["--mlflow-uri", f"sqlite:///{work}/mlflow.db"],
            cwd=work,
            env=env(),
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            sys.exit(f"the phase1 trial failed:\n{out.stderr[-3000:]}")
        (result,) = (work / "results" / "ray").glob("phase1-*/*/result.json")
        rows = [json.loads(line) for line in result.read_text().splitlines()]
    inside = (rows[-1]["step"] - rows[0]["step"]) / (rows[-1]["time_total_s"] - rows[0]["time_total_s"])
    return before, inside, bare()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-n", type=int, default=1000, help="largest N of 10, 100, 1000 (default 1000)")
    p.add_argument("--ns", default=None, help="the Ns to run, comma-separated (default 10,100,1000 up to --max-n)")
    p.add_argument("--search", choices=("random", "optuna"), default="random", help="the search (default random)")
    p.add_argument("--cpu", type=float, default=0.25, help="CPU per trial (default 0.25: 8 at a time on 2 cores)")
    p.add_argument("--reports", type=int, default=5)
    p.add_argument("--seconds", type=float, default=1.0, help="sleep per trial (default 1 s)")
    p.add_argument("--speed-steps", type=int, default=1500, help="steps of the phase1 trial for the speed check")
    p.add_argument("--speed-only", action="store_true")
    p.add_argument("--skip-speed", action="store_true", help="leave out the trainable's own speed")
    p.add_argument("--bare-child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.bare_child is not None:
        bare_child(args.bare_child, args.work, args)
        return

    cores = os.cpu_count() or 1
    slots = int(cores / args.cpu)
    print(f"load before: {os.getloadavg()[0]:.1f} (1-min average, {cores} cores)")
    if not args.speed_only:
        rows = []
        ns = [int(n) for n in args.ns.split(",")] if args.ns else [n for n in (10, 100, 1000) if n <= args.max_n]
        for n in ns:
            with tempfile.TemporaryDirectory(prefix=f"scale-{n}-") as tmp:
                (Path(tmp) / "bare").mkdir()
                (Path(tmp) / "service").mkdir()
                bare = bare_tune(Path(tmp) / "bare", n, args)
                service = through_service(Path(tmp) / "service", n, args)
            rows.append((n, n * args.seconds / slots, bare, service))
            print(f"N={n} done (bare {bare['wall']:.0f} s, service {service['wall']:.0f} s)", flush=True)
        print(
            f"\n{args.reports} reports + checkpoints and {args.seconds:g} s of sleep per trial, {args.cpu:g} CPU "
            f"each ({slots} at a time on {cores} cores), {args.search} search, FIFO; wall = the whole command"
        )
        head = ("N", "ideal s", "bare s", "service s", "svc/bare", "svc/ideal", "1st done bare/svc s")
        head += ("driver CPU s/trial bare/svc", "driver kB written/trial bare/svc")
        print(" | ".join(head))
        for n, ideal, b, s in rows:
            cpu_b, cpu_s = (b["user"] + b["sys"]) / n, (s["user"] + s["sys"]) / n
            print(
                f"{n} | {ideal:.1f} | {b['wall']:.1f} | {s['wall']:.1f} | {s['wall'] / b['wall']:.2f} | "
                f"{s['wall'] / ideal:.2f} | {b['first']:.1f} / {s['first']:.1f} | {cpu_b:.3f} / {cpu_s:.3f} | "
                f"{b['written'] / n / 1e3:.0f} / {s['written'] / n / 1e3:.0f}"
            )
        if args.search == "optuna":
            print("\nN | trials running on average bare / svc | best val/score by the shorter span bare / svc")
            for n, _, b, s in rows:
                t = min(span(b["spans"]), span(s["spans"]))
                print(
                    f"{n} | {running_mean(b['spans']):.2f} / {running_mean(s['spans']):.2f} | "
                    f"{best_by(b['spans'], t):.4f} / {best_by(s['spans'], t):.4f} (at {t:.0f} s)"
                )
    if args.skip_speed:
        return
    before, inside, after = trainable_speed(args.speed_steps)
    bare = (before + after) / 2
    print(
        f"\ntrainable speed (phase1 quick, 1 thread): bare {before:.0f} then {after:.0f} steps/s, "
        f"inside Tune {inside:.0f} steps/s: {inside / bare:.2f}x bare"
    )
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
