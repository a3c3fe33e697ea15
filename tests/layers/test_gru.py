"""gru_packed computes nn.GRU's function on packed sequences: outputs, gradients and dropout draws."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mmfuse.layers import RNNEncoder
from mmfuse.layers._gru import gru_packed


def _reference(rnn: nn.GRU, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, _ = rnn(packed)
    return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]


@pytest.mark.parametrize(
    ("bidirectional", "num_layers", "dropout", "lengths"),
    [
        (True, 1, 0.0, [3, 7, 1, 3]),  # ties, a one-step row, the longest not first
        (False, 1, 0.0, [2, 5, 5]),
        (True, 2, 0.5, [4, 7, 2, 7, 1]),  # dropout between layers: the same draws as nn.GRU
        (False, 3, 0.3, [6, 1]),
        (True, 1, 0.0, [4]),  # one sequence
    ],
)
def test_gru_packed_equals_nn_gru(bidirectional: bool, num_layers: int, dropout: float, lengths: list[int]) -> None:
    torch.manual_seed(0)
    rnn = nn.GRU(5, 4, num_layers=num_layers, batch_first=True, bidirectional=bidirectional, dropout=dropout)
    rnn = rnn.double()
    lens = torch.tensor(lengths)
    x = torch.randn(len(lengths), 7, 5, dtype=torch.double, requires_grad=True)
    torch.manual_seed(1)
    expected = _reference(rnn, x, lens)
    weights = torch.randn_like(expected)
    expected_grads = torch.autograd.grad((expected * weights).sum(), [x, *rnn.parameters()])
    torch.manual_seed(1)
    got = gru_packed(rnn, x, lens)
    got_grads = torch.autograd.grad((got * weights).sum(), [x, *rnn.parameters()])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    for g, e in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-12)
    padded = torch.arange(7).unsqueeze(0) >= lens.unsqueeze(1)  # [B, T]
    assert bool((got[padded] == 0).all())


def test_gru_packed_float32_matches_within_rounding() -> None:
    torch.manual_seed(0)
    rnn = nn.GRU(16, 8, batch_first=True, bidirectional=True)
    x = torch.randn(6, 11, 16)
    lens = torch.tensor([11, 3, 9, 9, 1, 5])
    torch.testing.assert_close(gru_packed(rnn, x, lens), _reference(rnn, x, lens), rtol=1e-5, atol=1e-6)


def test_rnn_encoder_gru_on_cpu_equals_the_nn_gru_path() -> None:
    torch.manual_seed(0)
    enc = RNNEncoder(8, cell="gru", residual=False).eval()
    x = torch.randn(3, 6, 8)
    mask = torch.arange(6).unsqueeze(0) < torch.tensor([[6], [2], [4]])  # [B, T]
    context = _reference(enc.rnn, x, mask.sum(dim=1))
    expected = enc.norm(context).masked_fill(~mask.unsqueeze(-1), 0.0)
    torch.testing.assert_close(enc(x, mask), expected, rtol=1e-5, atol=1e-6)


def test_gru_packed_refuses_time_major_gru() -> None:
    with pytest.raises(ValueError, match=r"batch-first nn\.GRU with biases\. Got batch_first=False"):
        gru_packed(nn.GRU(3, 2), torch.zeros(1, 2, 3), torch.tensor([2]))


def test_rnn_encoder_under_cpu_autocast_runs_nn_gru() -> None:
    torch.manual_seed(0)
    enc = RNNEncoder(8, cell="gru")
    x = torch.randn(3, 5, 8, requires_grad=True)
    mask = torch.arange(5).unsqueeze(0) < torch.tensor([[5], [2], [3]])  # [B, T]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not enc._gru_packed_applies(x)
        out = enc(x, mask)
    out.float().sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())
    assert enc._gru_packed_applies(x)  # outside autocast again
