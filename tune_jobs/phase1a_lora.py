"""Phase 1a + LoRA: does LoRA with minimal supervision improve F1 over pure reconstruction?
(study D, shared/DESIGN.md; the seed's 11-configuration sweep with ASHA on val/f1)

python tune_jobs/phase1a_lora.py                          # 11 configs, tiny Llama + synthetic QA (~20 min, 2 cores)
python tune_jobs/phase1a_lora.py data.samples=300 trainer.epochs=1   # the seed's smoke size
SAMPLES=300 EPOCHS=1 python tune_jobs/phase1a_lora.py     # the same: SAMPLES/EPOCHS become those overrides
python tune_jobs/phase1a_lora.py --quick                  # 1-2 minute smoke version
python tune_jobs/phase1a_lora.py profile=full resources.gpu=1 --address auto   # Llama-3.1-8B, SQuAD from the hub
python tune_jobs/report.py phase1a_lora                   # rebuild the report from MLflow
"""

import os
import sys

import tune_jobs.core.startup  # noqa: F401  (first: a Ctrl-C while importing exits quietly)
from trainables import phase1a_lora
from tune_jobs.core.cli import main
from tune_jobs.core.study import Study

STUDY = Study(
    name="phase1a_lora",
    train="trainables.phase1a_lora.train:train",
    config=phase1a_lora.Config,
    metrics=phase1a_lora.METRICS,
    default_experiment="phase1a_lora",
    profiles=phase1a_lora.PROFILES,
    describe=lambda cfg: {
        "model": cfg.model.source if cfg.model.source == "tiny" else cfg.model.path,
        "lora": f"r={cfg.lora.r} alpha={cfg.lora.alpha:g} layers={cfg.lora.layers}/{cfg.lora.of_layers or 'model'}"
        if cfg.lora.enabled
        else "off (baseline)",
        "tiny layers": f"{cfg.lora_depth(cfg.model.tiny.layers) if cfg.lora.enabled else 0}/{cfg.model.tiny.layers}"
        if cfg.model.source == "tiny"
        else "-",
        "d_z": cfg.compression.d_z,
        "ce1": cfg.loss.first_token_ce_weight,
        "k_ce": cfg.loss.k_ce_weight,
        "kd": cfg.loss.kd_weight,
        "samples": cfg.data.samples,
        "epochs": cfg.trainer.epochs,
    },
    estimate="trainables.phase1a_lora.train:estimate",
    validate="trainables.phase1a_lora.checks:check",
    report="tune_jobs.reports.phase1a_lora:build",
    budget=lambda params: (int(params["trainer.epochs"]), "epochs"),
    units_run=len,  # one report per epoch; `step` counts optimizer steps
)

# The seed's smoke sizes as environment variables: SAMPLES=300 EPOCHS=1 python tune_jobs/phase1a_lora.py
SEED_ENV = {"SAMPLES": "data.samples", "EPOCHS": "trainer.epochs"}


def seed_overrides(argv: list[str]) -> list[str]:
    """SAMPLES / EPOCHS as overrides placed first, so the command line's own overrides win."""
    return [f"{key}={os.environ[var]}" for var, key in SEED_ENV.items() if os.environ.get(var)] + argv


if __name__ == "__main__":
    raise SystemExit(main(STUDY, seed_overrides(sys.argv[1:])))
