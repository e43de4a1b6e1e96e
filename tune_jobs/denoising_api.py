"""The seed's notebook API for the 3-blob hunt, on top of the sweep service.

    from tune_jobs.denoising_api import create_config, run_experiment, quick_run, load_results, compare_experiments

    config = create_config("reference_3blob")                        # the seed's reference (local profile)
    config2 = create_config("reference_3blob", encoder_init_scale=0.05)
    quick_run(config2)                                                # in-process, reduced epochs and data
    run_experiment(config, "validation_run")                          # one trial through Ray + MLflow + report
    load_results("validation_run").best                               # read back from MLflow
    compare_experiments(["validation_run", "denoising_search"])       # side by side

A config is the study's typed `Config` (trainables/denoising/config.py): change it with
create_config's keywords or attribute by attribute (`config.diagnostics.sample_size = 5000`).
Mistakes raise ConfigError with the same one-line messages as the command line.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from trainables.denoising import Config
from tune_jobs.core.config import build_config, field_table, to_flat
from tune_jobs.core.errors import ConfigError
from tune_jobs.core.paths import experiment_file, safe_name, tracking_uri
from tune_jobs.core.plan import compose

# The seed's own names for a few settings.
ALIASES = {
    "encoder_initialization_scale": "model.encoder_init_scale",
    "decoder_initialization_scale": "model.decoder_init_scale",
    "learning_rate": "trainer.lr",
    "enable_diagnostics": "diagnostics.enabled",
    "diagnostic_sample_size": "diagnostics.sample_size",
}
QUICK_EPOCHS = 3
QUICK_SAMPLES = 100_000
KEY_PARAMS = (
    "data.d",
    "model.hidden_size",
    "model.encoder_init_scale",
    "model.decoder_init_scale",
    "loss.decoder_reg",
    "loss.lambda_on",
    "trainer.lr",
    "data.noise_variance",
    "trainer.epochs",
)


def _resolve(name: str) -> str:
    """A keyword to its dotted key: dotted as given, a seed alias, or a unique last part."""
    keys = list(field_table(Config))
    if name in keys:
        return name
    if name in ALIASES:
        return ALIASES[name]
    matches = [k for k in keys if k.rsplit(".", 1)[-1] == name]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ConfigError(
            f"{name!r} is ambiguous ({', '.join(matches)}); pass the dotted key as **{{'{matches[0]}': ...}}"
        )
    from tune_jobs.core.config import unknown_key_message

    raise ConfigError(unknown_key_message(name, keys, ""))


def create_config(base: str = "reference_3blob", *, profile: str = "local", **overrides: Any) -> Config:
    """The config of experiment `base` (search_spaces/<base>.yaml, its fixed settings) at
    `profile`, with `overrides` by last name (`lr=0.01`), seed alias or dotted key."""
    from tune_jobs.denoising import STUDY

    experiment = _load(base)
    composed = compose(STUDY, experiment, profile=profile)
    resolved = {_resolve(k): v for k, v in overrides.items()}
    return build_config(Config, composed.base, resolved)


def _load(base: str):
    from tune_jobs.core.space import load_experiment

    return load_experiment(experiment_file(base))


# -- running -------------------------------------------------------------------------------
def quick_run(
    config: Config,
    experiment_name: str | None = None,
    *,
    epochs: int = QUICK_EPOCHS,
    samples_per_epoch: int = QUICK_SAMPLES,
    out_dir: str | os.PathLike[str] = "results/quick",
) -> dict[str, Any]:
    """Train `config` in this process with at most `epochs` epochs of `samples_per_epoch`
    samples (no Ray, no MLflow). Returns the per-epoch history, the last row, the folder."""
    from trainables.common import LocalContext
    from trainables.denoising.train import train

    flat = to_flat(config)
    flat["trainer.epochs"] = min(epochs, config.trainer.epochs)
    flat["data.n_train"] = max(min(samples_per_epoch, config.data.n_train), config.trainer.batch_size)
    cfg = build_config(Config, flat)
    name = safe_name(experiment_name or time.strftime("quick-%Y%m%d-%H%M%S"))
    folder = Path(out_dir) / name
    ctx = LocalContext(folder, resume=False)  # a new quick run, not a resume of an old one
    train(cfg, ctx)
    scatters = sorted((ctx.artifact_dir / "weight_pairs").glob("*.png"))
    return {
        "config": cfg,
        "history": pd.DataFrame(ctx.history),
        "final": ctx.history[-1],
        "dir": folder,
        "scatter": scatters[-1] if scatters else None,
    }


def run_experiment(
    config: Config,
    name: str,
    *,
    cpus: int = 1,
    gpus: float = 0,
    results_dir: str | os.PathLike[str] = "results",
    mlflow_uri: str | None = None,
) -> ExperimentResults:
    """Run `config` as a one-trial sweep named `name` through the service (Ray, MLflow,
    report), as `python tune_jobs/denoising.py --experiment <the YAML it writes>` would."""
    import ray

    from tune_jobs.core.plan import plan
    from tune_jobs.core.runner import run_sweep
    from tune_jobs.core.space import load_experiment
    from tune_jobs.denoising import STUDY

    results = Path(results_dir).resolve()
    uri = tracking_uri(mlflow_uri)
    path = _write_experiment(config, name, results / "api", cpus=cpus, gpus=gpus)
    composed = compose(STUDY, load_experiment(path), profile="local")
    started_here = not ray.is_initialized()
    try:
        run_sweep(plan(composed), results_dir=results, tracking_uri=uri, address=None, verbose=0)
    finally:
        if started_here:
            ray.shutdown()
    return load_results(path.stem, mlflow_uri=uri)


def _write_experiment(config: Config, name: str, folder: Path, *, cpus: int, gpus: float) -> Path:
    """A one-trial experiment file fixing every key of `config`."""
    flat = to_flat(config)
    path = folder / f"{safe_name(name)}.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "study": "denoising",
        "description": "written by tune_jobs.denoising_api.run_experiment: one trial of this exact config",
        "metric": "blob/score",
        "mode": "max",
        "search": "grid",
        "scheduler": {"kind": "fifo"},
        "resources": {"cpu": cpus, "gpu": gpus},
        "max_failures": 1,
        # Every key fixed: an experiment's `fixed:` wins over the study's profiles.
        "fixed": flat,
    }
    path.write_text(f"# python tune_jobs/denoising.py --experiment {path}\n" + yaml.safe_dump(spec, sort_keys=False))
    return path


# -- reading back ----------------------------------------------------------------------------
@dataclass
class ExperimentResults:
    experiment: str
    sweep_id: str
    trials: pd.DataFrame  # one row per trial, best blob score first (trainables/denoising/report.py)
    history: pd.DataFrame  # run, step, metric, value: the four panels and the blob score per epoch
    params: dict[str, dict[str, str]]  # run name -> its whole config as MLflow holds it

    @property
    def best(self) -> dict[str, Any]:
        if self.trials.empty:
            return {}
        row = self.trials.iloc[0].to_dict()
        return row | {k: self.params.get(row["run"], {}).get(k) for k in KEY_PARAMS}


def load_results(name: str, *, mlflow_uri: str | None = None) -> ExperimentResults:
    """The newest sweep of experiment `name` (or a sweep id), read back from MLflow."""
    from trainables.denoising.report import PANELS, SCORE, collect
    from tune_jobs.core.reporting import SweepData, find_parent
    from tune_jobs.core.tracking.client import open_client

    uri = tracking_uri(mlflow_uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).exists():
        raise ConfigError(f"no MLflow store at {uri}; run from the folder holding mlflow.db or pass mlflow_uri=")
    client = open_client(uri)  # under the store's lock, as every process of ours opens it
    sweep = SweepData(client, find_parent(client, name))
    rows = [
        {"run": t.name, "step": step, "metric": key, "value": value}
        for t in sweep.trials
        for key in (SCORE, *(k for k, _ in PANELS))
        for step, value in sweep.history(t.run_id, key)
    ]
    return ExperimentResults(
        experiment=sweep.experiment,
        sweep_id=sweep.sweep_id,
        trials=collect(sweep),
        history=pd.DataFrame(rows, columns=["run", "step", "metric", "value"]),
        params={t.name: dict(t.params) for t in sweep.trials},
    )


def compare_experiments(names: Sequence[str], *, mlflow_uri: str | None = None) -> pd.DataFrame:
    """One row per experiment: its best trial's blob diagnostics and key hyperparameters."""
    from trainables.denoising.report import FINAL

    rows = []
    for name in names:
        res = load_results(name, mlflow_uri=mlflow_uri)
        best = res.best
        three = int((res.trials["blob/n_clusters"] == 3).sum()) if not res.trials.empty else 0
        rows.append(
            {
                "experiment": res.experiment,
                "sweep": res.sweep_id,
                "trials": len(res.trials),
                "trials_with_3_blobs": three,
                "best_run": best.get("run"),
                **{k: best.get(k) for k in FINAL},
                **{k: best.get(k) for k in KEY_PARAMS},
            }
        )
    return pd.DataFrame(rows)


__all__ = [
    "ExperimentResults",
    "compare_experiments",
    "create_config",
    "load_results",
    "quick_run",
    "run_experiment",
]
