"""mmfuse's dropout draws torch's masks bit for bit; the all-present mask shortcut changes nothing either."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import mmfuse.layers.dropout as dropout_module
from mmfuse.evaluate.analysis.uncertainty import enable_mc_dropout
from mmfuse.fusion import MulTFusion
from mmfuse.layers.attention import MaskedMultiheadAttention
from mmfuse.layers.dropout import DRAW_CHUNK, MIN_FAST_NUMEL, Dropout, dropout
from mmfuse.layers.masking import all_present, masked_softmax, zero_missing


def _bits(x: torch.Tensor) -> torch.Tensor:
    return x.detach().contiguous().view(torch.uint8)


SHAPES = [(3, 5), (32, 200), (4, 10, 50, 50), (7, 1031), (3, 100_003)]


def test_the_shape_table_spans_several_draw_chunks() -> None:
    """The equality test below must cover a mask drawn in more than one chunk."""
    assert max(math.prod(shape) for shape in SHAPES) > DRAW_CHUNK


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
@pytest.mark.parametrize("shape", SHAPES)
def test_dropout_equals_torch_bit_for_bit(shape: tuple[int, ...], p: float, dtype: torch.dtype) -> None:
    x = torch.randn(shape, dtype=torch.float64).to(dtype).requires_grad_(True)
    upstream = torch.randn(shape, dtype=torch.float64).to(dtype)
    runs = []
    for fn in (F.dropout, dropout):
        torch.manual_seed(7)
        out = fn(x, p, True)
        (grad,) = torch.autograd.grad(out, x, upstream)
        runs.append((out, grad, torch.rand(4)))  # the draw after: the generator ended in the same state
    (ref, ref_grad, ref_next), (got, got_grad, got_next) = runs
    assert torch.equal(_bits(got), _bits(ref))  # bits, so a -0.0 for a +0.0 would fail too
    assert torch.equal(_bits(got_grad), _bits(ref_grad))
    assert torch.equal(got_next, ref_next)
    kept = (ref != 0).double().mean().item()
    if x.numel() >= 10_000:  # the mask really is a dropout mask, not all ones
        assert abs(kept - (1 - p)) < 0.02


def test_dropout_takes_the_fast_path_and_it_is_cheaper(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above the size threshold the float64 uniform draws are used (not a silent fallback to F.dropout)."""
    calls = []
    real_rand = torch.rand
    monkeypatch.setattr(dropout_module.torch, "rand", lambda *a, **k: calls.append(k) or real_rand(*a, **k))
    dropout(torch.ones(MIN_FAST_NUMEL), 0.5)
    assert calls == [{"dtype": torch.float64}]
    calls.clear()
    dropout(torch.ones(MIN_FAST_NUMEL - 1), 0.5)  # small: torch's own
    dropout(torch.ones(MIN_FAST_NUMEL), 0.5, training=False)
    assert calls == []


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_dropout_edge_probabilities_match_torch(p: float) -> None:
    x = torch.randn(64, 128)
    torch.manual_seed(0)
    expected = F.dropout(x, p, True)
    torch.manual_seed(0)
    assert torch.equal(dropout(x, p, True), expected)
    assert torch.equal(dropout(x, 0.5, training=False), x)


def test_dropout_module_is_an_nn_dropout() -> None:
    module = Dropout(0.3)
    assert isinstance(module, nn.Dropout)
    assert repr(module) == repr(nn.Dropout(0.3))
    assert module.state_dict() == {}
    net = nn.Sequential(nn.Linear(2, 2), module).eval()
    with enable_mc_dropout(net) as found:  # MC dropout still finds it
        assert found == 1 and module.training


def test_mult_with_mmfuse_dropout_equals_it_with_torch_dropout() -> None:
    """The whole replacement, through a real fusion: outputs and every gradient bit for bit."""
    torch.manual_seed(0)
    fusion = MulTFusion({"a": 6, "b": 4}, 8, hidden=16, num_heads=2, layers=2, dropout=0.2, attn_dropout=0.3)
    reference = copy.deepcopy(fusion)
    for name, module in list(reference.named_modules()):
        if isinstance(module, Dropout):
            parent, _, attr = name.rpartition(".")
            setattr(reference.get_submodule(parent) if parent else reference, attr, nn.Dropout(module.p))
    assert not any(type(m) is Dropout for m in reference.modules())
    assert sum(type(m) is Dropout for m in fusion.modules()) > 10
    x = {"a": torch.randn(16, 40, 6), "b": torch.randn(16, 40, 4)}
    masks = {"a": torch.ones(16, 40, dtype=torch.bool), "b": torch.rand(16, 40) > 0.2}
    results = []
    for model in (reference, fusion):
        torch.manual_seed(3)
        out = model(x, masks)
        grads = torch.autograd.grad(out.square().sum(), list(model.parameters()))
        results.append((out, grads))
    assert torch.equal(_bits(results[0][0]), _bits(results[1][0]))
    for ref, got in zip(results[0][1], results[1][1], strict=True):
        assert torch.equal(_bits(ref), _bits(got))


def test_all_present_is_only_true_for_a_concrete_all_true_cpu_mask() -> None:
    assert all_present(torch.ones(3, 4, dtype=torch.bool))
    assert not all_present(torch.tensor([[True, False]]))

    def traced_check(mask: torch.Tensor) -> torch.Tensor:
        assert not all_present(mask)  # under tracing the shortcut is never taken
        return mask.float()

    torch.jit.trace(traced_check, torch.ones(2, dtype=torch.bool), check_trace=False)


def test_mask_shortcut_changes_no_value_or_gradient() -> None:
    scores = torch.randn(4, 3, 5, 6, requires_grad=True)
    mask = torch.ones(4, 1, 1, 6, dtype=torch.bool)
    upstream = torch.randn(4, 3, 5, 6)
    fast = masked_softmax(scores, mask)
    slow = torch.where(mask, torch.softmax(torch.where(mask, scores, torch.finfo(scores.dtype).min), -1), 0.0)
    assert torch.equal(fast, slow)
    assert torch.equal(torch.autograd.grad(fast, scores, upstream)[0], torch.autograd.grad(slow, scores, upstream)[0])
    x = torch.randn(4, 6, 3)
    assert torch.equal(zero_missing(x, torch.ones(4, 6, dtype=torch.bool)), x)
    partial = torch.ones(4, 6, dtype=torch.bool)
    partial[1, 2] = False
    x[1, 2] = float("nan")
    assert torch.equal(zero_missing(x, partial)[1, 2], torch.zeros(3))  # the masked path still runs


class _Attend(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = MaskedMultiheadAttention(8, 2, zero_unattended=True)

    def forward(self, q: torch.Tensor, k: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        return self.attn(q, k, k, allowed)[0]


def test_exported_attention_keeps_its_mask() -> None:
    """A graph exported from an all-present example still masks: the shortcut is not baked into it."""
    module = _Attend().eval()
    q, k = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    everything = torch.ones(2, 1, 5, dtype=torch.bool)
    nothing = torch.zeros(2, 1, 5, dtype=torch.bool)
    exported = torch.export.export(module, (q, k, everything)).module()
    assert torch.equal(exported(q, k, nothing), torch.zeros(2, 3, 8))
    assert torch.allclose(exported(q, k, everything), module(q, k, everything))
    traced = torch.jit.trace(module, (q, k, everything), check_trace=False)
    assert torch.equal(traced(q, k, nothing), torch.zeros(2, 3, 8))
