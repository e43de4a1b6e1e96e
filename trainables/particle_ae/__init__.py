"""Particle-token autoencoder (study B): latent spaces and the globals head on HDF5 events.

Read in order: config.py (what can be set), data.py (the HDF5 layout, the synthetic file,
the streaming reader), vq.py (the EMA vector quantiser), model.py (encoder, bottleneck,
decoder, globals head), train.py (the loop and the per-trial files).
"""

from trainables.particle_ae.config import LATENT_SPACES, PROFILES, Config
from trainables.particle_ae.train import METRICS, check, estimate, train

__all__ = ["LATENT_SPACES", "METRICS", "PROFILES", "Config", "check", "estimate", "train"]
