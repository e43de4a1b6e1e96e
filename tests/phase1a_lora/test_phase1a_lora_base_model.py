"""The LLM: the full profile's from_pretrained path (a tiny saved Llama in bf16 on SQuAD JSON,
as Llama-3.1-8B would be loaded) and the tiny Llama's cache (built once, then reused)."""

import json

import torch
from transformers import LlamaForCausalLM

from trainables.common import LocalContext
from trainables.phase1a_lora import PROFILES, Config
from trainables.phase1a_lora.base_model import (
    META_FILE,
    build_tokenizer,
    cache_key,
    ensure_tiny_model,
    tiny_llama_config,
    tiny_model_dir,
)
from trainables.phase1a_lora.data import synthetic_examples, synthetic_squad
from trainables.phase1a_lora.train import train
from tune_jobs.core.config import build_config


def test_the_full_profile_loads_a_saved_model_with_from_pretrained_and_trains_in_bf16(tmp_path):
    examples = synthetic_examples(200, seed=5)
    tok = build_tokenizer([e.prompt + " " + e.answers[0] for e in examples])
    cfg = build_config(
        Config, {"model.tiny.layers": 2, "model.tiny.hidden_size": 32, "model.tiny.intermediate_size": 64}
    )
    LlamaForCausalLM(tiny_llama_config(cfg.model.tiny, len(tok), tok)).save_pretrained(tmp_path / "llama")
    tok.save_pretrained(tmp_path / "llama")
    (tmp_path / "train-v1.1.json").write_text(json.dumps(synthetic_squad(40, seed=6)))

    full = build_config(
        Config,
        PROFILES["full"],
        {
            "model.path": str(tmp_path / "llama"),
            "data.path": str(tmp_path / "train-v1.1.json"),
            "data.val_path": "",
            "data.samples": 24,
            "data.val_samples": 8,
            "trainer.epochs": 1,
            "trainer.batch_size": 8,
            "compression.d_z": 8,
            "compression.adapter_width": 32,
        },
    )
    assert full.model.source == "pretrained" and full.model.dtype == "bfloat16" and full.data.source == "squad"
    ctx = LocalContext(tmp_path / "trial")
    train(full, ctx)
    (row,) = ctx.history
    assert row["lora/layers"] == 2  # the seed's layers=32 of 32 -> all of this model's 2
    assert 0 <= row["val/f1"] <= 1 and row["perf/tokens_per_s"] > 0 and row["perf/peak_mem_mb"] > 0
    state = ctx.restored_state()
    # the LLM runs in bf16; peft keeps the LoRA matrices themselves in float32
    assert state["lora"] and all(v.dtype == torch.float32 for v in state["lora"].values())


def test_the_tiny_llama_is_built_once_and_keyed_by_its_recipe(tmp_path):
    cfg = build_config(
        Config, PROFILES["quick"], {"model.tiny.cache_dir": str(tmp_path), "model.tiny.pretrain_steps": 5}
    )
    logs = []
    path = ensure_tiny_model(cfg.model.tiny, logs.append)
    assert path == tiny_model_dir(cfg.model.tiny) and path.parent == tmp_path / "phase1a_lora"
    meta = json.loads((path / META_FILE).read_text())
    assert meta["key"] == cache_key(cfg.model.tiny) and 0 <= meta["text_f1_held_out"] <= 1
    assert {"config.json", "tokenizer.json"} <= {p.name for p in path.iterdir()}
    stamp = (path / META_FILE).stat().st_mtime_ns
    again = []
    assert ensure_tiny_model(cfg.model.tiny, again.append) == path and again == []  # reused, not rebuilt
    assert (path / META_FILE).stat().st_mtime_ns == stamp
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no half-written folder left
    cfg.model.tiny.pretrain_steps = 6
    assert cache_key(cfg.model.tiny) != meta["key"]
