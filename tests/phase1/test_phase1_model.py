import torch

from trainables.phase1.model import ICLTransformer


def model(**kw):
    torch.manual_seed(0)
    args = dict(n_dims=5, n_points=10, n_embd=32, n_layer=2, n_head=2) | kw
    return ICLTransformer(**args).eval()


def test_interleave_puts_y_in_the_first_slot_after_its_x():
    xs = torch.arange(2 * 3 * 5, dtype=torch.float).reshape(2, 3, 5)
    ys = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    z = ICLTransformer.interleave(xs, ys)
    assert z.shape == (2, 6, 5)
    assert torch.equal(z[:, ::2], xs)
    assert torch.equal(z[:, 1::2, 0], ys)
    assert (z[:, 1::2, 1:] == 0).all()


def test_one_prediction_per_point():
    m = model()
    out = m(torch.randn(4, 10, 5), torch.randn(4, 10))
    assert out.shape == (4, 10)
    assert m.backbone.config.n_positions == 20


def test_prediction_for_y_i_never_sees_y_i_or_later_points():
    m = model()
    xs, ys = torch.randn(1, 10, 5), torch.randn(1, 10)
    base = m(xs, ys)
    ys2, xs2 = ys.clone(), xs.clone()
    ys2[0, 6:] += 10.0  # change y_6 onwards
    xs2[0, 7:] += 10.0  # and x_7 onwards
    out = m(xs2, ys2)
    assert torch.allclose(out[0, :7], base[0, :7], atol=1e-5)
    assert not torch.allclose(out[0, 7:], base[0, 7:])


def test_gradients_reach_read_in_backbone_and_read_out():
    m = model().train()
    loss = m(torch.randn(3, 10, 5), torch.randn(3, 10)).pow(2).mean()
    loss.backward()
    for name in ("read_in.weight", "read_out.weight", "backbone.h.0.attn.c_attn.weight"):
        assert dict(m.named_parameters())[name].grad.abs().sum() > 0, name


def test_the_lean_backbone_is_causal_and_trains_like_the_gpt2_one():
    lean = model(backbone="lean")
    xs, ys = torch.randn(1, 10, 5), torch.randn(1, 10)
    base = lean(xs, ys)
    ys2, xs2 = ys.clone(), xs.clone()
    ys2[0, 6:] += 10.0
    xs2[0, 7:] += 10.0
    out = lean(xs2, ys2)
    assert torch.allclose(out[0, :7], base[0, :7], atol=1e-5) and not torch.allclose(out[0, 7:], base[0, 7:])
    # The same architecture: the same parameter count (GPT-2's one-token vocabulary aside).
    gpt2 = model()
    count = lambda m: sum(p.numel() for n, p in m.named_parameters() if "wte" not in n)  # noqa: E731
    assert count(lean) == count(gpt2)
    lean.train()
    lean(torch.randn(3, 10, 5), torch.randn(3, 10)).pow(2).mean().backward()
    for name in ("read_in.weight", "read_out.weight", "backbone.h.0.attn.weight", "backbone.wpe.weight"):
        assert dict(lean.named_parameters())[name].grad.abs().sum() > 0, name


def test_the_lean_backbone_computes_what_gpt2_computes_with_the_same_weights():
    gpt2, lean = model(), model(backbone="lean")
    g = dict(gpt2.backbone.named_parameters())
    with torch.no_grad():
        lean.read_in.load_state_dict(gpt2.read_in.state_dict())
        lean.read_out.load_state_dict(gpt2.read_out.state_dict())
        lean.backbone.wpe.weight.copy_(g["wpe.weight"])
        lean.backbone.ln_f.load_state_dict(gpt2.backbone.ln_f.state_dict())
        for i, block in enumerate(lean.backbone.h):
            # GPT-2's Conv1D stores weights as [in, out]: transposed relative to nn.Linear.
            for mine, theirs in (
                ("attn", "attn.c_attn"),
                ("attn_proj", "attn.c_proj"),
                ("mlp_fc", "mlp.c_fc"),
                ("mlp_proj", "mlp.c_proj"),
            ):
                getattr(block, mine).weight.copy_(g[f"h.{i}.{theirs}.weight"].T)
                getattr(block, mine).bias.copy_(g[f"h.{i}.{theirs}.bias"])
            block.ln_1.load_state_dict(gpt2.backbone.h[i].ln_1.state_dict())
            block.ln_2.load_state_dict(gpt2.backbone.h[i].ln_2.state_dict())
    xs, ys = torch.randn(4, 10, 5), torch.randn(4, 10)
    assert torch.allclose(lean(xs, ys), gpt2(xs, ys), atol=1e-5)
