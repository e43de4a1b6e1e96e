"""Config of the in-context mixture-regression study, with its two size profiles."""

from __future__ import annotations

from dataclasses import dataclass

from trainables.common import param, section


@dataclass
class DataConfig:
    n_dims: int = param(5, "dimension d of each x ~ N(0, I_d)", ge=1, le=64)
    n_components: int = param(1, "K: mixture components, one context block each", ge=1, le=64)
    total_contexts: int = param(
        24,
        "context points over all blocks (block size round(total/K))",
        ge=1,
        used_when="data.contexts_per_component=0",
    )
    contexts_per_component: int = param(0, "points per context block; 0 derives it as round(total_contexts / K)", ge=0)
    target_points: int = param(3, "labelled points of the target block before the query", ge=0)
    scale: float = param(0.1, "weights w_k ~ N(0, scale^2 I), applied once", gt=0)
    noise_std: float = param(0.0, "std of Gaussian noise on y, in the units of y", ge=0)

    @property
    def block_size(self) -> int:
        """C: points per context block (derived once, here)."""
        if self.contexts_per_component:
            return self.contexts_per_component
        return max(1, int(self.total_contexts / self.n_components + 0.5))

    @property
    def n_points(self) -> int:
        """Points per prompt: K blocks of C, the target block and the query."""
        return self.n_components * self.block_size + self.target_points + 1


@dataclass
class ModelConfig:
    n_embd: int = param(64, "transformer width", ge=8)
    n_layer: int = param(3, "transformer layers", ge=1)
    n_head: int = param(4, "attention heads (must divide n_embd)", ge=1)
    backbone: str = param(
        "gpt2",
        "gpt2 (transformers' GPT2Model) or lean (the same blocks on torch's fused attention, faster on CPU)",
        choices=["gpt2", "lean"],
    )


@dataclass
class TrainerConfig:
    steps: int = param(5001, "optimizer steps", ge=1)
    batch_size: int = param(64, "prompts per step", ge=1)
    lr: float = param(1e-3, "Adam learning rate", gt=0, le=1)
    warmup_steps: int = param(300, "linear learning-rate warm-up steps", ge=0)
    lr_schedule: str = param(
        "constant",
        "after warm-up: constant, or cosine (down to lr_final x lr at the last step)",
        choices=["constant", "cosine"],
    )
    lr_final: float = param(
        0.1,
        "the cosine schedule's last learning rate, as a fraction of lr",
        ge=0,
        le=1,
        used_when="trainer.lr_schedule=cosine",
    )
    loss_positions: str = param(
        "all",
        "train on every x position ('all'), on the target block and the query ('target') or on the query alone ('query')",
        choices=["all", "target", "query"],
    )
    curriculum_start_dims: int = param(
        2,
        "curriculum (as in Garg et al.): train with only the first N input dimensions non-zero, "
        "adding one every curriculum_every steps up to n_dims; 0 turns it off",
        ge=0,
    )
    curriculum_every: int = param(
        300, "steps between curriculum increments", ge=1, used_when="trainer.curriculum_start_dims>0"
    )
    eval_every: int = param(100, "steps between evaluations on the fixed validation prompts", ge=1)
    eval_prompts: int = param(1024, "validation prompts (the baselines use the same ones)", ge=16)
    final_eval_prompts: int = param(
        32768,
        "held-out prompts the trained model and the baselines are judged on at the last step "
        "(large, so the zero predictor's nMSE is within about 2% of 1)",
        ge=16,
    )
    checkpoint_every: int = param(500, "steps between checkpoints (a multiple of eval_every)", ge=1)
    device: str = param("auto", "cpu, cuda or auto (cuda when present)", choices=["auto", "cpu", "cuda"])


@dataclass
class Config:
    seed: int = param(
        0, "seeds model init and the data stream; the evaluation prompts are the same for every seed", ge=0
    )
    data: DataConfig = section(DataConfig, "the prompt distribution")
    model: ModelConfig = section(ModelConfig, "the GPT-2 backbone")
    trainer: TrainerConfig = section(TrainerConfig, "optimisation and evaluation")

    def check(self) -> None:
        """Cross-field rules; each message names the fields and the fix."""
        if self.model.n_embd % self.model.n_head:
            raise ValueError(
                f"model.n_embd={self.model.n_embd} is not divisible by model.n_head="
                f"{self.model.n_head}; pick a head count that divides the width"
            )
        if self.trainer.checkpoint_every % self.trainer.eval_every:
            raise ValueError(
                f"trainer.checkpoint_every={self.trainer.checkpoint_every} must be a multiple of "
                f"trainer.eval_every={self.trainer.eval_every}"
            )


# Warm-up and the curriculum are on by default: without them the model stays at the zero
# predictor far longer, or for the whole run (the runs are in trainables/phase1/README.md).
#
# The defaults above are the laptop's size (the `local` profile, as in every study): every
# study parameter as specified, with a network small enough for the 8-trial sweep on 2 cores.
# `full` is the specified model (GPT-2 256 wide, 12 layers, 8 heads; for GPUs); `quick` is a
# smoke test. A profile's values come before the experiment YAML's and the command line's.
PROFILES: dict[str, dict[str, object]] = {
    "full": {"model.n_embd": 256, "model.n_layer": 12, "model.n_head": 8},
    "local": {},
    "quick": {
        "model.n_embd": 32,
        "model.n_layer": 2,
        "model.n_head": 2,
        "trainer.batch_size": 32,
        "trainer.steps": 301,
        "trainer.eval_every": 50,
        "trainer.checkpoint_every": 100,
        "trainer.eval_prompts": 256,
        "trainer.final_eval_prompts": 2048,
        "trainer.warmup_steps": 30,
        "trainer.curriculum_every": 50,
    },
}

# What the trainable reports (a sweep's metric must be one of these).
METRICS = (
    "step",
    "train/loss",
    "val/nmse",
    "val/nmse_rel_oracle",
    "baseline/zero_nmse",
    "baseline/lstsq_nmse",
    "baseline/oracle_nmse",
    *(
        f"final/{name}{se}"
        for name in ("nmse", "zero_nmse", "lstsq_nmse", "oracle_nmse", "nmse_minus_lstsq")
        for se in ("", "_se")
    ),
)
