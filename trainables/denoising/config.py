"""Config of the sparse-denoising study (study C, the 3-blob hunt), with its size profiles.

Field names follow the seed's configs where they had one (noise_variance, lambda_on,
decoder_reg, hidden_size, n_train); every field is checked before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainables.common import param, section


@dataclass
class DataConfig:
    d: int = param(512, "signal dimension; each clean signal x* has exactly 2 ones among d", ge=3)
    noise_variance: float = param(
        0.005, "variance of the Gaussian noise added to x*: x = x* + N(0, noise_variance)", ge=0
    )
    n_train: int = param(150_000, "samples per epoch, drawn fresh every batch (the epoch length)", ge=1)
    val_samples: int = param(2048, "fixed validation samples (the same for every seed) for val/loss", ge=16)


@dataclass
class ModelConfig:
    hidden_size: int = param(256, "h: width of the tanh^3 hidden layer", ge=1)
    encoder_init_scale: float = param(0.03, "encoder weights: xavier-normal times this", gt=0)
    decoder_init_scale: float = param(0.03, "decoder weights: xavier-normal times this", gt=0)


@dataclass
class LossConfig:
    lambda_on: float = param(
        16.0, "weight of the squared error on the 2 on-coordinates (off-coordinates weigh 1)", gt=0
    )
    decoder_reg: float = param(0.03, "decoder_reg * ||W2||^2 is added to the loss", ge=0)
    encoder_reg: float = param(0.0, "encoder_reg * ||W1||^2 is added to the loss", ge=0)


@dataclass
class TrainerConfig:
    optimizer: str = param("adam", "the optimizer (the seed's runs all used Adam)", choices=["adam"])
    lr: float = param(0.02, "learning rate", gt=0, le=1)
    epochs: int = param(9, "epochs of n_train samples; one report (and checkpoint) per epoch", ge=1)
    batch_size: int = param(512, "samples per step (see tune_jobs/denoising_profiler.py to pick it)", ge=1)
    device: str = param("auto", "cpu, cuda or auto (cuda when present)", choices=["auto", "cpu", "cuda"])


@dataclass
class DiagnosticsConfig:
    enabled: bool = param(True, "compute the weight-pair diagnostics (blob/*) after every epoch")
    sample_size: int = param(
        3000, "weight pairs (W1[j,i], W2[i,j]) sampled for the diagnostics", ge=50, used_when="diagnostics.enabled=true"
    )
    eps: float = param(
        0.5,
        "DBSCAN eps, in units of the sample's standard deviation along each axis",
        gt=0,
        used_when="diagnostics.enabled=true",
    )
    min_samples: int = param(
        5, "DBSCAN min_samples: points within eps that make a core point", ge=2, used_when="diagnostics.enabled=true"
    )
    min_blob_fraction: float = param(
        0.002,
        "a DBSCAN cluster holding less than this fraction of the sample is noise, not a blob",
        ge=0,
        lt=1,
        used_when="diagnostics.enabled=true",
    )
    silhouette_sample: int = param(
        1000,
        "points for the silhouette, shared equally among the blobs (its cost grows as n^2)",
        ge=20,
        used_when="diagnostics.enabled=true",
    )
    gmm_sample: int = param(
        500,
        "points used to fit the Gaussian mixtures (1-5 components, picked by BIC)",
        ge=20,
        used_when="diagnostics.enabled=true",
    )
    target_blobs: int = param(3, "the blob count blob/score rewards", ge=1, used_when="diagnostics.enabled=true")
    scatter: str = param(
        "budget",
        "weight-pair scatter PNGs in artifacts/weight_pairs/: at the last epoch and, with 'budget', at "
        "earlier epochs while the plotting time stays within overhead_budget of the training time; "
        "'every' epoch; or the 'last' only",
        choices=["budget", "every", "last"],
        used_when="diagnostics.enabled=true",
    )
    overhead_budget: float = param(
        0.05,
        "the share of training time the scatter plots may take ('budget')",
        gt=0,
        le=1,
        used_when="diagnostics.enabled=true and diagnostics.scatter=budget",
    )


@dataclass
class Config:
    seed: int = param(
        0, "seeds the init and the data stream; validation and the pair sample are the same for every seed", ge=0
    )
    data: DataConfig = section(DataConfig, "the two-hot signals and their noise")
    model: ModelConfig = section(ModelConfig, "Linear(d, h) -> tanh^3 -> Linear(h, d)")
    loss: LossConfig = section(LossConfig, "the lambda_on-weighted squared error and the weight penalties")
    trainer: TrainerConfig = section(TrainerConfig, "optimisation")
    diagnostics: DiagnosticsConfig = section(DiagnosticsConfig, "the per-epoch blob diagnostics")

    def check(self) -> None:
        """Cross-field rules; each message names the fields and the fix."""
        if self.trainer.batch_size > self.data.n_train:
            raise ValueError(
                f"trainer.batch_size={self.trainer.batch_size} is larger than data.n_train={self.data.n_train}; "
                "an epoch must hold at least one batch"
            )

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch (derived once, here): the last, partial batch is dropped."""
        return self.data.n_train // self.trainer.batch_size


# Profiles are applied after the experiment YAML and before command-line overrides.
# The defaults above are the laptop's size (the `local` profile, as in every study). `full` is
# the seed's reference configuration (for GPUs). `local` halves d and h of the reference and
# shortens the run so the default search fits ~15 minutes on a 2-core laptop;
# measured here (1 CPU thread, reference hyperparameters), d = 512, h = 256 grows three
# clean blobs within ~1M samples. `quick` is the smoke size: d = 256, h = 128 reaches three blobs
# in its 3 short epochs at the reference hyperparameters (measured here, ~0.35 s per epoch).
PROFILES: dict[str, dict[str, object]] = {
    "full": {
        "data.d": 1024,
        "model.hidden_size": 512,
        "data.n_train": 300_000,
        "data.val_samples": 4096,
        "trainer.batch_size": 1024,
        "trainer.epochs": 20,
        "diagnostics.sample_size": 5000,
    },
    "local": {},
    "quick": {
        "data.d": 256,
        "model.hidden_size": 128,
        "data.n_train": 32_768,
        "data.val_samples": 512,
        "trainer.batch_size": 128,
        "trainer.epochs": 3,
        "diagnostics.sample_size": 2000,
        "diagnostics.silhouette_sample": 500,
        "diagnostics.gmm_sample": 300,
    },
}

# What the trainable reports (a sweep's metric must be one of these).
METRICS = (
    "step",
    "train/loss",
    "train/data_loss",
    "val/loss",
    "val/loss_vs_zero",
    "baseline/zero_loss",
    "baseline/identity_loss",
    "blob/score",
    "blob/n_clusters",
    "blob/silhouette",
    "blob/correlation",
    "blob/gmm_components",
    "blob/noise_fraction",
    "perf/epoch_s",
    "perf/samples_per_s",
    "perf/diag_s",
    "perf/diag_fraction",
    "perf/plot_s",
    "perf/overhead_fraction",
)

# The blob/* metrics come from the diagnostics: reported only when they run.
METRICS_WHEN = {m: "diagnostics.enabled=true" for m in METRICS if m.startswith("blob/")}
