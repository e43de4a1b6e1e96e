"""The Phase 1a pipeline around a frozen LLM: compress the prompt's input embeddings, expand
them back with an adapter MLP, feed them as `inputs_embeds`; optionally LoRA on the LLM.

    prompt tokens -> LLM input embeddings (frozen) -> compressor (PCA or learned, H -> d_z)
                  -> adapter MLP (d_z -> H) -> inputs_embeds -> LLM (+ LoRA) -> greedy answer
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")


# -- compression and the adapter ---------------------------------------------------------------
class PCACompressor(nn.Module):
    """Projection on the top d_z principal directions of the training prompts' token embeddings.
    Fitted once (`fit`), never trained: mean and components are buffers."""

    def __init__(self, hidden: int, d_z: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(hidden))
        self.register_buffer("components", torch.zeros(hidden, d_z))

    @torch.no_grad()
    def fit(self, vectors: torch.Tensor) -> float:
        """Fit on [N, H] embedding vectors; returns the share of variance the d_z components keep."""
        x = vectors.float()
        self.mean.copy_(x.mean(0))
        centred = x - self.mean
        _, s, vh = torch.linalg.svd(centred, full_matrices=False)
        d_z = self.components.shape[1]
        self.components.copy_(vh[:d_z].T)
        var = s.pow(2)
        return float(var[:d_z].sum() / var.sum())

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return (e.float() - self.mean) @ self.components


class LinearCompressor(nn.Module):
    """A learned linear map H -> d_z (the alternative to PCA), trained with the adapter."""

    def __init__(self, hidden: int, d_z: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden, d_z)

    def fit(self, vectors: torch.Tensor) -> float:
        return float("nan")

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.proj(e.float())


class Adapter(nn.Module):
    """MLP d_z -> H that turns compressed vectors back into input embeddings."""

    def __init__(self, d_z: int, hidden: int, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_z, width), nn.GELU(), nn.Linear(width, width), nn.GELU())
        self.out = nn.Linear(width, hidden)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.net(z))


class Bottleneck(nn.Module):
    """Compressor + adapter: original embeddings [B, L, H] -> reconstructed embeddings [B, L, H]."""

    def __init__(self, kind: str, hidden: int, d_z: int, width: int) -> None:
        super().__init__()
        self.compressor = PCACompressor(hidden, d_z) if kind == "pca" else LinearCompressor(hidden, d_z)
        self.adapter = Adapter(d_z, hidden, width)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.compressor(e))


# -- LoRA ------------------------------------------------------------------------------------
def lora_layers(n_layers: int, first: int) -> list[int]:
    """The decoder layers that get LoRA: the first `first` of them (0 = all)."""
    return list(range(n_layers if first == 0 else first))


def add_lora(llm: nn.Module, *, r: int, alpha: float, layers: Sequence[int], dropout: float = 0.0) -> nn.Module:
    """Wrap `llm` with peft LoRA on q/k/v/o of `layers`; only the LoRA matrices train."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(LORA_MODULES),
        layers_to_transform=list(layers),
        bias="none",
    )
    return get_peft_model(llm, config)


def freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


# -- feeding embeddings and decoding greedily ------------------------------------------------------
def left_pad(seqs: Sequence[torch.Tensor], pad: float | int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack [L_i, ...] tensors into [B, L_max, ...], padded on the left, with the mask [B, L_max]."""
    longest = max(s.shape[0] for s in seqs)
    out = seqs[0].new_full((len(seqs), longest, *seqs[0].shape[1:]), pad)
    mask = torch.zeros(len(seqs), longest, dtype=torch.long, device=seqs[0].device)
    for i, s in enumerate(seqs):
        out[i, longest - s.shape[0] :] = s
        mask[i, longest - s.shape[0] :] = 1
    return out, mask


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 on each row's first real token (left padding)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


@torch.no_grad()
def greedy_generate(
    llm: nn.Module, embeds: torch.Tensor, mask: torch.Tensor, *, max_new_tokens: int, eos_id: int | None
) -> torch.Tensor:
    """Greedy decoding from left-padded `inputs_embeds`; [B, max_new_tokens] token ids
    (positions after an EOS are filled with EOS)."""
    pos = positions(mask)
    out = llm(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=True)
    cache, last_pos = out.past_key_values, pos[:, -1:]
    tokens = []
    done = torch.zeros(embeds.shape[0], dtype=torch.bool, device=embeds.device)
    next_tok = out.logits[:, -1].argmax(-1)
    for step in range(max_new_tokens):
        if eos_id is not None:
            next_tok = torch.where(done, torch.full_like(next_tok, eos_id), next_tok)
            done |= next_tok == eos_id
        tokens.append(next_tok)
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        last_pos = last_pos + 1
        out = llm(
            input_ids=next_tok[:, None],
            attention_mask=mask,
            position_ids=last_pos,
            past_key_values=cache,
            use_cache=True,
        )
        cache = out.past_key_values
        next_tok = out.logits[:, -1].argmax(-1)
    ids = torch.stack(tokens, dim=1)
    if ids.shape[1] < max_new_tokens and eos_id is not None:
        ids = torch.cat([ids, ids.new_full((ids.shape[0], max_new_tokens - ids.shape[1]), eos_id)], dim=1)
    return ids
