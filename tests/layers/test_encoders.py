"""``mmfuse.layers.encoders.TransformerEncoder`` on :class:`~mmfuse.layers.attention.AttentionBlock` layers.

The encoder's layers used to be a class of their own (``_TransformerLayer``: the same pre-LayerNorm block under the
submodule names ``norm1`` / ``norm2``, and a query with no allowed key got the attention's output bias instead of
a zero update). ``_OldLayer`` below is that class, copied as it was, as the reference.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from mmfuse.layers.attention import AttentionBlock, MaskedMultiheadAttention
from mmfuse.layers.dropout import Dropout
from mmfuse.layers.encoders import TransformerEncoder, rename_legacy_keys


class _OldLayer(nn.Module):
    """``mmfuse.layers.encoders._TransformerLayer`` before the encoder used AttentionBlock (verbatim)."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MaskedMultiheadAttention(dim, num_heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), Dropout(dropout), nn.Linear(2 * dim, dim))
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.dropout(self.attn(h, h, h, allowed)[0])
        return x + self.dropout(self.ffn(self.norm2(x)))


class _OldLayerAdapter(nn.Module):
    """Calls an ``_OldLayer`` the way the encoder calls its layers now (returning ``(x, update)``)."""

    def __init__(self, layer: _OldLayer) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor, allowed: Tensor) -> tuple[Tensor, Tensor]:
        return self.layer(x, allowed), x


def _old_encoder(new: TransformerEncoder, dropout: float) -> TransformerEncoder:
    """The encoder as it was: the same weights in ``_OldLayer`` layers."""
    old = copy.deepcopy(new)
    dim, heads = new.norm.normalized_shape[0], new.layers[0].attn.num_heads
    layers = [_OldLayer(dim, heads, dropout).to(torch.float64) for _ in new.layers]
    for layer, block in zip(layers, new.layers, strict=True):
        state = {k.replace("norm_q.", "norm1.").replace("norm_ff.", "norm2."): v for k, v in block.state_dict().items()}
        layer.load_state_dict(state, strict=True)
    old.layers = nn.ModuleList(_OldLayerAdapter(layer) for layer in layers)
    return old


def _inputs(b: int = 3, t: int = 7, dim: int = 8) -> tuple[Tensor, Tensor, Tensor]:
    """float64 features, padding (row 1 has 5 real steps, row 2 has 2) and missing steps (row 0 misses its first
    two steps, so a causal query at step 0 or 1 has no key; row 2 misses everything)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, t, dim, generator=gen, dtype=torch.float64)
    padding = torch.ones(b, t, dtype=torch.bool)
    padding[1, 5:] = False
    padding[2, 2:] = False
    present = torch.rand(b, t, generator=gen) > 0.3
    present[0, :2] = False
    present[0, 2] = True
    present[2] = False
    return x, padding, present


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_same_outputs_and_gradients_as_the_old_layers(causal: bool, num_layers: int) -> None:
    torch.manual_seed(1)
    new = TransformerEncoder(8, num_layers=num_layers, num_heads=2, causal=causal).to(torch.float64).eval()
    old = _old_encoder(new, 0.0).eval()
    x, padding, present = _inputs()
    real = present & padding  # [B, T]: the steps a model keeps (it zeroes missing steps after its encoder)
    gen = torch.Generator().manual_seed(2)
    weight = torch.randn(*x.shape, generator=gen, dtype=torch.float64)

    outs, grads = [], []
    for enc in (new, old):
        xi = x.clone().requires_grad_(True)
        out = enc(xi, padding, present)
        (out * weight)[real].sum().backward()
        outs.append(out.detach())
        grads.append([xi.grad, *(p.grad for p in enc.parameters())])
    assert torch.equal(outs[0][real], outs[1][real])
    assert torch.equal(outs[0][~padding], outs[1][~padding])  # padded steps: zero in both
    assert torch.all(outs[0][~padding] == 0)
    for g_new, g_old in zip(*grads, strict=True):
        assert g_new is not None and g_old is not None and torch.equal(g_new, g_old)

    # Where the old layer gave a query with no allowed key the attention's output bias, AttentionBlock gives a zero
    # update: only real-but-missing steps with no present key before them (causal) or at all can differ there, and
    # the model zeroes missing steps after its encoder.
    differs = (outs[0] != outs[1]).any(dim=-1)  # [B, T]
    assert not bool((differs & real).any())
    assert bool(differs[2, :2].all())  # row 2 has no present step: its queries never had a key


@pytest.mark.parametrize("causal", [False, True])
def test_same_dropout_draws_as_the_old_layers(causal: bool) -> None:
    """In training mode the new layers draw their dropout masks in the old order: the same seed, the same output."""
    torch.manual_seed(1)
    new = TransformerEncoder(8, num_layers=2, num_heads=2, causal=causal, dropout=0.3).to(torch.float64).train()
    old = _old_encoder(new, 0.3).train()
    x, padding, present = _inputs()
    real = present & padding
    torch.manual_seed(5)
    out_new = new(x, padding, present)
    torch.manual_seed(5)
    out_old = old(x, padding, present)
    assert torch.equal(out_new[real], out_old[real])


def test_layers_are_self_attention_blocks_built_in_the_old_order() -> None:
    """Seeded initialisation draws in the same order as before: the same seed gives the old layer's weights."""
    torch.manual_seed(4)
    enc = TransformerEncoder(8, num_layers=2, num_heads=2, dropout=0.1)
    torch.manual_seed(4)
    old = [_OldLayer(8, 2, 0.1) for _ in range(2)]
    for i, (block, layer) in enumerate(zip(enc.layers, old, strict=True)):
        assert isinstance(block, AttentionBlock) and block.norm_kv is None
        assert block.attn.zero_unattended and block.attn.dropout.p == 0.1 and block.dropout.p == 0.1
        renamed = rename_legacy_keys(enc, {f"layers.{i}.{k}": v for k, v in layer.state_dict().items()})
        for k, v in renamed.items():
            assert torch.equal(v, enc.state_dict()[k])


def test_old_state_dict_keys_load_through_the_pre_hook() -> None:
    """A state dict saved before (``layers.N.norm1`` / ``norm2``) loads into the encoder and inside a parent."""
    torch.manual_seed(0)
    enc = TransformerEncoder(8, num_layers=2, num_heads=2)
    state = enc.state_dict()
    old_keys = {
        k.replace(".norm_q.", ".norm1.").replace(".norm_ff.", ".norm2."): v.clone() + 1.0 for k, v in state.items()
    }
    assert "layers.1.norm1.weight" in old_keys and "layers.1.norm_q.weight" not in old_keys
    fresh = TransformerEncoder(8, num_layers=2, num_heads=2)
    fresh.load_state_dict(old_keys, strict=True)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, state[k] + 1.0), k
    assert "layers.1.norm1.weight" in old_keys  # the caller's dict is left as it was

    parent = nn.ModuleDict({"enc": TransformerEncoder(8, num_layers=2, num_heads=2)})
    parent.load_state_dict({f"enc.{k}": v for k, v in old_keys.items()}, strict=True)
    assert torch.equal(parent["enc"].layers[1].norm_ff.bias, state["layers.1.norm_ff.bias"] + 1.0)


def test_rename_legacy_keys_touches_only_transformer_encoder_layers() -> None:
    model = nn.ModuleDict(
        {"enc": TransformerEncoder(4, num_heads=1), "other": nn.ModuleDict({"norm1": nn.LayerNorm(4)})}
    )
    state = {k.replace("norm_q", "norm1"): v for k, v in model.state_dict().items()}
    renamed = rename_legacy_keys(model, state)
    assert sorted(renamed) == sorted(model.state_dict())
    assert "other.norm1.weight" in renamed and "enc.layers.0.norm1.weight" in state


def test_num_heads_error_names_the_encoder() -> None:
    with pytest.raises(
        ValueError, match=r"'num_heads' parameter of TransformerEncoder must be a positive divisor of dim \(8\)\. Got 3"
    ):
        TransformerEncoder(8, num_heads=3)
