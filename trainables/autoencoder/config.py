"""Config of the particle-token autoencoder study, with its size profiles."""

from __future__ import annotations

from dataclasses import dataclass

from trainables.common import param, section

LATENT_SPACES = ("none", "linear", "vq")


@dataclass
class DataConfig:
    path: str = param(
        "",
        "HDF5 file in the thesis layout (X_train/X_val [N, 2 + 5 n_tokens], Y_train/y_val); "
        "empty: the project's synthetic file of that layout, written once under cache_dir",
    )
    cache_dir: str = param(
        "", "where the synthetic file is kept; empty: $XDG_CACHE_HOME or ~/.cache, /tune-sweeps", used_when="data.path="
    )
    n_tokens: int = param(18, "particle slots per event (the thesis files hold 18)", ge=1, le=256)
    n_train: int = param(50000, "events of the synthetic train split", ge=16, used_when="data.path=")
    n_val: int = param(
        10000, "events of the synthetic validation split (and of the test split)", ge=16, used_when="data.path="
    )
    synth_seed: int = param(2024, "seed of the synthetic file (part of its cache name)", ge=0, used_when="data.path=")
    log_momenta: bool = param(True, "z-score log E, log pT and log(1 + MET) instead of GeV (they are lognormal-like)")
    chunk_events: int = param(16384, "events read from the file at a time when streaming", ge=1)
    in_memory_mb: int = param(512, "splits smaller than this are read once and kept in memory; 0 streams always", ge=0)


@dataclass
class ModelConfig:
    latent_space: str = param("linear", "bottleneck of each token's latent", choices=list(LATENT_SPACES))
    globals_beta: float = param(1.0, "weight of the globals head loss (MET, METphi); 0 turns it off", ge=0)
    hidden: int = param(64, "width of the token encoder, decoder and globals head MLPs", ge=1)
    layers: int = param(2, "hidden layers of each MLP", ge=1, le=8)
    type_embedding: int = param(8, "size of the particle-type embedding fed to the encoder", ge=1)
    latent_dim: int = param(6, "per-token latent size (the encoder's output; the vq code size)", ge=1)
    bottleneck_dim: int = param(
        3, "linear: size of the learned projection of the latent", ge=1, used_when="model.latent_space=linear"
    )


@dataclass
class VQConfig:
    codebook_size: int = param(128, "codes in the codebook", ge=2, used_when="model.latent_space=vq")
    commitment: float = param(
        0.25, "weight of the commitment loss ||z_e - sg(z_q)||^2", ge=0, used_when="model.latent_space=vq"
    )
    decay: float = param(0.99, "EMA decay of code counts and sums", gt=0, lt=1, used_when="model.latent_space=vq")
    init: str = param(
        "kmeans",
        "codebook init from the first batch's latents",
        choices=["data", "kmeans"],
        used_when="model.latent_space=vq",
    )
    kmeans_iters: int = param(10, "Lloyd iterations of the k-means init", ge=1, used_when="model.latent_space=vq")
    dead_threshold: float = param(
        0.5,
        "reset a code to a random latent of the batch when its EMA count falls below this; 0 never",
        ge=0,
        used_when="model.latent_space=vq",
    )


@dataclass
class TrainerConfig:
    epochs: int = param(20, "passes over the train split", ge=1)
    batch_size: int = param(256, "events per step", ge=1)
    lr: float = param(2e-3, "Adam learning rate", gt=0, le=1)
    weight_decay: float = param(0.0, "Adam weight decay", ge=0)
    checkpoint_every: int = param(1, "epochs between checkpoints (the last epoch always is one)", ge=1)
    device: str = param("auto", "cpu, cuda or auto (cuda when present)", choices=["auto", "cpu", "cuda"])


@dataclass
class Config:
    seed: int = param(0, "seeds the model init, the batch order and the codebook resets", ge=0)
    data: DataConfig = section(DataConfig, "the HDF5 events")
    model: ModelConfig = section(ModelConfig, "token encoder, bottleneck, decoder, globals head")
    vq: VQConfig = section(VQConfig, "the vector-quantised bottleneck (latent_space=vq)")
    trainer: TrainerConfig = section(TrainerConfig, "optimisation")

    def check(self) -> None:
        if self.model.latent_space == "linear" and self.model.bottleneck_dim > self.model.latent_dim:
            raise ValueError(
                f"model.bottleneck_dim={self.model.bottleneck_dim} is larger than model.latent_dim="
                f"{self.model.latent_dim}; a linear bottleneck projects down, pick bottleneck_dim <= latent_dim"
            )


# The seeds give the grid and 20 epochs but no model sizes; `full` is a GPU-sized model on a
# large synthetic file (or on the user's real file via data.path). `local` keeps the grid and
# the 20 epochs and shrinks model and data so the 9-trial sweep runs on a 2-core laptop in
# about 15 minutes; `quick` is a smoke test. Applied after the experiment YAML, before overrides.
PROFILES: dict[str, dict[str, object]] = {
    "full": {
        "data.n_train": 500000,
        "data.n_val": 50000,
        "model.hidden": 256,
        "model.layers": 3,
        "model.type_embedding": 16,
        "model.latent_dim": 32,
        "model.bottleneck_dim": 16,
        "vq.codebook_size": 512,
        "trainer.batch_size": 1024,
        "trainer.lr": 1e-3,
    },
    "local": {},
    "quick": {
        "data.n_train": 2000,
        "data.n_val": 500,
        "model.hidden": 32,
        "vq.codebook_size": 32,
        "trainer.epochs": 3,
    },
}

# What the trainable reports (a sweep's metric must be one of these).
METRICS = (
    "step",
    "train/total_loss",
    "train/rec_tokens",
    "train/rec_globals",
    "train/vq_loss",
    "val/loss",
    "val/total_loss",
    "val/rec_tokens",
    "val/rec_globals",
    "vq/perplexity",
    "vq/code_usage",
    "vq/train_code_usage",
    "vq/dead_resets",
    "time/epoch_s",
)
