import pytest
import torch

from trainables.phase1.baselines import lstsq_nmse, zero_nmse
from trainables.phase1.config import DataConfig
from trainables.phase1.data import sample_eval_prompts, sample_prompts

KS = [1, 2, 3, 4, 5, 6, 8, 10]


@pytest.mark.parametrize("k", KS)
def test_block_sizes_follow_round_24_over_k(k):
    cfg = DataConfig(n_components=k)
    expected = {1: 24, 2: 12, 3: 8, 4: 6, 5: 5, 6: 4, 8: 3, 10: 2}[k]
    assert cfg.block_size == expected
    p = sample_prompts(cfg, 7, torch.Generator().manual_seed(0))
    assert p.xs.shape == (7, k * expected + 3 + 1, 5)
    assert p.ys.shape == (7, k * expected + 4)


@pytest.mark.parametrize("k", KS)
def test_each_context_block_is_one_distinct_component_and_target_block_matches_query(k):
    cfg = DataConfig(n_components=k)
    c = cfg.block_size
    p = sample_prompts(cfg, 64, torch.Generator().manual_seed(1))
    blocks = p.component[:, : k * c].reshape(64, k, c)
    assert (blocks == blocks[:, :, :1]).all(), "a context block mixes components"
    assert (blocks[:, :, 0].sort(dim=1).values == torch.arange(k)).all(), "blocks are not a permutation of components"
    target = p.component[:, k * c :]
    assert (target == target[:, :1]).all(), "target block and query come from different components"
    # y really is x . w of the recorded component (no noise by default)
    w = p.weights[torch.arange(64)[:, None], p.component]
    assert torch.allclose(p.ys, (p.xs * w).sum(-1), atol=1e-6)


def test_block_order_is_random_and_target_component_uniform():
    cfg = DataConfig(n_components=4)
    p = sample_prompts(cfg, 4000, torch.Generator().manual_seed(2))
    first_block = p.component[:, 0]
    counts = torch.bincount(p.query_component, minlength=4).float() / 4000
    assert torch.allclose(counts, torch.full((4,), 0.25), atol=0.03)
    assert torch.bincount(first_block, minlength=4).min() > 800


def test_scale_is_applied_once():
    cfg = DataConfig(n_components=3, scale=0.1)
    p = sample_prompts(cfg, 20000, torch.Generator().manual_seed(3))
    # w ~ N(0, 0.1^2 I): Var(w_i) = 0.01 (0.0001 would mean the scale was applied twice)
    assert p.weights.var().item() == pytest.approx(0.01, rel=0.05)
    # y = x . w: Var(y) = scale^2 d = 0.05; fed to the model as y / scale with variance d
    assert p.ys.var().item() == pytest.approx(0.05, rel=0.05)
    assert (p.ys / cfg.scale).var().item() == pytest.approx(5.0, rel=0.05)


def test_noise_is_added_with_its_std():
    clean = sample_prompts(DataConfig(n_components=2), 5000, torch.Generator().manual_seed(4))
    noisy = sample_prompts(DataConfig(n_components=2, noise_std=0.2), 5000, torch.Generator().manual_seed(4))
    w = noisy.weights[torch.arange(5000)[:, None], noisy.component]
    resid = noisy.ys - (noisy.xs * w).sum(-1)
    assert resid.std().item() == pytest.approx(0.2, rel=0.05)
    assert clean.ys.shape == noisy.ys.shape


def test_same_generator_state_gives_same_prompts():
    cfg = DataConfig(n_components=5)
    a = sample_prompts(cfg, 8, torch.Generator().manual_seed(9))
    b = sample_prompts(cfg, 8, torch.Generator().manual_seed(9))
    assert torch.equal(a.xs, b.xs) and torch.equal(a.ys, b.ys)


def test_curriculum_zeroes_the_inactive_dimensions_and_keeps_the_stream():
    cfg = DataConfig(n_components=2)
    full = sample_prompts(cfg, 16, torch.Generator().manual_seed(5))
    part = sample_prompts(cfg, 16, torch.Generator().manual_seed(5), active_dims=2)
    assert (part.xs[..., 2:] == 0).all()
    assert torch.equal(part.xs[..., :2], full.xs[..., :2])
    assert torch.equal(part.weights, full.weights)


def test_curriculum_schedule():
    from trainables.phase1 import Config
    from trainables.phase1.train import active_dims
    from tune_jobs.core.config import build_config

    cfg = build_config(Config, {"trainer.curriculum_start_dims": 2, "trainer.curriculum_every": 600})
    assert [active_dims(cfg, s) for s in (0, 599, 600, 1200, 1800, 5000)] == [2, 2, 3, 4, 5, 5]
    off = build_config(Config, {"trainer.curriculum_start_dims": 0})
    assert active_dims(off, 0) == 5


@pytest.mark.parametrize("k", [1, 2, 3, 8, 10])
def test_evaluation_prompts_are_the_training_distribution_with_a_structure_like_training(k):
    cfg = DataConfig(n_components=k)
    p = sample_eval_prompts(cfg, 4000, seed=5)
    c, n = cfg.block_size, cfg.n_points
    assert p.xs.shape == (4000, n, cfg.n_dims) and p.ys.shape == (4000, n)
    # Each point's y is its component's weights applied to its x; the target block and the
    # query share one component, which is one of the context blocks' (each block one component).
    w_point = torch.gather(p.weights, 1, p.component.unsqueeze(-1).expand(-1, -1, cfg.n_dims))
    assert torch.allclose(p.ys, (p.xs * w_point).sum(-1), atol=1e-6)
    assert (p.component[:, k * c :] == p.component[:, -1:]).all()
    blocks = p.component[:, : k * c].reshape(4000, k, c)
    assert (blocks == blocks[..., :1]).all() and (blocks[..., 0].sort(dim=1).values == torch.arange(k)).all()
    assert (p.weights / cfg.scale).std().item() == pytest.approx(1.0, abs=0.02)
    if k > 1:  # the target component is uniform over the K
        share = torch.bincount(p.query_component, minlength=k).float() / 4000
        assert share.min().item() > 1 / k - 0.05 and share.max().item() < 1 / k + 0.05


def test_evaluation_prompts_share_the_target_and_query_across_k():
    # The zero predictor and least squares on the target block judge the same prompts at every K.
    ref = DataConfig(n_components=1)
    p1 = sample_eval_prompts(ref, 512, seed=3)
    for k in (2, 4, 10):
        cfg = DataConfig(n_components=k)
        pk = sample_eval_prompts(cfg, 512, seed=3)
        tail = cfg.target_points + 1
        assert torch.equal(pk.xs[:, -tail:], p1.xs[:, -tail:]) and torch.equal(pk.ys[:, -tail:], p1.ys[:, -tail:])
        assert lstsq_nmse(pk, cfg) == lstsq_nmse(p1, ref) and zero_nmse(pk, cfg) == zero_nmse(p1, ref)
    assert not torch.equal(sample_eval_prompts(ref, 512, seed=4).xs, p1.xs)  # another seed, other prompts
