"""The loss against its closed forms (study C) and the model's init."""

import pytest
import torch

from trainables.denoising.data import sample_batch
from trainables.denoising.model import Denoiser, data_loss, identity_loss, weight_penalty, zero_predictor_loss

D, H, LAMBDA, NOISE = 1024, 512, 16.0, 0.005


def batch(n=8192, d=D, noise=NOISE, seed=0):
    return sample_batch(n, d, noise, torch.Generator().manual_seed(seed))


def test_predicting_zero_costs_two_lambda_on_exactly():
    _, clean = batch()
    assert data_loss(torch.zeros_like(clean), clean, LAMBDA).item() == pytest.approx(2 * LAMBDA, rel=1e-6)
    assert zero_predictor_loss(LAMBDA) == 32.0


def test_the_identity_costs_the_noise_on_every_coordinate():
    x, clean = batch()
    expected = 2 * LAMBDA * NOISE + (D - 2) * NOISE
    assert identity_loss(LAMBDA, D, NOISE) == pytest.approx(expected)
    assert data_loss(x, clean, LAMBDA).item() == pytest.approx(expected, rel=0.01)


def test_on_and_off_coordinates_are_weighted_lambda_on_and_one():
    clean = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    pred = torch.tensor([[0.5, 1.0, 0.2, -0.1]])
    assert data_loss(pred, clean, 4.0).item() == pytest.approx(4 * 0.25 + 0.04 + 0.01)


def test_the_loss_at_init_is_the_zero_predictor_plus_the_expected_penalty():
    torch.manual_seed(0)
    model = Denoiser(D, H, 0.03, 0.03)
    assert torch.equal(model.encoder.bias, torch.zeros(H)) and torch.equal(model.decoder.bias, torch.zeros(D))
    xavier_var = 0.03**2 * 2 / (D + H)  # xavier-normal variance times the init scale squared
    assert model.decoder.weight.var().item() == pytest.approx(xavier_var, rel=0.02)
    assert model.encoder.weight.var().item() == pytest.approx(xavier_var, rel=0.02)
    x, clean = batch()
    with torch.no_grad():
        fit = data_loss(model(x), clean, LAMBDA).item()
        penalty = weight_penalty(model, 0.03, 0.01).item()
    assert fit == pytest.approx(2 * LAMBDA, rel=1e-3)  # tanh^3 of tiny pre-activations: f ~ 0
    assert penalty == pytest.approx((0.03 + 0.01) * D * H * xavier_var, rel=0.02)


def test_weight_pairs_line_up_input_i_with_hidden_j():
    model = Denoiser(6, 4, 1.0, 1.0)
    w1t, w2 = model.weight_pairs()
    assert w1t.shape == w2.shape == (6, 4)
    assert w1t[5, 3] == model.encoder.weight[3, 5] and w2[5, 3] == model.decoder.weight[5, 3]
