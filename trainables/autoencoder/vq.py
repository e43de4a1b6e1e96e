"""A vector quantiser with an EMA codebook that does not collapse.

Each latent is replaced by its nearest code; gradients pass straight through to the encoder,
and the encoder is pulled towards its code by the commitment loss. The codebook is not
learned by gradient: each code moves to the exponential moving average of the latents
assigned to it (van den Oord et al. 2017, appendix; Razavi et al. 2019).

What keeps it from collapsing (the original's EMA started its sums at random values and its
counts at zero, and ended with about 3 codes in use):
- the EMA state starts *from the codebook itself*: counts 1 and sums equal to the codes, so a
  code that receives no latent stays where it is instead of being dragged to the origin;
- the codebook starts on the data: latents of the first batch, or k-means on them;
- a code whose EMA count falls below `dead_threshold` is moved onto a random latent of the
  current batch (a dead-code reset), so every code keeps competing.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class VectorQuantizer(nn.Module):
    def __init__(
        self,
        codebook_size: int,
        dim: int,
        *,
        commitment: float = 0.25,
        decay: float = 0.99,
        init: str = "kmeans",
        kmeans_iters: int = 10,
        dead_threshold: float = 0.5,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.codebook_size, self.dim = codebook_size, dim
        self.commitment, self.decay, self.eps = commitment, decay, eps
        self.init, self.kmeans_iters, self.dead_threshold = init, kmeans_iters, dead_threshold
        codebook = torch.randn(codebook_size, dim)
        self.register_buffer("codebook", codebook)
        self.register_buffer("cluster_size", torch.ones(codebook_size))  # counts start at 1 ...
        self.register_buffer("embed_sum", codebook.clone())  # ... and sums at the codes
        self.register_buffer("initialised", torch.tensor(False))
        self.resets = 0  # dead codes moved since the caller last set this to 0

    # -- plumbing ---------------------------------------------------------------------------
    def distances(self, z: torch.Tensor) -> torch.Tensor:
        """Squared Euclidean distance of each latent [M, D] to each code: [M, K]."""
        c = self.codebook
        return (z * z).sum(1, keepdim=True) - 2 * z @ c.t() + (c * c).sum(1)[None, :]

    def assign(self, z: torch.Tensor) -> torch.Tensor:
        return self.distances(z).argmin(1)

    # -- research logic ---------------------------------------------------------------------
    @torch.no_grad()
    def initialise(self, z: torch.Tensor) -> None:
        """Codes from the data: random latents of the batch, refined by k-means if asked."""
        k = self.codebook_size
        idx = torch.randperm(len(z), device=z.device)[:k] if len(z) >= k else torch.randint(0, len(z), (k,))
        codes = z[idx.to(z.device)].clone()
        if self.init == "kmeans":
            for _ in range(self.kmeans_iters):
                self.codebook.copy_(codes)
                assigned = self.assign(z)
                counts = torch.bincount(assigned, minlength=k).to(z.dtype)
                sums = torch.zeros_like(codes).index_add_(0, assigned, z)
                used = counts > 0  # an empty cluster keeps its centre
                codes[used] = sums[used] / counts[used, None]
        self.codebook.copy_(codes)
        self.embed_sum.copy_(codes)
        self.cluster_size.fill_(1.0)
        self.initialised.fill_(True)

    @torch.no_grad()
    def ema_update(self, z: torch.Tensor, codes: torch.Tensor) -> None:
        """Move each code to the EMA mean of its latents; reset the codes nobody uses."""
        k, d = self.codebook_size, self.decay
        counts = torch.bincount(codes, minlength=k).to(z.dtype)
        sums = torch.zeros_like(self.embed_sum).index_add_(0, codes, z)
        self.cluster_size.mul_(d).add_(counts, alpha=1 - d)
        self.embed_sum.mul_(d).add_(sums, alpha=1 - d)
        # Laplace smoothing keeps a count from reaching 0 (the division below) without
        # moving codes whose count is large.
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + k * self.eps) * n
        self.codebook.copy_(self.embed_sum / smoothed[:, None])
        if self.dead_threshold > 0:
            dead = self.cluster_size < self.dead_threshold
            n_dead = int(dead.sum())
            if n_dead and len(z):
                pick = z[torch.randint(0, len(z), (n_dead,)).to(z.device)]
                self.codebook[dead] = pick
                self.embed_sum[dead] = pick
                self.cluster_size[dead] = 1.0
                self.resets += n_dead

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Latents [M, D] -> (quantised with straight-through gradient, codes [M], commitment loss)."""
        if self.training and not bool(self.initialised) and len(z):
            self.initialise(z.detach())
        codes = self.assign(z.detach())
        z_q = self.codebook[codes]
        if self.training:
            self.ema_update(z.detach(), codes)
        commit = self.commitment * F.mse_loss(z, z_q.detach()) if len(z) else z.sum() * 0.0
        return z + (z_q - z).detach(), codes, commit


def usage(counts: torch.Tensor) -> tuple[float, float]:
    """(perplexity, fraction of codes used) of code counts over an epoch or a split."""
    total = float(counts.sum())
    if total == 0:
        return 0.0, 0.0
    p = counts.double() / total
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return float(math.exp(float(entropy))), float((counts > 0).double().mean())
