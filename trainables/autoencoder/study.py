"""The autoencoder study's declaration: its trainable, config, metrics, profiles, report and
compute budget, as the core runs them (`python tune_jobs/autoencoder.py` is its entry script)."""

from trainables import autoencoder as study_package
from tune_jobs.core.study import Study


def _bottleneck(cfg: study_package.Config) -> str:
    m = cfg.model
    if m.latent_space == "linear":
        return f"linear {m.latent_dim}->{m.bottleneck_dim}"
    if m.latent_space == "vq":
        return f"vq {cfg.vq.codebook_size} codes x {m.latent_dim}"
    return f"none {m.latent_dim}-d"


STUDY = Study(
    name="autoencoder",
    train="trainables.autoencoder.train:train",
    config=study_package.Config,
    metrics=study_package.METRICS,
    default_experiment="compare_globals_heads",
    profiles=study_package.PROFILES,
    describe=lambda cfg: {
        "bottleneck": _bottleneck(cfg).replace(" ", "_"),
        "beta": f"{cfg.model.globals_beta:g}",
        "epochs": cfg.trainer.epochs,
        "data": cfg.data.path or f"synthetic:{cfg.data.n_train}/{cfg.data.n_val}",
    },
    estimate="trainables.autoencoder.train:estimate",
    validate="trainables.autoencoder.train:check",
    report="trainables.autoencoder.report:build",
    budget=lambda params: (int(params["trainer.epochs"]), "epochs"),
)
