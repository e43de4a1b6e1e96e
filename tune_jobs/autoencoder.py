"""Particle-token autoencoder: latent spaces x globals head (study B).

python tune_jobs/autoencoder.py --experiment compare_globals_heads   # 3 x 3: beta x latent space
python tune_jobs/autoencoder.py --experiment compare_latent_spaces   # none / linear / vq, beta 1
python tune_jobs/autoencoder.py --dry-run                            # the trials, nothing run
python tune_jobs/autoencoder.py data.path=/data/events.h5 trainer.epochs=50   # your own file
"""

import tune_jobs.core.startup  # noqa: F401  (first: a Ctrl-C while importing exits quietly)
from trainables.autoencoder.study import STUDY
from tune_jobs.core.cli import main

if __name__ == "__main__":
    raise SystemExit(main(STUDY))
