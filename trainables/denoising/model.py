"""The denoiser and its loss: Linear(d, h) -> tanh(.)^3 -> Linear(h, d), lambda_on-weighted.

Imports only torch. The weight pairs the study looks at are (W1[j, i], W2[i, j]): the
encoder weight from input i to hidden unit j and the decoder weight from j back to output i
(`encoder.weight` is [h, d], `decoder.weight` is [d, h], so W2 = decoder.weight and
W1.T lines up with it element for element).
"""

from __future__ import annotations

import torch
from torch import nn


class Denoiser(nn.Module):
    def __init__(self, d: int, hidden: int, encoder_init_scale: float, decoder_init_scale: float) -> None:
        super().__init__()
        self.encoder = nn.Linear(d, hidden)
        self.decoder = nn.Linear(hidden, d)
        # Small xavier-normal inits (the seed's 0.03): the cubic makes the origin a flat saddle,
        # so how far from it training starts decides which structure the weights settle into.
        nn.init.xavier_normal_(self.encoder.weight, gain=encoder_init_scale)
        nn.init.xavier_normal_(self.decoder.weight, gain=decoder_init_scale)
        nn.init.zeros_(self.encoder.bias)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.tanh(self.encoder(x)) ** 3)

    def weight_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W1.T, W2), both [d, h]: entry [i, j] of each is the pair of input/output i, unit j."""
        return self.encoder.weight.detach().T, self.decoder.weight.detach()


def data_loss(pred: torch.Tensor, clean: torch.Tensor, lambda_on: float) -> torch.Tensor:
    """lambda_on * sum_on (f - x*)^2 + sum_off f^2 per sample, averaged over the batch.

    On the off-coordinates x* = 0, so both sums are one weighted squared error.
    """
    weight = 1.0 + (lambda_on - 1.0) * clean
    return (weight * (pred - clean) ** 2).sum(dim=1).mean()


def weight_penalty(model: Denoiser, decoder_reg: float, encoder_reg: float) -> torch.Tensor:
    """decoder_reg * ||W2||_F^2 + encoder_reg * ||W1||_F^2 (biases are not penalised)."""
    penalty = decoder_reg * model.decoder.weight.pow(2).sum()
    if encoder_reg:
        penalty = penalty + encoder_reg * model.encoder.weight.pow(2).sum()
    return penalty


def zero_predictor_loss(lambda_on: float) -> float:
    """Predicting 0 everywhere: the two on-coordinates each cost lambda_on * 1^2."""
    return 2.0 * lambda_on


def identity_loss(lambda_on: float, d: int, noise_variance: float) -> float:
    """Expected loss of f(x) = x: every coordinate's error is its noise."""
    return (2.0 * lambda_on + (d - 2)) * noise_variance
