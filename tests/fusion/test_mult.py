from __future__ import annotations

import pytest
import torch

from mmfuse.fusion import MulTFusion, create_fusion, fusion_kwargs, list_fusions
from mmfuse.testing import make_fusion_inputs

DIMS = {"text": 5, "audio": 3, "video": 4}


def _inputs(dims=DIMS, b: int = 2, t: int = 6, seed: int = 0):
    return make_fusion_inputs(dims, b, t, seed=seed)


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_registered_with_its_kwargs() -> None:
    assert "mult" in list_fusions()
    assert isinstance(create_fusion("mult", DIMS, 8), MulTFusion)
    assert fusion_kwargs("mult") == {
        "hidden": 32,
        "num_heads": None,
        "layers": 1,
        "self_layers": 1,
        "kernel_size": 1,
        "causal": False,
        "dropout": 0.0,
        "attn_dropout": 0.0,
    }


def test_one_cross_modal_stack_per_ordered_pair() -> None:
    two = MulTFusion({"a": 2, "b": 3}, 8)
    assert two.pairs == ((1, 0), (0, 1))  # (source, target): b -> a, a -> b
    assert len(two.cross) == 2
    three = MulTFusion(DIMS, 8, hidden=8, layers=2)
    assert len(three.cross) == 6
    assert sorted(three.pairs) == [(s, g) for s in range(3) for g in range(3) if s != g]
    assert all(len(stack.blocks) == 2 for stack in three.cross)
    assert three.width == 2 * 8  # each target concatenates M - 1 = 2 streams


def test_single_modality_has_no_pairs_and_still_fuses() -> None:
    f = MulTFusion({"a": 3}, 8).eval()
    assert f.pairs == () and len(f.cross) == 0 and f.width == 32
    x, m = _inputs({"a": 3})
    out, w = f.forward_with_weights(x, m)
    assert out.shape == (2, 6, 8) and bool(out.isfinite().all())
    assert w is not None and w.shape == (2, 6, 1, 1) and torch.all(w == 0)


def test_parameter_counts_scale_with_pairs_and_layers() -> None:
    h = 8
    cross_block = 8 * h * h + 13 * h  # 3 LayerNorms (q, kv, ffn), attention 4 (H^2 + H), FFN H -> 2H -> H
    w = 2 * h
    self_block = 8 * w * w + 11 * w  # 2 LayerNorms, attention, FFN at width W = (M - 1) H
    base = _n_params(MulTFusion(DIMS, 8, hidden=h))
    assert _n_params(MulTFusion(DIMS, 8, hidden=h, layers=3)) - base == 6 * 2 * cross_block
    assert _n_params(MulTFusion(DIMS, 8, hidden=h, self_layers=0)) == base - 3 * self_block
    # Two modalities: 2 pairs, W = H.
    base2 = _n_params(MulTFusion({"a": 2, "b": 3}, 8, hidden=h))
    assert _n_params(MulTFusion({"a": 2, "b": 3}, 8, hidden=h, layers=2)) - base2 == 2 * cross_block
    # A wider input convolution adds (k - 1) * D_m * H weights per modality.
    k3 = _n_params(MulTFusion(DIMS, 8, hidden=h, kernel_size=3))
    assert k3 - base == 2 * sum(DIMS.values()) * h


@pytest.mark.parametrize("causal", [False, True])
def test_masked_source_steps_do_not_matter(causal: bool) -> None:
    f = MulTFusion(DIMS, 8, kernel_size=3, causal=causal).eval()
    x, m = _inputs(t=8)
    ref, ref_w = f.forward_with_weights(x, m)
    for name in DIMS:
        changed = {**x, name: torch.where(m[name].unsqueeze(-1), x[name], torch.randn_like(x[name]) * 50)}
        out, w = f.forward_with_weights(changed, m)
        torch.testing.assert_close(out, ref)
        torch.testing.assert_close(w, ref_w)
    # ... while present source steps do matter.
    moved = {**x, "audio": torch.where(m["audio"].unsqueeze(-1), x["audio"] + 1.0, x["audio"])}
    assert not torch.allclose(f(moved, m), ref)


@pytest.mark.parametrize("kernel_size", [1, 3])
def test_appended_padding_changes_nothing(kernel_size: int) -> None:
    """Attention never looks at padding: appending all-missing steps leaves the real steps unchanged."""
    f = MulTFusion(DIMS, 8, kernel_size=kernel_size).eval()
    x, m = _inputs(t=6)
    padded_x = {k: torch.cat([v, torch.randn(2, 4, v.shape[-1])], dim=1) for k, v in x.items()}
    padded_m = {k: torch.cat([v, torch.zeros(2, 4, dtype=torch.bool)], dim=1) for k, v in m.items()}
    ref, ref_w = f.forward_with_weights(x, m)
    out, w = f.forward_with_weights(padded_x, padded_m)
    torch.testing.assert_close(out[:, :6], ref)
    assert w is not None and ref_w is not None
    torch.testing.assert_close(w[:, :6], ref_w)


def test_query_with_no_present_key_gets_zero_attention() -> None:
    """Source "b" is missing everywhere: the b -> a attention (its output bias included) contributes nothing."""
    f = MulTFusion({"a": 2, "b": 3}, 8).eval()
    x = {"a": torch.randn(1, 5, 2), "b": torch.randn(1, 5, 3)}
    m = {"a": torch.ones(1, 5, dtype=torch.bool), "b": torch.zeros(1, 5, dtype=torch.bool)}
    ref, w = f.forward_with_weights(x, m)
    assert bool(ref.isfinite().all())
    assert w is not None
    assert torch.all(w[:, :, 0] == 0)  # target a: its only source, b, has no key anywhere
    assert torch.all(w[:, :, 1] == torch.tensor([1.0, 0.0]))  # target b (absent itself) draws only on a
    b_to_a = f.pairs.index((1, 0))
    with torch.no_grad():
        for p in f.cross[b_to_a].blocks[0].attn.parameters():
            p.add_(torch.randn_like(p))
    torch.testing.assert_close(f(x, m), ref)


def test_causal_query_before_any_source_key_is_finite_with_finite_gradients() -> None:
    f = MulTFusion({"a": 2, "b": 3}, 8, causal=True)
    x = {"a": torch.randn(1, 4, 2), "b": torch.randn(1, 4, 3)}
    m = {"a": torch.ones(1, 4, dtype=torch.bool), "b": torch.tensor([[False, False, False, True]])}
    out, w = f.forward_with_weights(x, m)
    assert bool(out.isfinite().all())
    assert w is not None and torch.all(w[0, :3, 0] == 0)  # target a has no key of b before step 3
    torch.testing.assert_close(w[0, 3, 0], torch.tensor([0.0, 1.0]))
    out.sum().backward()
    assert all(bool(p.grad.isfinite().all()) for p in f.parameters() if p.grad is not None)


def test_weights_shape_diagonal_and_rows() -> None:
    f = MulTFusion(DIMS, 8).eval()
    x, m = _inputs(t=5)
    out, w = f.forward_with_weights(x, m)
    assert out.shape == (2, 5, 8)
    assert w is not None and w.shape == (2, 5, 3, 3)
    assert torch.all(w.diagonal(dim1=-2, dim2=-1) == 0)
    assert torch.all(w >= 0)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 5, 3))  # every source is present somewhere


def test_step_with_every_modality_missing_is_the_output_bias() -> None:
    f = MulTFusion(DIMS, 8).eval()
    x, m = _inputs(t=7)  # step 3 has every modality missing
    out = f(x, m)
    torch.testing.assert_close(out[:, 3], f.out_proj.bias.detach().expand(2, 8))


@pytest.mark.parametrize("kernel_size", [1, 3])
def test_causal_variant_ignores_the_future(kernel_size: int) -> None:
    f = MulTFusion(DIMS, 8, causal=True, kernel_size=kernel_size).eval()
    assert f.is_causal
    x, m = _inputs(t=8)
    ref = f(x, m)
    for t in (0, 4):
        later = {k: v.clone() for k, v in x.items()}
        later_m = {k: v.clone() for k, v in m.items()}
        for k in later:
            later[k][:, t + 1 :] += 3.0
            later_m[k][:, t + 1 :] = True
        out = f(later, later_m)
        torch.testing.assert_close(out[:, : t + 1], ref[:, : t + 1])
        assert not torch.allclose(out[:, t + 1 :], ref[:, t + 1 :])


def test_non_causal_uses_the_future() -> None:
    f = MulTFusion(DIMS, 8).eval()
    assert not f.is_causal
    x, m = _inputs(t=6)
    full = {k: torch.ones_like(v) for k, v in m.items()}
    later = {k: v.clone() for k, v in x.items()}
    for v in later.values():
        v[:, -1] += 3.0
    assert not torch.allclose(f(x, full)[:, 0], f(later, full)[:, 0])


def test_dropout_is_active_in_training_only() -> None:
    f = MulTFusion(DIMS, 8, dropout=0.5, attn_dropout=0.5)
    x, m = _inputs()
    torch.manual_seed(0)
    a, b = f(x, m), f(x, m)
    assert not torch.allclose(a, b)
    f.eval()
    torch.testing.assert_close(f(x, m), f(x, m))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_heads": 3}, r"'num_heads' parameter of MulTFusion must be a positive divisor of hidden \(32\)"),
        ({"hidden": 6, "num_heads": 4}, r"positive divisor of hidden \(6\). Got 4"),
        ({"hidden": 0}, "'hidden' parameter of MulTFusion must be a positive integer. Got 0"),
        ({"layers": 0}, "'layers' parameter of MulTFusion must be a positive integer"),
        ({"self_layers": -1}, "'self_layers' parameter of MulTFusion must be an integer >= 0. Got -1"),
        ({"kernel_size": 2}, "'kernel_size' parameter of MulTFusion must be odd. Got 2"),
        ({"dropout": 1.0}, r"'dropout' parameter of MulTFusion must be a number in \[0, 1\)"),
        ({"attn_dropout": -0.1}, "'attn_dropout' parameter of MulTFusion"),
        ({"causal": "yes"}, "'causal' parameter of MulTFusion must be a bool"),
    ],
)
def test_bad_kwargs_are_named(kwargs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MulTFusion(DIMS, 8, **kwargs)
