"""The training loop: config -> data -> LLM -> compressor/adapter (+ LoRA) -> loss -> loop.

One report per epoch: the training losses, then the validation questions answered greedily
from the reconstructed embeddings and scored as SQuAD v1.1 (F1, EM), first-token accuracy,
the collapse diagnostics (diversity, repetition, a flag) and the reconstruction cosine, next
to the text baseline (the same LLM reading the prompt itself). Per trial, in artifacts/:
diagnostics.jsonl (one row per step and per evaluation; evaluation rows carry the seed's
`text_f1`) and predictions.jsonl (sample questions, gold answers and predictions).
"""

from __future__ import annotations

import json
import math
import resource
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from trainables.common import TrialContext, atomic_file, pick_device, user_path
from trainables.common.jsonl import append_line
from trainables.phase1a_lora.base_model import (
    decode_answers,
    encode_answers,
    encode_prompts,
    ensure_tiny_model,
    load_llm,
    text_baseline,
)
from trainables.phase1a_lora.config import Config
from trainables.phase1a_lora.data import HUB, QAExample, read_hub_squad, read_squad, synthetic_examples
from trainables.phase1a_lora.metrics import collapsed, diversity, repetition_rate, squad_scores
from trainables.phase1a_lora.model import Bottleneck, add_lora, greedy_generate, left_pad, lora_layers, positions

# What `train` reports; the sweep metric is checked against this before Ray starts.
DIAGNOSTICS_FILE = "diagnostics.jsonl"
PREDICTIONS_FILE = "predictions.jsonl"
PCA_FIT_VECTORS = 50_000  # token embeddings the PCA is fitted on (a sample of the training prompts')


# -- data ----------------------------------------------------------------------------------------
def load_examples(cfg: Config) -> tuple[list[QAExample], list[QAExample]]:
    """Training and validation questions; SQuAD files and synthetic QA go through one reader."""
    d = cfg.data
    if d.source == "synthetic":
        return synthetic_examples(d.samples, d.seed), synthetic_examples(d.val_samples, d.seed + 1)
    examples = _read(d.path, "train")
    if d.val_path:
        return examples[: d.samples], _read(d.val_path, "validation")[: d.val_samples]
    held = min(d.val_samples, len(examples) // 5 or 1)  # the file's last questions, never trained on
    return examples[:-held][: d.samples], examples[-held:]


def _read(path: str, split: str) -> list[QAExample]:
    if path.startswith(HUB):
        return read_hub_squad(path[len(HUB) :], split)
    return read_squad(user_path(path))


def model_path(cfg: Config, log: Any = print) -> str:
    """The LLM's folder: the cached tiny Llama (built on first use) or the user's model."""
    if cfg.model.source == "tiny":
        return str(ensure_tiny_model(cfg.model.tiny, log))
    path = user_path(cfg.model.path)
    return str(path) if path.exists() else cfg.model.path  # else a hub name


# -- model -----------------------------------------------------------------------------------------
def n_layers(llm: Any) -> int:
    return int(llm.config.num_hidden_layers)


def build(cfg: Config, llm: Any, prompts: Sequence[torch.Tensor]) -> tuple[Any, Bottleneck, dict[str, float]]:
    """The bottleneck (PCA fitted on the training prompts' embeddings) and the LLM with LoRA."""
    embed = llm.get_input_embeddings()
    hidden = embed.weight.shape[1]
    device = embed.weight.device
    c = cfg.compression
    torch.manual_seed(cfg.seed)
    bottleneck = Bottleneck(c.kind, hidden, c.d_z, c.adapter_width).to(device)
    tokens = torch.cat(list(prompts))
    pick = torch.randperm(len(tokens), generator=torch.Generator().manual_seed(cfg.seed))[:PCA_FIT_VECTORS]
    with torch.no_grad():
        explained = bottleneck.compressor.fit(embed(tokens[pick].to(device)))
    info = {"pca/explained_variance": explained, "lora/layers": 0}
    if cfg.lora.enabled:
        layers = lora_layers(n_layers(llm), cfg.lora_depth(n_layers(llm)))
        llm = add_lora(llm, r=cfg.lora.r, alpha=cfg.lora.alpha, layers=layers, dropout=cfg.lora.dropout)
        info["lora/layers"] = len(layers)
    info["lora/trainable_params"] = sum(p.numel() for p in llm.parameters() if p.requires_grad)
    return llm, bottleneck, info


def trainable_state(llm: Any) -> dict[str, torch.Tensor]:
    """The LLM's trained tensors: the LoRA matrices (nothing for the baseline)."""
    return {n: p.detach().clone() for n, p in llm.named_parameters() if p.requires_grad}


# -- loss and metrics -------------------------------------------------------------------------------
def reconstruction_loss(rec: torch.Tensor, orig: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(1 - cosine) + 0.1 MSE over the real prompt tokens; also returns the mean cosine."""
    m = mask.bool()
    cos = F.cosine_similarity(rec[m], orig[m], dim=-1)
    return (1 - cos).mean() + 0.1 * F.mse_loss(rec[m], orig[m]), cos.mean().detach()


def batch_inputs(
    llm: Any, prompt_embeds: torch.Tensor, prompt_mask: torch.Tensor, answers: Sequence[torch.Tensor], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[left-padded prompt embeddings ; answer token embeddings (teacher forcing), right-padded]
    -> inputs_embeds, attention mask, and the answer targets [B, A] (-100 at padding)."""
    device = prompt_embeds.device
    longest = max(a.shape[0] for a in answers)
    targets = torch.full((len(answers), longest), -100, dtype=torch.long, device=device)
    for i, a in enumerate(answers):
        targets[i, : a.shape[0]] = a
    fed = targets[:, :-1].clamp(min=0)  # the last target is predicted, never fed
    fed_mask = (targets[:, :-1] >= 0).long()
    fed = torch.where(fed_mask.bool(), fed, torch.full_like(fed, pad_id))
    embeds = torch.cat([prompt_embeds, llm.get_input_embeddings()(fed).to(prompt_embeds.dtype)], dim=1)
    return embeds, torch.cat([prompt_mask, fed_mask], dim=1), targets


def answer_logits(llm: Any, embeds: torch.Tensor, mask: torch.Tensor, prompt_len: int, n: int) -> torch.Tensor:
    """Logits at the last prompt position and the fed answer tokens: predictions of answer[0..n-1]."""
    out = llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions(mask))
    return out.logits[:, prompt_len - 1 : prompt_len - 1 + n].float()


def masked_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if not bool((targets >= 0).any()):
        return logits.sum() * 0
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) per real answer position, at a temperature."""
    keep = targets >= 0
    s = F.log_softmax(student[keep] / temperature, -1)
    t = F.log_softmax(teacher[keep] / temperature, -1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


def teacher_logits(llm: Any, embeds: torch.Tensor, mask: torch.Tensor, prompt_len: int, n: int) -> torch.Tensor:
    """The same LLM (LoRA off) fed the original embeddings."""
    from contextlib import nullcontext

    off = llm.disable_adapter() if hasattr(llm, "disable_adapter") else nullcontext()
    with torch.no_grad(), off:
        return answer_logits(llm, embeds, mask, prompt_len, n)


@torch.no_grad()
def evaluate(
    cfg: Config, llm: Any, tok: Any, bottleneck: Bottleneck, examples: Sequence[QAExample], prompts, answers
) -> tuple[dict[str, float], list[str]]:
    """Greedy answers from the reconstructed embeddings, scored as SQuAD v1.1 plus diagnostics."""
    embed = llm.get_input_embeddings()
    device = embed.weight.device
    preds, first_hits, cosines = [], 0, []
    bottleneck.eval()
    for i in range(0, len(examples), cfg.trainer.eval_batch):
        ids, mask = left_pad([p.to(device) for p in prompts[i : i + cfg.trainer.eval_batch]], pad=tok.pad_token_id)
        orig = embed(ids)
        rec = bottleneck(orig)
        cosines.append(F.cosine_similarity(rec[mask.bool()], orig[mask.bool()].float(), dim=-1))
        out = greedy_generate(
            llm, rec.to(orig.dtype), mask, max_new_tokens=cfg.data.max_answer_tokens, eos_id=tok.eos_token_id
        )
        firsts = torch.stack([a[0] for a in answers[i : i + cfg.trainer.eval_batch]]).to(device)
        first_hits += int((out[:, 0] == firsts).sum())
        preds += decode_answers(tok, out)
    bottleneck.train()
    scores = squad_scores(preds, [e.answers for e in examples])
    return {
        "val/f1": scores["f1"],
        "val/em": scores["em"],
        "val/first_token_acc": first_hits / len(examples),
        "val/diversity": diversity(preds),
        "val/repetition": repetition_rate(preds),
        "val/collapsed": float(collapsed(preds)),
        "val/recon_cosine": float(torch.cat(cosines).mean()),
    }, preds


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# -- the loop ----------------------------------------------------------------------------------------
def train(cfg: Config, ctx: TrialContext) -> None:
    device = pick_device(cfg.trainer.device)
    train_set, val_set = load_examples(cfg)
    tok, llm = load_llm(model_path(cfg), cfg.model.dtype, device)
    max_p, max_a = cfg.data.max_prompt_tokens, cfg.data.max_answer_tokens
    prompts, answers = encode_prompts(tok, train_set, max_p), encode_answers(tok, train_set, max_a)
    val_prompts, val_answers = encode_prompts(tok, val_set, max_p), encode_answers(tok, val_set, max_a)
    text, _ = text_baseline(
        llm, tok, val_set, max_prompt_tokens=max_p, max_new_tokens=max_a, batch=cfg.trainer.eval_batch
    )
    baseline = {"baseline/text_f1": text["f1"], "baseline/text_em": text["em"]}
    llm, bottleneck, info = build(cfg, llm, prompts)
    embed = llm.get_input_embeddings()

    groups = [{"params": [p for p in bottleneck.parameters() if p.requires_grad], "lr": cfg.trainer.lr}]
    lora_params = [p for p in llm.parameters() if p.requires_grad]
    if lora_params:
        groups.append({"params": lora_params, "lr": cfg.trainer.lora_lr})
    opt = torch.optim.AdamW(groups, weight_decay=0.0)

    start, step = 0, 0
    state = ctx.restored_state()
    if state is not None:
        bottleneck.load_state_dict(state["bottleneck"])
        llm.load_state_dict(state["lora"], strict=False)
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start, step = int(state["epoch"]), int(state["step"])

    L = cfg.loss
    diag_path = ctx.artifact_dir / DIAGNOSTICS_FILE
    bs = cfg.trainer.batch_size
    for epoch in range(start + 1, cfg.trainer.epochs + 1):
        # -- research logic: one pass over the training questions ------------------------------
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
        t0, tokens_seen = time.perf_counter(), 0
        sums = dict.fromkeys(("loss", "recon", "first_ce", "k_ce", "kd"), 0.0)
        n_batches = 0
        rows = []
        for b in range(0, len(order), bs):
            idx = order[b : b + bs].tolist()
            ids, pmask = left_pad([prompts[i].to(device) for i in idx], pad=tok.pad_token_id)
            with torch.no_grad():
                orig = embed(ids)
            rec = bottleneck(orig)
            recon, _ = reconstruction_loss(rec, orig.float(), pmask)
            batch_answers = [answers[i].to(device) for i in idx]
            inputs, mask, targets = batch_inputs(llm, rec.to(orig.dtype), pmask, batch_answers, tok.pad_token_id)
            n = targets.shape[1]
            logits = answer_logits(llm, inputs, mask, ids.shape[1], n)
            first_ce = masked_ce(logits[:, :1], targets[:, :1])
            k_ce = masked_ce(logits[:, : L.k_tokens], targets[:, : L.k_tokens])
            kd = torch.zeros((), device=device)
            if L.kd_weight > 0:
                t_inputs, _, _ = batch_inputs(llm, orig, pmask, batch_answers, tok.pad_token_id)
                teacher = teacher_logits(llm, t_inputs, mask, ids.shape[1], n)
                k = slice(0, L.k_tokens)
                kd = kd_loss(logits[:, k], teacher[:, k], targets[:, k], L.kd_temperature)
            loss = L.recon_weight * recon + L.first_token_ce_weight * first_ce + L.k_ce_weight * k_ce + L.kd_weight * kd
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"train/loss became {loss.item()} at step {step + 1}; lower trainer.lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

            # -- plumbing: per-step diagnostics -----------------------------------------------------
            step += 1
            n_batches += 1
            tokens_seen += int(mask.sum())
            terms = {
                "loss": loss.item(),
                "recon": recon.item(),
                "first_ce": first_ce.item(),
                "k_ce": k_ce.item(),
                "kd": kd.item(),
            }
            for k, v in terms.items():
                sums[k] += v
            rows.append({"step": step, "epoch": epoch, **terms})
        epoch_s = time.perf_counter() - t0
        val, preds = evaluate(cfg, llm, tok, bottleneck, val_set, val_prompts, val_answers)
        metrics = {
            "step": step,
            "epoch": epoch,
            **{f"train/{k}": v / max(1, n_batches) for k, v in sums.items()},
            **val,
            **baseline,
            **info,
            "perf/epoch_s": epoch_s,
            "perf/tokens_per_s": tokens_seen / epoch_s,
            "perf/peak_mem_mb": peak_memory_mb(device),
        }
        rows.append(
            {"step": step, "epoch": epoch, "eval": True, "text_f1": val["val/f1"], "text_em": val["val/em"], **metrics}
        )
        for row in rows:
            append_line(diag_path, row)
        write_predictions(ctx.artifact_dir / PREDICTIONS_FILE, val_set, preds, cfg.trainer.samples_shown, epoch)
        state = {
            "bottleneck": bottleneck.state_dict(),
            "lora": trainable_state(llm),
            "optimizer": opt.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "epoch": epoch,
            "step": step,
        }
        ctx.report(metrics, state)


def write_predictions(path: Path, examples: Sequence[QAExample], preds: Sequence[str], n: int, epoch: int) -> None:
    """The first `n` validation questions with their gold answers and this epoch's predictions."""
    with atomic_file(path, suffix=path.suffix) as tmp, tmp.open("w") as f:
        for e, p in list(zip(examples, preds, strict=True))[:n]:
            f.write(
                json.dumps(
                    {"epoch": epoch, "id": e.id, "question": e.question, "gold": list(e.answers), "prediction": p}
                )
                + "\n"
            )


def estimate(cfg: Config) -> dict[str, float]:
    """Compute estimate for --dry-run: questions seen and the LLM tokens they cost."""
    tokens = cfg.trainer.epochs * cfg.data.samples * (cfg.data.max_prompt_tokens // 2 + cfg.data.max_answer_tokens)
    return {"questions": cfg.trainer.epochs * cfg.data.samples, "tokens": tokens}
