"""Tests for mmfuse.layers (kept beside the models that use them)."""

from __future__ import annotations

import pytest
import torch

from mmfuse.layers import (
    MLP,
    AttentionPool,
    LastStepPool,
    MaskedMultiheadAttention,
    MeanPool,
    make_encoder,
    make_pooling,
    masked_mean,
    masked_softmax,
    zero_missing,
)


def test_zero_missing_blocks_nan_and_gradient() -> None:
    x = torch.tensor([[[1.0, 2.0], [float("nan"), float("inf")]]], requires_grad=True)
    mask = torch.tensor([[True, False]])
    out = zero_missing(x, mask)
    assert out.tolist() == [[[1.0, 2.0], [0.0, 0.0]]]
    out.sum().backward()
    assert x.grad is not None and x.grad.tolist() == [[[1.0, 1.0], [0.0, 0.0]]]


def test_masked_softmax_rows() -> None:
    scores = torch.tensor([[1.0, 2.0, 1e9], [3.0, -1.0, 0.0]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    w = masked_softmax(scores, mask)
    assert torch.allclose(w[0], torch.softmax(torch.tensor([1.0, 2.0, -1e30]), 0))
    assert torch.all(w[1] == 0)


def test_masked_mean_empty_is_zero() -> None:
    x = torch.ones(2, 3, 4)
    mask = torch.tensor([[True, False, False], [False, False, False]])
    assert masked_mean(x, mask).tolist() == [[1.0] * 4, [0.0] * 4]


@pytest.mark.parametrize("pool", [MeanPool(), AttentionPool(4), LastStepPool()])
def test_pooling_ignores_padding(pool) -> None:
    x = torch.randn(2, 5, 4)
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    ref = pool(x, mask)
    x2 = x.clone()
    x2[0, 3:] = float("nan")
    torch.testing.assert_close(pool(x2, mask), ref)
    assert ref.shape == (2, 4)


def test_last_step_pool_takes_last_real_step() -> None:
    x = torch.arange(10.0).view(1, 5, 2)
    assert LastStepPool()(x, torch.tensor([[True, True, True, False, False]])).tolist() == [[4.0, 5.0]]


def test_make_pooling_unknown() -> None:
    with pytest.raises(ValueError, match="Valid names: attention, last, mean"):
        make_pooling("max", 4)


def test_attention_all_masked_is_zero_not_nan() -> None:
    attn = MaskedMultiheadAttention(8, 2)
    q = torch.randn(1, 3, 8)
    allowed = torch.tensor([[[True, False], [False, False], [False, True]]])
    out, w = attn(q, torch.randn(1, 2, 8), torch.randn(1, 2, 8), allowed)
    assert bool(out.isfinite().all())
    torch.testing.assert_close(out[0, 1], attn.out_proj.bias)
    assert torch.all(w[0, :, 1] == 0)


@pytest.mark.parametrize("kind", ["gru", "lstm", "transformer", "conv", "none"])
def test_encoders_shape_and_padding(kind: str) -> None:
    enc = make_encoder(kind, 8, num_layers=2, bidirectional=kind in ("gru", "lstm"), num_heads=2).eval()
    x = torch.randn(2, 5, 8)
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    x = zero_missing(x, mask)
    out = enc(x, mask)
    assert out.shape == (2, 5, 8) and torch.all(out[0, 3:] == 0)
    longer = enc(torch.cat([x, torch.zeros(2, 3, 8)], 1), torch.cat([mask, torch.zeros(2, 3, dtype=torch.bool)], 1))
    torch.testing.assert_close(longer[:, :5][mask], out[mask], atol=1e-5, rtol=1e-4)


def test_encoder_validation() -> None:
    with pytest.raises(ValueError, match="cannot be bidirectional"):
        make_encoder("gru", 8, causal=True, bidirectional=True)
    with pytest.raises(ValueError, match="Unknown encoder 'rnn'"):
        make_encoder("rnn", 8)
    with pytest.raises(ValueError, match="must be odd"):
        make_encoder("conv", 8, kernel_size=4)


def test_mlp_validation_and_shape() -> None:
    assert MLP(3, [5, 6], 2)(torch.zeros(4, 3)).shape == (4, 2)
    with pytest.raises(ValueError, match="'out_dim' parameter of MLP"):
        MLP(3, [], 0)
