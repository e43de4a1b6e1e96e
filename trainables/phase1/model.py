"""GPT-2 over interleaved (x, y) tokens, in the style of Garg et al. 2022.

The sequence is x1, y1, x2, y2, ... with each y padded to d dimensions; a linear read-in maps
tokens to the model width and a linear read-out maps the hidden state at every x position to
the prediction of its y. Causal attention means the prediction for y_i sees only earlier
pairs and x_i itself.

Two backbones of the same architecture (pre-LayerNorm GPT-2 blocks, learned positions, a 4x
GELU-tanh MLP, a final LayerNorm; GPT-2's initialisation): `gpt2`, transformers' GPT2Model as
the design names it, and `lean`, the same blocks written on torch's fused attention
(`scaled_dot_product_attention`) without the library's generality, which runs faster on CPU
(`python bench/phase1_backbone.py` measures both side by side).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BACKBONES = ("gpt2", "lean")


class LeanBlock(nn.Module):
    """One GPT-2 block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(width, eps=1e-5)
        self.attn = nn.Linear(width, 3 * width)
        self.attn_proj = nn.Linear(width, width)
        self.ln_2 = nn.LayerNorm(width, eps=1e-5)
        self.mlp_fc = nn.Linear(width, 4 * width)
        self.mlp_proj = nn.Linear(4 * width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, n, w = h.shape
        q, k, v = self.attn(self.ln_1(h)).view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + self.attn_proj(a.transpose(1, 2).reshape(b, n, w))
        return h + self.mlp_proj(F.gelu(self.mlp_fc(self.ln_2(h)), approximate="tanh"))


class LeanBackbone(nn.Module):
    def __init__(self, *, n_positions: int, n_embd: int, n_layer: int, n_head: int) -> None:
        super().__init__()
        self.wpe = nn.Embedding(n_positions, n_embd)
        self.h = nn.ModuleList(LeanBlock(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, eps=1e-5)
        # GPT-2's initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 layers).
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() > 1:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, std=std)

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        h = embeds + self.wpe(torch.arange(embeds.shape[1], device=embeds.device))
        for block in self.h:
            h = block(h)
        return self.ln_f(h)


class ICLTransformer(nn.Module):
    def __init__(self, *, n_dims: int, n_points: int, n_embd: int, n_layer: int, n_head: int, backbone: str = "gpt2"):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"model.backbone={backbone!r}: use one of {', '.join(BACKBONES)}")
        self.n_dims = n_dims
        self.lean = backbone == "lean"
        self.read_in = nn.Linear(n_dims, n_embd)
        self.backbone = self._backbone(backbone, 2 * n_points, n_embd, n_layer, n_head)
        self.read_out = nn.Linear(n_embd, 1)

    @staticmethod
    def _backbone(kind: str, n_positions: int, n_embd: int, n_layer: int, n_head: int) -> nn.Module:
        if kind == "lean":
            return LeanBackbone(n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head)
        from transformers import GPT2Config, GPT2Model

        config = GPT2Config(
            n_positions=n_positions,
            n_embd=n_embd,
            n_layer=n_layer,
            n_head=n_head,
            vocab_size=1,  # inputs come through the read-in, never through token ids
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,  # deterministic resume
            activation_function="gelu_pytorch_tanh",  # gelu_new as one fused op: ~25% faster on CPU
            use_cache=False,
            bos_token_id=None,
            eos_token_id=None,
        )
        return GPT2Model(config)

    @staticmethod
    def interleave(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """[B, N, d] and [B, N] -> [B, 2N, d]: x1, (y1, 0, ..., 0), x2, ..."""
        b, n, d = xs.shape
        ys_padded = torch.zeros_like(xs)
        ys_padded[..., 0] = ys
        return torch.stack([xs, ys_padded], dim=2).reshape(b, 2 * n, d)

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Predictions of every y from the x positions: [B, N]."""
        embeds = self.read_in(self.interleave(xs, ys))
        hidden = self.backbone(embeds) if self.lean else self.backbone(inputs_embeds=embeds).last_hidden_state
        return self.read_out(hidden[:, ::2]).squeeze(-1)
