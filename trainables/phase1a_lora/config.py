"""Config of the Phase 1a + LoRA study (study D), with its size profiles.

Every loss weight is explicit here (the original sweep left k_ce_weight at 0.5 by accident).
LoRA layer counts are the seed's, counted on Llama-3.1-8B's 32 decoder layers
(`lora.of_layers`); a model of another depth gets the same share of its layers, so the local
tiny Llama runs the seed's grid as written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trainables.common import param, section


@dataclass
class DataConfig:
    source: str = param(
        "synthetic",
        "synthetic: extractive QA the project generates; squad: a SQuAD v1.1 JSON file (data.path)",
        choices=["synthetic", "squad"],
    )
    path: str = param(
        "",
        "SQuAD v1.1 JSON (train-v1.1.json) when data.source=squad, or hub:rajpurkar/squad (its train split)",
        used_when="data.source=squad",
    )
    val_path: str = param(
        "",
        "SQuAD v1.1 JSON for validation (dev-v1.1.json) or hub:NAME (its validation split); empty: held out from data.path",
        used_when="data.source=squad",
    )
    samples: int = param(5000, "training questions (the seed's SAMPLES)", ge=1)
    val_samples: int = param(300, "validation questions scored with F1/EM after every epoch", ge=1)
    max_prompt_tokens: int = param(96, "prompt tokens kept (from the end: the question survives)", ge=8)
    max_answer_tokens: int = param(8, "answer tokens trained on and generated", ge=1)
    seed: int = param(0, "seed of the synthetic questions (training uses it, validation seed + 1)", ge=0)


@dataclass
class TinyLlamaConfig:
    hidden_size: int = param(64, "width of the tiny Llama", ge=8, used_when="model.source=tiny")
    intermediate_size: int = param(128, "MLP width of the tiny Llama", ge=8, used_when="model.source=tiny")
    layers: int = param(4, "decoder layers of the tiny Llama", ge=1, used_when="model.source=tiny")
    heads: int = param(4, "attention heads of the tiny Llama", ge=1, used_when="model.source=tiny")
    pretrain_steps: int = param(
        4000, "pretraining steps on synthetic QA text before any trial", ge=1, used_when="model.source=tiny"
    )
    pretrain_batch: int = param(32, "pretraining batch size", ge=1, used_when="model.source=tiny")
    pretrain_lr: float = param(
        3e-3, "pretraining peak learning rate (warmup, cosine decay)", gt=0, used_when="model.source=tiny"
    )
    pretrain_samples: int = param(
        20000, "synthetic questions the tiny Llama is pretrained on", ge=100, used_when="model.source=tiny"
    )
    pretrain_text_weight: float = param(
        1.0,
        "weight of the language-modelling loss on the prompt text (the answer's weighs 1)",
        ge=0,
        used_when="model.source=tiny",
    )
    seed: int = param(0, "seed of the tiny Llama and its pretraining data", ge=0, used_when="model.source=tiny")
    cache_dir: str = param(
        "",
        "where the pretrained tiny Llama is kept; empty: $XDG_CACHE_HOME or ~/.cache, /tune-sweeps",
        used_when="model.source=tiny",
    )


@dataclass
class ModelConfig:
    source: str = param(
        "tiny",
        "tiny: the project's pretrained tiny Llama (cached); pretrained: model.path with from_pretrained",
        choices=["tiny", "pretrained"],
    )
    path: str = param(
        "", "local folder or hub name of a causal LM (model.source=pretrained)", used_when="model.source=pretrained"
    )
    dtype: str = param("float32", "weights and activations of the LLM", choices=["float32", "bfloat16", "float16"])
    tiny: TinyLlamaConfig = section(TinyLlamaConfig, "the tiny Llama of the local profile")


@dataclass
class CompressionConfig:
    kind: str = param(
        "pca", "pca: fitted on the training prompts' embeddings; linear: learned", choices=["pca", "linear"]
    )
    d_z: int = param(16, "compressed size of each token embedding", ge=1)
    adapter_width: int = param(256, "hidden width of the adapter MLP (d_z -> width -> width -> H)", ge=1)


@dataclass
class LoraConfig:
    enabled: bool = param(True, "LoRA on the LLM; false: the no-LoRA baseline (the LLM stays frozen)")
    r: int = param(8, "LoRA rank", ge=1, used_when="lora.enabled=true")
    alpha: float = param(16.0, "LoRA alpha (scale alpha / r)", gt=0, used_when="lora.enabled=true")
    layers: int = param(
        32, "LoRA on the first `layers` decoder layers, counted on lora.of_layers", ge=1, used_when="lora.enabled=true"
    )
    of_layers: int = param(
        32,
        "the depth lora.layers is counted on (the seed's: Llama-3.1-8B's 32); a model of another depth gets "
        "the same share, rounded up; 0: lora.layers counts the model's own layers",
        ge=0,
        used_when="lora.enabled=true",
    )
    dropout: float = param(0.0, "LoRA dropout", ge=0, lt=1, used_when="lora.enabled=true")


@dataclass
class LossConfig:
    recon_weight: float = param(1.0, "weight of the reconstruction loss (1 - cosine + 0.1 MSE)", ge=0)
    first_token_ce_weight: float = param(0.01, "weight of the CE of the first answer token", ge=0)
    k_ce_weight: float = param(0.0, "weight of the CE over the first k_tokens answer tokens", ge=0)
    k_tokens: int = param(
        4,
        "K: answer tokens under the K-token CE and the KD",
        ge=1,
        used_when="loss.k_ce_weight>0 or loss.kd_weight>0",
    )
    kd_weight: float = param(0.0, "weight of the KL to the same LLM fed the original embeddings", ge=0)
    kd_temperature: float = param(1.0, "temperature of the KD", gt=0, used_when="loss.kd_weight>0")


@dataclass
class TrainerConfig:
    epochs: int = param(3, "passes over the training questions (the seed's EPOCHS); one report per epoch", ge=1)
    batch_size: int = param(32, "questions per step", ge=1)
    lr: float = param(1e-3, "learning rate of the compressor/adapter", gt=0)
    lora_lr: float = param(1e-3, "learning rate of the LoRA matrices", gt=0, used_when="lora.enabled=true")
    eval_batch: int = param(64, "questions per generation batch", ge=1)
    samples_shown: int = param(20, "validation predictions kept in predictions.jsonl", ge=0)
    device: str = param("auto", "cpu, cuda or auto (cuda when present)", choices=["auto", "cpu", "cuda"])


@dataclass
class Config:
    seed: int = param(0, "seeds the adapter init and the batch order", ge=0)
    data: DataConfig = section(DataConfig, "the questions: synthetic or SQuAD v1.1")
    model: ModelConfig = section(ModelConfig, "the LLM")
    compression: CompressionConfig = section(CompressionConfig, "compressor and adapter MLP")
    lora: LoraConfig = section(LoraConfig, "LoRA on the LLM (peft)")
    loss: LossConfig = section(LossConfig, "the loss terms, each with an explicit weight")
    trainer: TrainerConfig = section(TrainerConfig, "optimisation and evaluation")

    def check(self) -> None:
        """Cross-field rules; each message names the fields and the fix."""
        if self.lora.of_layers and self.lora.layers > self.lora.of_layers:
            raise ValueError(
                f"lora.layers={self.lora.layers} is beyond the {self.lora.of_layers} layers it is counted on "
                f"(lora.of_layers); use 1..{self.lora.of_layers}"
            )
        if self.model.source == "tiny" and not self.lora.of_layers and self.lora.layers > self.model.tiny.layers:
            raise ValueError(
                f"lora.layers={self.lora.layers} is beyond the tiny Llama's {self.model.tiny.layers} layers; "
                f"use 1..{self.model.tiny.layers}"
            )
        if self.model.source == "pretrained" and not self.model.path:
            raise ValueError("model.source=pretrained needs model.path (a local folder or a hub name)")
        if self.data.source == "squad" and not self.data.path:
            raise ValueError("data.source=squad needs data.path (a SQuAD v1.1 JSON file such as train-v1.1.json)")
        width = self.model.tiny.hidden_size
        if self.model.source == "tiny" and self.compression.kind == "pca" and self.compression.d_z > width:
            raise ValueError(
                f"compression.d_z={self.compression.d_z} is above the tiny Llama's width "
                f"(model.tiny.hidden_size={width}), and PCA keeps at most that many directions; "
                f"use compression.d_z=1..{width}"
            )
        if self.model.tiny.hidden_size % self.model.tiny.heads:
            raise ValueError(
                f"model.tiny.hidden_size={self.model.tiny.hidden_size} is not a multiple of "
                f"model.tiny.heads={self.model.tiny.heads}"
            )

    def lora_depth(self, n_layers: int) -> int:
        """How many of a model's `n_layers` layers get LoRA (derived once, here)."""
        if not self.lora.of_layers:
            return self.lora.layers
        return min(n_layers, math.ceil(self.lora.layers * n_layers / self.lora.of_layers))


# Profiles are applied after the experiment YAML and before command-line overrides.
# `full` is the seed's setup (Llama-3.1-8B-Instruct in bf16, SQuAD v1.1 from the hub or data.path=FILE;
# 5000 questions, 3 epochs, batch 32). `local` is the same study on the project's tiny Llama
# and synthetic QA. `quick` is the smoke size: few questions, one epoch, a smaller tiny Llama
# pretrained briefly (its own cache entry; its answers are not meant to be good).
PROFILES: dict[str, dict[str, object]] = {
    "local": {},
    "full": {
        "model.source": "pretrained",
        "model.path": "meta-llama/Meta-Llama-3.1-8B-Instruct",
        "model.dtype": "bfloat16",
        "data.source": "squad",
        "data.path": "hub:rajpurkar/squad",
        "data.val_path": "hub:rajpurkar/squad",
        "data.max_prompt_tokens": 384,
        "data.max_answer_tokens": 16,
        "compression.d_z": 512,
        "compression.adapter_width": 4096,
        "trainer.lr": 1e-4,
        "trainer.lora_lr": 2e-4,
        "trainer.eval_batch": 16,
    },
    "quick": {
        "data.samples": 128,
        "data.val_samples": 32,
        "trainer.epochs": 1,
        "model.tiny.hidden_size": 32,
        "model.tiny.intermediate_size": 64,
        "model.tiny.pretrain_steps": 60,
        "model.tiny.pretrain_samples": 1000,
        "compression.adapter_width": 64,
    },
}

# What the trainable reports (a sweep's metric must be one of these).
METRICS = (
    "step",
    "epoch",
    "train/loss",
    "train/recon",
    "train/first_ce",
    "train/k_ce",
    "train/kd",
    "val/f1",
    "val/em",
    "val/first_token_acc",
    "val/diversity",
    "val/repetition",
    "val/collapsed",
    "val/recon_cosine",
    "baseline/text_f1",
    "baseline/text_em",
    "lora/layers",
    "lora/trainable_params",
    "pca/explained_variance",
    "perf/epoch_s",
    "perf/tokens_per_s",
    "perf/peak_mem_mb",
)
