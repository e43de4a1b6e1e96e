"""LoRA lands on exactly the requested layers and modules; the baseline trains no LLM weight;
greedy decoding from left-padded embeddings equals decoding each prompt alone."""

import re

import pytest
import torch
from helpers import Interrupt, StopAfter
from transformers import LlamaConfig, LlamaForCausalLM

from trainables.common import LocalContext
from trainables.phase1a_lora import PROFILES, Config
from trainables.phase1a_lora.model import LORA_MODULES, add_lora, freeze, greedy_generate, left_pad, lora_layers
from trainables.phase1a_lora.train import train
from tune_jobs.core.config import build_config


def tiny_llm(layers=6):
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
    )
    llm = LlamaForCausalLM(cfg).eval()
    freeze(llm)
    return llm


def lora_sites(model):
    """(layer, module) of every LoRA A matrix in the model."""
    sites = set()
    for name, _ in model.named_parameters():
        m = re.search(r"layers\.(\d+)\.self_attn\.(\w+)\.lora_A", name)
        if m:
            sites.add((int(m.group(1)), m.group(2)))
    return sites


@pytest.mark.parametrize("first", [1, 4, 6])
def test_lora_is_on_q_k_v_o_of_the_first_layers_only(first):
    model = add_lora(tiny_llm(6), r=4, alpha=8, layers=lora_layers(6, first))
    assert lora_sites(model) == {(i, m) for i in range(first) for m in LORA_MODULES}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == first * 4 * 2 * 4 * 32
    assert not any("mlp" in n for n in trainable)


def test_the_seeds_layer_counts_map_to_a_share_of_a_smaller_model():
    cfg = Config()
    got = {}
    for layers in (8, 12, 16, 32):
        cfg.lora.layers = layers
        got[layers] = (cfg.lora_depth(4), cfg.lora_depth(8), cfg.lora_depth(32))
    assert got == {8: (1, 2, 8), 12: (2, 3, 12), 16: (2, 4, 16), 32: (4, 8, 32)}
    cfg.lora.of_layers, cfg.lora.layers = 0, 3  # counted on the model itself
    assert cfg.lora_depth(8) == 3


def test_greedy_decoding_of_a_padded_batch_equals_one_prompt_at_a_time():
    llm = tiny_llm(2)
    embed = llm.get_input_embeddings()
    prompts = [torch.tensor([1, 5, 7, 9, 11]), torch.tensor([3, 4]), torch.tensor([8, 2, 6])]
    ids, mask = left_pad(prompts)
    batch = greedy_generate(llm, embed(ids), mask, max_new_tokens=5, eos_id=None)
    for i, p in enumerate(prompts):
        alone = greedy_generate(
            llm, embed(p[None]), torch.ones(1, len(p), dtype=torch.long), max_new_tokens=5, eos_id=None
        )
        assert torch.equal(batch[i], alone[0])


def quick_cfg(tmp_path, **overrides):
    return build_config(Config, PROFILES["quick"], {"model.tiny.cache_dir": str(tmp_path / "cache")}, overrides)


def test_the_no_lora_baseline_trains_no_llm_weight_and_lora_trains_only_lora(tmp_path):
    ctx = LocalContext(tmp_path / "baseline")
    train(quick_cfg(tmp_path, **{"lora.enabled": False}), ctx)
    state = ctx.restored_state()
    assert state["lora"] == {} and ctx.history[-1]["lora/trainable_params"] == 0
    assert ctx.history[-1]["lora/layers"] == 0
    assert set(state["bottleneck"]) >= {"compressor.mean", "compressor.components", "adapter.out.weight"}

    ctx = LocalContext(tmp_path / "lora")
    train(quick_cfg(tmp_path, **{"lora.r": 4, "lora.alpha": 8, "lora.layers": 16}), ctx)
    state = ctx.restored_state()
    names = set(state["lora"])
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    # the seed's 16 of 32 layers -> the first half of the quick tiny Llama's 4 layers, q/k/v/o each
    assert {int(re.search(r"layers\.(\d+)\.", n).group(1)) for n in names} == {0, 1}
    assert {re.search(r"self_attn\.(\w+)\.lora", n).group(1) for n in names} == set(LORA_MODULES)
    assert ctx.history[-1]["lora/layers"] == 2
    files = {p.name for p in ctx.artifact_dir.iterdir()}
    assert {"diagnostics.jsonl", "predictions.jsonl"} <= files


def test_resume_gives_the_same_numbers_as_never_stopping(tmp_path):
    cfg = quick_cfg(tmp_path, **{"trainer.epochs": 2, "lora.r": 4, "lora.alpha": 8, "lora.layers": 8})
    whole = LocalContext(tmp_path / "whole")
    train(cfg, whole)
    broken = StopAfter(tmp_path / "broken", checkpoints=1)
    with pytest.raises(Interrupt):
        train(cfg, broken)
    resumed = LocalContext(tmp_path / "broken")
    train(cfg, resumed)
    drop = ("perf/epoch_s", "perf/tokens_per_s", "perf/peak_mem_mb")

    def clean(rows):
        return [{k: v for k, v in r.items() if k not in drop} for r in rows]

    assert clean(broken.history + resumed.history) == clean(whole.history)
    a = (whole.artifact_dir / "predictions.jsonl").read_text()
    assert a == (resumed.artifact_dir / "predictions.jsonl").read_text()
