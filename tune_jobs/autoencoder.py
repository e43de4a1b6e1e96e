"""Particle-token autoencoder: latent spaces x globals head (study B, shared/DESIGN.md).

python tune_jobs/autoencoder.py --experiment compare_globals_heads   # 3 x 3: beta x latent space
python tune_jobs/autoencoder.py --experiment compare_latent_spaces   # none / linear / vq, beta 1
python tune_jobs/autoencoder.py --dry-run                            # the trials, nothing run
python tune_jobs/autoencoder.py data.path=/data/events.h5 trainer.epochs=50   # your own file
"""

import tune_jobs.core.startup  # noqa: F401  (first: a Ctrl-C while importing exits quietly)
from trainables import particle_ae
from tune_jobs.core.cli import main
from tune_jobs.core.study import Study


def _bottleneck(cfg: particle_ae.Config) -> str:
    m = cfg.model
    if m.latent_space == "linear":
        return f"linear {m.latent_dim}->{m.bottleneck_dim}"
    if m.latent_space == "vq":
        return f"vq {cfg.vq.codebook_size} codes x {m.latent_dim}"
    return f"none {m.latent_dim}-d"


STUDY = Study(
    name="autoencoder",
    train="trainables.particle_ae.train:train",
    config=particle_ae.Config,
    metrics=particle_ae.METRICS,
    default_experiment="compare_globals_heads",
    profiles=particle_ae.PROFILES,
    describe=lambda cfg: {
        "bottleneck": _bottleneck(cfg).replace(" ", "_"),
        "beta": f"{cfg.model.globals_beta:g}",
        "epochs": cfg.trainer.epochs,
        "data": cfg.data.path or f"synthetic:{cfg.data.n_train}/{cfg.data.n_val}",
    },
    estimate="trainables.particle_ae.train:estimate",
    validate="trainables.particle_ae.train:check",
    report="tune_jobs.reports.autoencoder:build",
    budget=lambda params: (int(params["trainer.epochs"]), "epochs"),
)

if __name__ == "__main__":
    raise SystemExit(main(STUDY))
