from __future__ import annotations

import pytest
import torch

from mmfuse.fusion import CrossAttentionFusion, GatedFusion, WeightedFusion, create_fusion, list_fusions
from mmfuse.testing import make_fusion_inputs

DIMS = {"text": 5, "audio": 3, "video": 4}


def _inputs(b: int = 2, t: int = 6, seed: int = 0):
    return make_fusion_inputs(DIMS, b, t, seed=seed)


@pytest.mark.parametrize("name", list_fusions())
def test_validation_names_the_problem(name: str) -> None:
    f = create_fusion(name, DIMS, 8)
    x, m = _inputs()
    with pytest.raises(ValueError, match=r"missing \['video'\], unexpected \['depth'\]"):
        f({**{k: v for k, v in x.items() if k != "video"}, "depth": x["video"]}, m)
    with pytest.raises(ValueError, match=r"modality 'audio'.*\[B, T, 3\].*\[2, 6, 4\]"):
        f({**x, "audio": torch.zeros(2, 6, 4)}, m)
    with pytest.raises(ValueError, match=r"mask of modality 'text'.*\[2, 6\].*\[2, 5\]"):
        f(x, {**m, "text": torch.ones(2, 5, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"mask of modality 'text'.*bool"):
        f(x, {**m, "text": torch.ones(2, 6)})
    with pytest.raises(ValueError, match="share B and T"):
        f({**x, "video": torch.zeros(2, 5, 4)}, m)


@pytest.mark.parametrize("bad", [{}, {"a": 0}, {"a": 2.5}])
def test_bad_modality_dims(bad) -> None:
    with pytest.raises(ValueError, match="modality_dims"):
        create_fusion("concat", bad, 4)


def test_bad_out_dim() -> None:
    with pytest.raises(ValueError, match="'out_dim' parameter of GatedFusion"):
        GatedFusion({"a": 2}, 0)


@pytest.mark.parametrize("name", list_fusions())
def test_missing_modality_values_do_not_matter(name: str) -> None:
    """A modality missing everywhere: its values (noise or NaN) do not change the output."""
    f = create_fusion(name, DIMS, 8).eval()
    x, m = _inputs()
    m = {**m, "audio": torch.zeros_like(m["audio"])}
    ref = f(x, m)
    noisy = f({**x, "audio": torch.randn_like(x["audio"]) * 100}, m)
    nan = f({**x, "audio": torch.full_like(x["audio"], float("nan"))}, m)
    torch.testing.assert_close(noisy, ref)
    torch.testing.assert_close(nan, ref)


def test_concat_presence_flags_distinguish_missing_from_zero() -> None:
    f = create_fusion("concat", DIMS, 8).eval()
    x, m = _inputs()
    zeros = {k: torch.zeros_like(v) for k, v in x.items()}
    present = {k: torch.ones_like(v) for k, v in m.items()}
    absent = {k: torch.zeros_like(v) for k, v in m.items()}
    assert not torch.allclose(f(zeros, present), f(zeros, absent))


def test_gated_weights_renormalise_over_present() -> None:
    f = GatedFusion(DIMS, 8).eval()
    x, m = _inputs(t=8)
    out, w = f.forward_with_weights(x, m)
    assert w is not None and w.shape == (2, 8, 3)
    present = torch.stack([m[k] for k in sorted(DIMS)], dim=-1)
    assert torch.all(w[~present] == 0)
    any_present = present.any(-1)
    torch.testing.assert_close(w.sum(-1)[any_present], torch.ones(int(any_present.sum())))
    assert torch.all(out[~any_present] == 0)


def test_gated_single_present_modality_is_its_candidate() -> None:
    f = GatedFusion({"a": 2, "b": 3}, 4).eval()
    x = {"a": torch.randn(1, 3, 2), "b": torch.randn(1, 3, 3)}
    m = {"a": torch.ones(1, 3, dtype=torch.bool), "b": torch.zeros(1, 3, dtype=torch.bool)}
    torch.testing.assert_close(f(x, m), torch.tanh(f.values[0](x["a"])))


def test_weighted_masked_softmax_and_all_missing_zero() -> None:
    f = WeightedFusion(DIMS, 8).eval()
    x, m = _inputs(t=8)
    out, w = f.forward_with_weights(x, m)
    assert w is not None
    present = torch.stack([m[k] for k in sorted(DIMS)], dim=-1)
    any_present = present.any(-1)
    assert torch.all(w[~present] == 0)
    torch.testing.assert_close(w.sum(-1)[any_present], torch.ones(int(any_present.sum())))
    assert torch.all(out[~any_present] == 0)
    assert bool(out.isfinite().all())


def test_cross_attention_weights_and_no_self_attention() -> None:
    f = CrossAttentionFusion(DIMS, 8).eval()
    x, m = _inputs(t=5)
    out, w = f.forward_with_weights(x, m)
    assert out.shape == (2, 5, 8)
    assert w is not None and w.shape == (2, 5, 3, 3)
    assert torch.all(w.diagonal(dim1=-2, dim2=-1) == 0)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 5, 3))  # others present somewhere in every sequence


def test_cross_attention_nothing_to_attend_is_finite() -> None:
    f = CrossAttentionFusion({"a": 2, "b": 3}, 8, causal=True).eval()
    x = {"a": torch.randn(1, 4, 2), "b": torch.randn(1, 4, 3)}
    # "b" appears only at the last step: causal queries of "a" before it have nothing to attend to.
    m = {"a": torch.ones(1, 4, dtype=torch.bool), "b": torch.tensor([[False, False, False, True]])}
    out, w = f.forward_with_weights(x, m)
    assert bool(out.isfinite().all())
    assert w is not None and torch.all(w[0, :3, 0] == 0)
    out.sum().backward()
    assert all(bool(p.grad.isfinite().all()) for p in f.parameters() if p.grad is not None)


def test_cross_attention_causality_is_per_instance() -> None:
    assert CrossAttentionFusion(DIMS, 8).is_causal is False
    assert CrossAttentionFusion(DIMS, 8, causal=True).is_causal is True
    # The non-causal instance really uses the future.
    f = CrossAttentionFusion(DIMS, 8).eval()
    x, m = _inputs(t=6)
    x2 = {k: v.clone() for k, v in x.items()}
    for v in x2.values():
        v[:, -1] += 5.0
    m2 = {k: v.clone() for k, v in m.items()}
    for v in m2.values():
        v[:, -1] = True
    assert not torch.allclose(f(x, m2)[:, 0], f(x2, m2)[:, 0])


def test_cross_attention_head_validation() -> None:
    with pytest.raises(ValueError, match="'num_heads' parameter of CrossAttentionFusion"):
        CrossAttentionFusion({"a": 2}, 8, num_heads=3)
    assert CrossAttentionFusion({"a": 2}, 6).attn[0].num_heads == 2
