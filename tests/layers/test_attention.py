"""``mmfuse.layers.attention``: the num_heads rule, attention that never returns NaN, the pre-LayerNorm block."""

from __future__ import annotations

import pytest
import torch

from mmfuse.layers.attention import AttentionBlock, MaskedMultiheadAttention, resolve_num_heads


@pytest.mark.parametrize(("num_heads", "dim", "expected"), [(None, 8, 4), (None, 6, 2), (None, 5, 1), (3, 9, 3)])
def test_resolve_num_heads(num_heads: int | None, dim: int, expected: int) -> None:
    assert resolve_num_heads("Owner", num_heads, dim) == expected


@pytest.mark.parametrize(
    ("num_heads", "dim", "message"),
    [
        (3, 8, r"'num_heads' parameter of Owner must be a positive divisor of width \(8\). Got 3 instead"),
        (0, 8, r"divisor of width \(8\). Got 0 instead"),
        (True, 8, r"divisor of width \(8\). Got True instead"),
        (2.0, 8, r"divisor of width \(8\). Got 2.0 instead"),
        (None, 0, r"divisor of width \(0\). Got None instead"),
    ],
)
def test_resolve_num_heads_errors(num_heads: object, dim: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_num_heads("Owner", num_heads, dim, dim_name="width")  # type: ignore[arg-type]


def test_attention_names_its_own_heads_error() -> None:
    with pytest.raises(ValueError, match=r"'num_heads' parameter of MaskedMultiheadAttention .* embed_dim \(8\)"):
        MaskedMultiheadAttention(8, 3)


def test_zero_unattended_zeroes_only_queries_without_keys() -> None:
    torch.manual_seed(0)
    plain = MaskedMultiheadAttention(8, 2)
    zeroing = MaskedMultiheadAttention(8, 2, zero_unattended=True)
    zeroing.load_state_dict(plain.state_dict())
    q = torch.randn(2, 3, 8, requires_grad=True)
    k = torch.randn(2, 4, 8)
    allowed = torch.ones(2, 3, 4, dtype=torch.bool)
    allowed[0, 1] = False  # query 1 of sample 0 has nothing to attend to
    ref, ref_w = plain(q, k, k, allowed)
    out, w = zeroing(q, k, k, allowed)
    torch.testing.assert_close(ref[0, 1], plain.out_proj.bias)  # without the option: the projection's bias
    assert torch.all(out[0, 1] == 0)
    keep = allowed.any(dim=-1)  # [B, Tq]
    torch.testing.assert_close(out[keep], ref[keep], rtol=0, atol=0)
    torch.testing.assert_close(w, ref_w, rtol=0, atol=0)
    out.sum().backward()
    assert q.grad is not None and torch.all(q.grad[0, 1] == 0)


def test_zero_unattended_with_a_key_padding_mask() -> None:
    attn = MaskedMultiheadAttention(4, 1, zero_unattended=True)
    allowed = torch.tensor([[[True, False]], [[False, False]]])  # [B, 1, Tk]: sample 1 has no key at all
    out, _ = attn(torch.randn(2, 3, 4), torch.randn(2, 2, 4), torch.randn(2, 2, 4), allowed)
    assert torch.all(out[1] == 0) and bool((out[0] != 0).any())


@pytest.mark.parametrize("cross", [False, True])
def test_attention_block(cross: bool) -> None:
    torch.manual_seed(0)
    block = AttentionBlock(8, 2, cross=cross).eval()
    assert (block.norm_kv is not None) is cross
    x, source = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    allowed = torch.ones(2, 5, 5, dtype=torch.bool).tril()  # causal
    allowed[1] = False  # sample 1 has no key anywhere: no attention update, only the feed-forward
    out, attended = block(x, allowed, source)
    assert out.shape == attended.shape == (2, 5, 8) and torch.all(attended[1] == 0)
    torch.testing.assert_close(out[1], x[1] + block.ffn(block.norm_ff(x[1])))
    kv = block.norm_kv(source) if block.norm_kv is not None else block.norm_q(x)
    expected, _ = block.attn(block.norm_q(x), kv, kv, allowed)
    torch.testing.assert_close(attended, expected)
    if not cross:  # a self-attention block ignores a source
        torch.testing.assert_close(block(x, allowed, None)[0], out)
