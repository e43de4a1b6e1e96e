"""The particle-token autoencoder: per-token encoder, bottleneck, per-token decoder, globals head.

Only the real particles of a batch go through the networks (pads are dropped up front, so
they never reach a loss or a codebook): the tokens of all events are stacked into one
[M, ...] tensor, with `event` telling which event each came from.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trainables.autoencoder.config import ModelConfig, VQConfig
from trainables.autoencoder.data import N_TYPES, TOKEN_FEATURES, Batch
from trainables.autoencoder.vq import VectorQuantizer


def mlp(n_in: int, hidden: int, n_out: int, layers: int) -> nn.Sequential:
    sizes = [n_in] + [hidden] * layers
    blocks: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        blocks += [nn.Linear(a, b), nn.GELU()]
    return nn.Sequential(*blocks, nn.Linear(sizes[-1], n_out))


@dataclass
class Output:
    tokens: torch.Tensor  # [M, 4] reconstructed features of the real tokens
    target: torch.Tensor  # [M, 4] their inputs
    globals: torch.Tensor  # [B, 2] predicted (MET, METphi)
    codes: torch.Tensor | None  # [M] vq code of each token
    vq_loss: torch.Tensor  # commitment loss (0 without vq)


class ParticleAutoencoder(nn.Module):
    def __init__(self, cfg: ModelConfig, vq: VQConfig, n_tokens: int) -> None:
        super().__init__()
        n_feat = len(TOKEN_FEATURES)
        self.latent_space, self.n_tokens = cfg.latent_space, n_tokens
        self.type_embedding = nn.Embedding(N_TYPES, cfg.type_embedding)
        self.encoder = mlp(n_feat + cfg.type_embedding, cfg.hidden, cfg.latent_dim, cfg.layers)
        self.bottleneck: nn.Module
        if cfg.latent_space == "none":
            self.bottleneck, code_dim = nn.Identity(), cfg.latent_dim
        elif cfg.latent_space == "linear":
            self.bottleneck, code_dim = nn.Linear(cfg.latent_dim, cfg.bottleneck_dim), cfg.bottleneck_dim
        else:
            self.bottleneck = VectorQuantizer(
                vq.codebook_size,
                cfg.latent_dim,
                commitment=vq.commitment,
                decay=vq.decay,
                init=vq.init,
                kmeans_iters=vq.kmeans_iters,
                dead_threshold=vq.dead_threshold,
            )
            code_dim = cfg.latent_dim
        self.code_dim = code_dim
        self.decoder = mlp(code_dim, cfg.hidden, n_feat, cfg.layers)
        self.globals_head = mlp(code_dim, cfg.hidden, 2, cfg.layers)

    def encode(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Latents [M, latent_dim] of the real tokens, their event index [M] and inputs [M, 4]."""
        event, slot = batch.mask.nonzero(as_tuple=True)
        feats, types = batch.tokens[event, slot], batch.ids[event, slot]
        return self.encoder(torch.cat([feats, self.type_embedding(types)], dim=1)), event, feats

    def forward(self, batch: Batch) -> Output:
        z_e, event, feats = self.encode(batch)
        codes = None
        if isinstance(self.bottleneck, VectorQuantizer):
            z, codes, vq_loss = self.bottleneck(z_e)
        else:
            z, vq_loss = self.bottleneck(z_e), z_e.new_zeros(())
        # Pool by a sum over the event's tokens scaled by the slot count (not a mean): MET is
        # a vector *sum* over the particles, so the pooled vector keeps their number.
        pooled = z.new_zeros(batch.mask.shape[0], self.code_dim).index_add(0, event, z) / self.n_tokens
        return Output(
            tokens=self.decoder(z), target=feats, globals=self.globals_head(pooled), codes=codes, vq_loss=vq_loss
        )


def losses(out: Output, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(rec_tokens, rec_globals): MSE over the real tokens' features, and over the two globals."""
    n = out.target.numel()
    rec_tokens = ((out.tokens - out.target) ** 2).sum() / max(n, 1)
    rec_globals = ((out.globals - batch.globals) ** 2).mean()
    return rec_tokens, rec_globals
