"""The phase1a_lora study's declaration: its trainable, config, metrics, profiles, report and
compute budget, as the core runs them (`python tune_jobs/phase1a_lora.py` is its entry script)."""

from trainables import phase1a_lora
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
    report="trainables.phase1a_lora.report:build",
    budget=lambda params: (int(params["trainer.epochs"]), "epochs"),
    units_run=len,  # one report per epoch; `step` counts optimizer steps
)
