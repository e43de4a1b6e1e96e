"""Particle-token autoencoder (study B): latent spaces and the globals head on HDF5 events.

Read in order: config.py (what can be set), data.py (the HDF5 layout, the synthetic file,
the streaming reader), vq.py (the EMA vector quantiser), model.py (encoder, bottleneck,
decoder, globals head), train.py (the loop and the per-trial files).

Importing the package loads its config only (no torch): the training function is
`trainables.autoencoder.train.train`, imported where a trial runs.
"""

from trainables.autoencoder.config import LATENT_SPACES, METRICS, PROFILES, Config

__all__ = ["LATENT_SPACES", "METRICS", "PROFILES", "Config"]
