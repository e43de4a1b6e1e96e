"""Batch-size profiler of the denoising study: short runs per batch size, a markdown report.

python tune_jobs/denoising_profiler.py                                   # local profile, 4 sizes
python tune_jobs/denoising_profiler.py --experiment reference_3blob --profile full \\
    --batch-sizes 2048 5120 10240 20480 --epochs 5 trainer.device=cuda   # the seed's GPU sizes

The config is composed as for a sweep (study defaults <- experiment YAML <- profile <-
key=value overrides); a bad one is one line and exit 2. The report goes to
OUT/batch_size_profile.md (and .json) and is printed.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from trainables.denoising.study import STUDY
from tune_jobs.core.cli import OneLineParser
from tune_jobs.core.config import build_config
from tune_jobs.core.errors import ConfigError, one_line
from tune_jobs.core.paths import experiment_file
from tune_jobs.core.plan import compose
from tune_jobs.core.preflight import writable_dir
from tune_jobs.core.space import load_experiment


def main(argv: Sequence[str] | None = None) -> int:
    p = OneLineParser(prog="python tune_jobs/denoising_profiler.py", description=__doc__.splitlines()[0])
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, as for a sweep")
    p.add_argument(
        "--experiment", default="reference_3blob", help="search_spaces/NAME.yaml whose fixed settings to use"
    )
    p.add_argument("--profile", choices=["local", "full"], default=None, help="model/data sizes (default local)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 256, 512, 1024], metavar="N")
    p.add_argument(
        "--epochs", type=int, default=2, help="epochs per batch size, at least 2: the first is warm-up (default 2)"
    )
    p.add_argument("--samples", type=int, default=None, help="samples per epoch (default: the config's data.n_train)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per run (a sweep trial gets resources.cpu)")
    p.add_argument("--out", default="results/denoising/batch_size_profile", help="folder for the report")
    args = p.parse_args(argv)
    try:
        if args.epochs < 2:
            raise ConfigError(
                f"--epochs {args.epochs}: the first epoch is warm-up and the times are medians over the epochs "
                "after it; use --epochs 2 or more"
            )
        if args.threads < 1:
            raise ConfigError(f"--threads {args.threads}: must be at least 1, e.g. --threads 1")
        if min(args.batch_sizes) < 1:
            raise ConfigError(f"--batch-sizes {min(args.batch_sizes)}: every batch size must be at least 1")
        if args.samples is not None and args.samples < max(args.batch_sizes):
            raise ConfigError(
                f"--samples {args.samples} is smaller than the largest batch size {max(args.batch_sizes)}; "
                f"use --samples {max(args.batch_sizes)} or more"
            )
        experiment = load_experiment(experiment_file(args.experiment))
        overrides = list(args.overrides) + ([f"data.n_train={args.samples}"] if args.samples else [])
        composed = compose(STUDY, experiment, profile=args.profile, overrides=overrides)
        cfg = build_config(STUDY.config, composed.base)
        for size in args.batch_sizes:  # each run's config must be valid before any runs
            build_config(STUDY.config, composed.base, {"trainer.batch_size": size})
        out = Path(args.out)
        writable_dir(out, "--out", "pick a folder you can write, e.g. --out results/denoising/batch_size_profile")
    except ConfigError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    from trainables.denoising import profiler

    rows = profiler.profile(cfg, args.batch_sizes, epochs=args.epochs, threads=args.threads)
    title = f"{experiment.name}, profile {composed.profile}"
    text = profiler.markdown(rows, cfg, epochs=args.epochs, threads=args.threads, title=title)
    out.mkdir(parents=True, exist_ok=True)
    (out / "batch_size_profile.md").write_text(text)
    pick, reason = profiler.recommend(rows)
    (out / "batch_size_profile.json").write_text(
        json.dumps(
            {
                "rows": [dataclasses.asdict(r) for r in rows],
                "recommended": pick.batch_size if pick else None,
                "reason": reason,
            },
            indent=1,
        )
    )
    print(text)
    print(f"report: {out / 'batch_size_profile.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
