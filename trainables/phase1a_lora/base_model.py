"""The LLM: a real one loaded with from_pretrained, or the project's tiny Llama, built and
pretrained here on synthetic QA text, then cached on disk and loaded the same way.

The tiny model is a LlamaForCausalLM from a LlamaConfig with a word-level tokenizer (the
tokenizers library), trained on `prompt + answer + [EOS]` with the loss on the answer only,
until it answers held-out synthetic questions from the text itself (its text-baseline F1).
It is saved with save_pretrained into a folder named by a hash of everything that makes it
(model shape, tokenizer and data versions, pretraining settings, seed), so every trial of
every sweep loads the same model, and the full profile's path (`from_pretrained(dir)`) is the
one the tiny model takes too. A file lock makes concurrent trials build it once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from filelock import FileLock

from trainables.common import user_path
from trainables.phase1a_lora.data import SYNTH_VERSION, QAExample, synthetic_examples
from trainables.phase1a_lora.metrics import squad_scores
from trainables.phase1a_lora.model import greedy_generate, left_pad

TOKENIZER_VERSION = 1
META_FILE = "tune_sweeps_meta.json"  # what built the cached model and its measured text F1
SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]


# -- the word-level tokenizer ----------------------------------------------------------------------
def build_tokenizer(texts: Sequence[str]) -> Any:
    """A word-level tokenizer over `texts` (lowercased words and punctuation), as a
    PreTrainedTokenizerFast that adds [BOS] in front of a prompt."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=SPECIALS, min_frequency=1))
    bos = tok.token_to_id("[BOS]")
    tok.post_processor = processors.TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", bos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]"
    )


# -- loading a model (the tiny one once cached, or a real one) ----------------------------------
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_llm(path: str, dtype: str, device: torch.device) -> tuple[Any, Any]:
    """Tokenizer and causal LM from a local folder or a hub name (the user's access), frozen."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    llm = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype]).to(device)
    llm.eval()
    for p in llm.parameters():
        p.requires_grad_(False)
    return tok, llm


# -- prompts in, answers out --------------------------------------------------------------------
def encode_prompts(tok: Any, examples: Sequence[QAExample], max_tokens: int) -> list[torch.Tensor]:
    """Token ids of each prompt (with the tokenizer's BOS); a longer prompt loses the start of
    its context (BOS kept), so the question at its end survives."""
    out = []
    for e in examples:
        ids = tok(e.prompt)["input_ids"]
        if len(ids) > max_tokens:
            keep_bos = ids[0] == tok.bos_token_id
            ids = ids[:1] + ids[len(ids) - max_tokens + 1 :] if keep_bos else ids[-max_tokens:]
        out.append(torch.tensor(ids))
    return out


def encode_answers(tok: Any, examples: Sequence[QAExample], max_tokens: int) -> list[torch.Tensor]:
    """Token ids of each first gold answer, then EOS, at most max_tokens + 1 long."""
    return [
        torch.tensor(tok(e.answers[0], add_special_tokens=False)["input_ids"][:max_tokens] + [tok.eos_token_id])
        for e in examples
    ]


def decode_answers(tok: Any, ids: torch.Tensor) -> list[str]:
    """Generated ids -> answer texts: up to EOS, first line only."""
    out = []
    for row in ids.tolist():
        if tok.eos_token_id in row:
            row = row[: row.index(tok.eos_token_id)]
        out.append(tok.decode(row, skip_special_tokens=True).strip().split("\n")[0].strip())
    return out


@torch.no_grad()
def text_baseline(
    llm: Any, tok: Any, examples: Sequence[QAExample], *, max_prompt_tokens: int, max_new_tokens: int, batch: int
) -> tuple[dict[str, float], list[str]]:
    """SQuAD F1/EM of the LLM answering from the prompt text itself (no compression)."""
    embed = llm.get_input_embeddings()
    device = embed.weight.device
    preds: list[str] = []
    for i in range(0, len(examples), batch):
        ids, mask = left_pad([p.to(device) for p in encode_prompts(tok, examples[i : i + batch], max_prompt_tokens)])
        out = greedy_generate(llm, embed(ids), mask, max_new_tokens=max_new_tokens, eos_id=tok.eos_token_id)
        preds += decode_answers(tok, out)
    return squad_scores(preds, [e.answers for e in examples]), preds


# -- the tiny Llama: build, pretrain, cache ---------------------------------------------------------
def tiny_llama_config(spec: Any, vocab_size: int, tok: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=256,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )


def cache_key(spec: Any) -> str:
    """What makes the tiny model: its shape, the tokenizer and data versions, the pretraining."""
    recipe = {
        "shape": [spec.hidden_size, spec.intermediate_size, spec.layers, spec.heads],
        "pretrain": [
            spec.pretrain_steps,
            spec.pretrain_batch,
            spec.pretrain_lr,
            spec.pretrain_samples,
            spec.pretrain_text_weight,
        ],
        "seed": spec.seed,
        "versions": [SYNTH_VERSION, TOKENIZER_VERSION],
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def cache_root(cache_dir: str) -> Path:
    """`cache_dir`, else $XDG_CACHE_HOME/tune-sweeps or ~/.cache/tune-sweeps (as particle_ae)."""
    if cache_dir:
        return user_path(cache_dir)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tune-sweeps"


def tiny_model_dir(spec: Any) -> Path:
    return cache_root(spec.cache_dir) / "phase1a_lora" / f"tiny-llama-{cache_key(spec)}"


def pretrain(spec: Any, log: Any = print) -> tuple[Any, Any, dict[str, Any]]:
    """Build the tokenizer and the tiny Llama and train it on synthetic QA text."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(spec.seed)
    train = synthetic_examples(spec.pretrain_samples, seed=10_000 + spec.seed)
    held_out = synthetic_examples(500, seed=20_000 + spec.seed)  # never trained on
    tok = build_tokenizer([e.prompt + " " + e.answers[0] for e in train + held_out])
    llm = LlamaForCausalLM(tiny_llama_config(spec, len(tok), tok))
    prompts, answers = encode_prompts(tok, train, 256), encode_answers(tok, train, 16)
    opt = torch.optim.AdamW(llm.parameters(), lr=spec.pretrain_lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(spec.seed)
    warmup = max(1, spec.pretrain_steps // 20)
    t0 = time.perf_counter()
    llm.train()
    for step in range(1, spec.pretrain_steps + 1):
        lr = spec.pretrain_lr * min(step / warmup, 0.5 * (1 + math.cos(math.pi * step / spec.pretrain_steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(len(train), (spec.pretrain_batch,), generator=gen).tolist()
        seqs = [torch.cat([prompts[i], answers[i]]) for i in idx]
        ids, mask = left_pad(seqs, pad=tok.pad_token_id)
        answer_mask = torch.zeros_like(mask, dtype=torch.bool)
        for row, i in enumerate(idx):
            answer_mask[row, -answers[i].shape[0] :] = True
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = llm(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, :-1]
        targets, real, is_answer = ids[:, 1:], mask[:, 1:].bool(), answer_mask[:, 1:]
        # The answer (and its EOS) is the task; the rest of the text is ordinary language
        # modelling, which teaches the kinds of words (cities, years, ...) far sooner.
        answer_loss = F.cross_entropy(logits[is_answer], targets[is_answer])
        text_loss = F.cross_entropy(logits[real & ~is_answer], targets[real & ~is_answer])
        loss = answer_loss + spec.pretrain_text_weight * text_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(llm.parameters(), 1.0)
        opt.step()
        if step % 200 == 0 or step == spec.pretrain_steps:
            log(f"tiny llama pretraining step {step}/{spec.pretrain_steps}: answer loss {answer_loss.item():.3f}")
    llm.eval()
    seconds = time.perf_counter() - t0
    scores, _ = text_baseline(llm, tok, held_out, max_prompt_tokens=256, max_new_tokens=8, batch=100)
    meta = {
        "key": cache_key(spec),
        "text_f1_held_out": scores["f1"],
        "text_em_held_out": scores["em"],
        "held_out_questions": len(held_out),
        "pretrain_seconds": seconds,
        "final_answer_loss": answer_loss.item(),
        "params": sum(p.numel() for p in llm.parameters()),
        "vocab": len(tok),
    }
    log(f"tiny llama: text-baseline F1 {scores['f1']:.3f}, EM {scores['em']:.3f} on held-out synthetic QA")
    return tok, llm, meta


def ensure_tiny_model(spec: Any, log: Any = print) -> Path:
    """The cached tiny model's folder; built (once, under a file lock) when missing."""
    final = tiny_model_dir(spec)
    if (final / META_FILE).exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    # A second trial waits here, then finds it built.
    with FileLock(final.parent / f"{final.name}.lock", preserve_lock_file=True):
        if (final / META_FILE).exists():
            return final
        tok, llm, meta = pretrain(spec, log)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}-"))
        try:
            llm.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
            os.replace(tmp, final)  # atomic: a folder is there whole or not at all
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def tiny_model_meta(path: Path) -> dict[str, Any]:
    return json.loads((path / META_FILE).read_text())
