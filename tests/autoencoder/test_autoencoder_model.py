"""The autoencoder's pieces: each bottleneck's shapes and gradients, pads, and the EMA codebook."""

import pytest
import torch

from trainables.autoencoder import Config
from trainables.autoencoder.data import Batch
from trainables.autoencoder.model import ParticleAutoencoder, losses
from trainables.autoencoder.vq import VectorQuantizer, usage
from tune_jobs.core.config import build_config

T = 18


def random_batch(b=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    n_real = torch.randint(1, T, (b,), generator=g)
    mask = torch.arange(T)[None, :] < n_real[:, None]
    ids = torch.randint(1, 8, (b, T), generator=g) * mask
    tokens = torch.randn(b, T, 4, generator=g) * mask[..., None]
    return Batch(ids=ids, tokens=tokens, globals=torch.randn(b, 2, generator=g), mask=mask)


def model_for(latent, **kw):
    cfg = build_config(Config, {"model.latent_space": latent, "vq.codebook_size": 16, **kw})
    torch.manual_seed(0)
    return ParticleAutoencoder(cfg.model, cfg.vq, T), cfg


@pytest.mark.parametrize("latent,code_dim", [("none", 6), ("linear", 3), ("vq", 6)])
def test_each_bottleneck_shapes_and_gradients(latent, code_dim):
    model, _ = model_for(latent)
    batch = random_batch()
    out = model(batch)
    m = int(batch.mask.sum())
    assert model.code_dim == code_dim
    assert out.tokens.shape == out.target.shape == (m, 4)
    assert out.globals.shape == (5, 2)
    assert (out.codes is not None) == (latent == "vq")
    if out.codes is not None:
        assert out.codes.shape == (m,) and int(out.codes.max()) < 16
    rec_tokens, rec_globals = losses(out, batch)
    (rec_tokens + rec_globals + out.vq_loss).backward()
    # every learned part gets a gradient: the encoder through the bottleneck (straight
    # through for vq), the type embedding, the decoder and the globals head
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    if latent == "vq":
        assert not any(n.startswith("bottleneck") for n, _ in model.named_parameters())  # EMA, not gradient


def test_globals_loss_trains_the_encoder_and_beta_zero_leaves_the_head_alone():
    model, _ = model_for("linear")
    batch = random_batch()
    _, rec_globals = losses(model(batch), batch)
    rec_globals.backward()
    assert model.encoder[0].weight.grad.abs().sum() > 0  # the head's loss shapes the latents
    assert model.decoder[0].weight.grad is None
    model.zero_grad(set_to_none=True)
    rec_tokens, rec_globals = losses(model(batch), batch)
    (rec_tokens + 0.0 * rec_globals).backward()
    assert model.globals_head[0].weight.grad.abs().sum() == 0


def test_pads_never_reach_the_losses():
    model, _ = model_for("vq")
    batch = random_batch()
    model(batch)  # initialise the codebook
    model.eval()
    a = losses(model(batch), batch)
    noisy = Batch(
        ids=batch.ids, tokens=batch.tokens + 50.0 * (~batch.mask)[..., None], globals=batch.globals, mask=batch.mask
    )
    b = losses(model(noisy), noisy)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert model(batch).tokens.shape[0] == int(batch.mask.sum())


# -- the EMA codebook -------------------------------------------------------------------------
def test_ema_update_by_hand():
    """Counts start at 1 and sums at the codes: a used code moves to the count-weighted mean
    of itself and its latents; an unused code stays exactly where it is."""
    vq = VectorQuantizer(2, 2, decay=0.5, init="data", dead_threshold=0.0, eps=0.0)
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
    vq.embed_sum.copy_(vq.codebook)
    vq.initialised.fill_(True)
    z = torch.tensor([[1.0, 1.0], [3.0, 3.0], [2.0, 2.0]])  # all nearest to code 0
    codes = vq.assign(z)
    assert codes.tolist() == [0, 0, 0]
    vq.ema_update(z, codes)
    # code 0: count 0.5*1 + 0.5*3 = 2, sum 0.5*(0,0) + 0.5*(6,6) = (3,3) -> (1.5, 1.5)
    # code 1: count 0.5, sum 0.5*(10,10) -> (10, 10) (Laplace smoothing is off: eps = 0)
    torch.testing.assert_close(vq.cluster_size, torch.tensor([2.0, 0.5]))
    torch.testing.assert_close(vq.codebook, torch.tensor([[1.5, 1.5], [10.0, 10.0]]))


def test_a_dead_code_is_moved_onto_the_data():
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 2, decay=0.9, init="data", dead_threshold=0.5)
    z = torch.randn(256, 2)
    vq.train()
    vq(z)
    vq.codebook[3] = torch.tensor([100.0, 100.0])  # far from everything: never chosen
    vq.embed_sum[3] = vq.codebook[3] * vq.cluster_size[3]
    for _ in range(30):
        vq(torch.randn(256, 2))
    assert vq.resets >= 1
    assert vq.codebook[3].abs().max() < 10  # back among the latents


@pytest.mark.parametrize("init", ["data", "kmeans"])
def test_no_collapse_on_gaussian_latents(init):
    """On N(0, I) latents every code keeps being used, as it should for a smooth density
    (the original's zero-count EMA ended with ~3 codes of its codebook)."""
    torch.manual_seed(0)
    k = 32
    vq = VectorQuantizer(k, 4, init=init, dead_threshold=0.5)
    vq.train()
    for _ in range(200):
        vq(torch.randn(512, 4))
    vq.eval()
    _, codes, commit = vq(torch.randn(8192, 4))
    perplexity, used = usage(torch.bincount(codes, minlength=k))
    assert used == 1.0
    assert perplexity > 0.8 * k
    # quantisation error well below the variance of the data (4 per latent / 4 dims)
    assert commit / 0.25 < 0.5


def test_straight_through_gradient_and_commitment():
    vq = VectorQuantizer(8, 3, commitment=0.25, init="data")
    vq.train()
    vq(torch.randn(64, 3))  # initialise the codebook on data
    vq.eval()  # no EMA step: the codebook stays as it is during the call
    z = torch.randn(64, 3, requires_grad=True)
    zq, codes, commit = vq(z)
    torch.testing.assert_close(zq.detach(), vq.codebook[codes])  # forward: the codes
    torch.testing.assert_close(commit, 0.25 * ((z.detach() - vq.codebook[codes]) ** 2).mean())
    zq.sum().backward()
    torch.testing.assert_close(z.grad, torch.ones_like(z))  # identity gradient through the codes
    assert commit.item() > 0


def test_usage_counts():
    assert usage(torch.tensor([5, 5, 0, 0])) == pytest.approx((2.0, 0.5))
    assert usage(torch.zeros(4)) == (0.0, 0.0)
