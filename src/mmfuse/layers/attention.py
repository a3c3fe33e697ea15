"""Multi-head attention that takes boolean masks and never produces NaN, and the blocks built on it.

``torch.nn.MultiheadAttention`` returns NaN for a query whose keys are all masked, which happens whenever a
modality is missing for a whole sequence. :class:`MaskedMultiheadAttention` gives such a query a zero
attention output instead. :class:`AttentionBlock` is the pre-LayerNorm transformer block over it (to a source
sequence or to itself), and :func:`resolve_num_heads` is the one rule for a ``num_heads`` argument.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from mmfuse.layers.dropout import Dropout
from mmfuse.layers.masking import masked_softmax, zero_missing

__all__ = ["DEFAULT_HEAD_CHOICES", "AttentionBlock", "MaskedMultiheadAttention", "resolve_num_heads"]

DEFAULT_HEAD_CHOICES = (4, 2, 1)
"""The head counts :func:`resolve_num_heads` tries, in order, when ``num_heads`` is None."""


def resolve_num_heads(owner: str, num_heads: int | None, dim: int, *, dim_name: str = "hidden") -> int:
    """Return the number of attention heads for a width ``dim``: ``num_heads``, checked, or the default.

    Args:
        owner: The class or function whose argument it is (named in the error).
        num_heads: Heads asked for; None picks the largest of :data:`DEFAULT_HEAD_CHOICES` that divides ``dim``.
        dim: The width the heads split (a positive integer).
        dim_name: The name of ``dim`` in ``owner``'s signature (named in the error).

    Raises:
        ValueError: if ``num_heads`` is not a positive integer (bool excluded) that divides ``dim``.

    Example:
        >>> resolve_num_heads("MyFusion", None, 6)
        2
        >>> resolve_num_heads("MyFusion", 3, 8)
        Traceback (most recent call last):
        ...
        ValueError: The 'num_heads' parameter of MyFusion must be a positive divisor of hidden (8). Got 3 instead.
    """
    if num_heads is None and isinstance(dim, int) and dim >= 1:
        num_heads = next(h for h in DEFAULT_HEAD_CHOICES if dim % h == 0)
    if (
        not isinstance(num_heads, int)
        or isinstance(num_heads, bool)
        or num_heads < 1
        or not isinstance(dim, int)
        or dim < 1
        or dim % num_heads
    ):
        raise ValueError(
            f"The 'num_heads' parameter of {owner} must be a positive divisor of {dim_name} ({dim}). "
            f"Got {num_heads!r} instead."
        )
    return num_heads


class MaskedMultiheadAttention(nn.Module):
    """Scaled dot-product multi-head attention with a boolean "may attend" mask.

    Args:
        embed_dim: Size ``H`` of queries, keys, values and output.
        num_heads: Number of heads; must divide ``embed_dim``.
        dropout: Dropout on the attention weights (training only).
        kdim: Feature size of keys and values when it differs from ``embed_dim``.
        zero_unattended: A query with no allowed key gets exactly zero output. Without it such a query gets
            the output projection of the zero vector (its bias); finite either way.

    Shapes:
        Glossary of :mod:`mmfuse.types` plus ``Tq`` / ``Tk`` query / key steps, ``H_k`` = ``kdim``,
        ``heads`` = ``num_heads`` and ``hd`` = ``H // heads`` (used in the shape comments).

    Example:
        >>> import torch
        >>> attn = MaskedMultiheadAttention(8, 2)
        >>> q, k = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
        >>> allowed = torch.zeros(2, 3, 5, dtype=torch.bool)  # nothing to attend to
        >>> out, w = attn(q, k, k, allowed)
        >>> out.shape, bool(out.isfinite().all()), float(w.detach().abs().sum())
        (torch.Size([2, 3, 8]), True, 0.0)
        >>> float(MaskedMultiheadAttention(8, 2, zero_unattended=True)(q, k, k, allowed)[0].detach().abs().sum())
        0.0
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        dropout: float = 0.0,
        kdim: int | None = None,
        zero_unattended: bool = False,
    ) -> None:
        super().__init__()
        num_heads = resolve_num_heads("MaskedMultiheadAttention", num_heads, embed_dim, dim_name="embed_dim")
        kdim = embed_dim if kdim is None else kdim
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.zero_unattended = bool(zero_unattended)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(kdim, embed_dim)
        self.v_proj = nn.Linear(kdim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.dropout = Dropout(dropout)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, allowed: Tensor) -> tuple[Tensor, Tensor]:
        """Attend from every query to the keys it is allowed to see.

        Args:
            query: ``[B, Tq, H]``.
            key: ``[B, Tk, H_k]``.
            value: ``[B, Tk, H_k]``.
            allowed: Bool ``[B, Tq, Tk]`` (or broadcastable, e.g. ``[B, 1, Tk]`` for a key-padding mask);
                True = the query may attend to the key.

        Returns:
            The attended values ``[B, Tq, H]`` (for a query with no allowed key: zero with
            ``zero_unattended``, else the output projection's bias) and the attention weights
            ``[B, heads, Tq, Tk]`` (averaging is left to the caller).
        """
        b, tq, _ = query.shape
        tk = key.shape[1]
        q = self.q_proj(query).view(b, tq, self.num_heads, self.head_dim).transpose(1, 2)  # [B, heads, Tq, hd]
        k = self.k_proj(key).view(b, tk, self.num_heads, self.head_dim).transpose(1, 2)  # [B, heads, Tk, hd]
        v = self.v_proj(value).view(b, tk, self.num_heads, self.head_dim).transpose(1, 2)  # [B, heads, Tk, hd]
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # [B, heads, Tq, Tk]
        weights = masked_softmax(scores, allowed.unsqueeze(1), dim=-1)  # [B, heads, Tq, Tk]
        attended = self.dropout(weights) @ v  # [B, heads, Tq, hd]
        attended = attended.transpose(1, 2).reshape(b, tq, self.embed_dim)  # [B, Tq, H]
        out = self.out_proj(attended)  # [B, Tq, H]
        if self.zero_unattended:
            out = zero_missing(out, allowed.any(dim=-1))  # [B, Tq, H]; allowed.any: [B, Tq or 1]
        return out, weights


class AttentionBlock(nn.Module):
    """Pre-LayerNorm transformer block: masked attention (to a source sequence, or to itself), then a feed-forward.

    ``x = x + dropout(attention(LN_q(x), LN_kv(source)))`` (``LN_q(x)`` for both without ``cross``) and
    ``x = x + dropout(FFN(LN_ff(x)))`` with a ``2 * dim`` wide GELU feed-forward. A query with no allowed key
    gets a zero attention update (:class:`MaskedMultiheadAttention` with ``zero_unattended``).

    Args:
        dim: Feature size ``H`` of ``x`` and of the source.
        num_heads: Attention heads; must divide ``dim``.
        cross: Attend to a separate source sequence, normalised by its own LayerNorm.
        dropout: Dropout on both residual branches and inside the feed-forward.
        attn_dropout: Dropout on the attention weights.

    Example:
        >>> import torch
        >>> block = AttentionBlock(8, 2, cross=True)
        >>> x, source = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
        >>> allowed = torch.ones(2, 1, 5, dtype=torch.bool)  # key-padding mask: every source step present
        >>> out, attended = block(x, allowed, source)
        >>> out.shape, attended.shape
        (torch.Size([2, 3, 8]), torch.Size([2, 3, 8]))
    """

    def __init__(
        self, dim: int, num_heads: int, *, cross: bool = False, dropout: float = 0.0, attn_dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim) if cross else None
        self.attn = MaskedMultiheadAttention(dim, num_heads, dropout=attn_dropout, zero_unattended=True)
        self.norm_ff = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), Dropout(dropout), nn.Linear(2 * dim, dim))
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor, allowed: Tensor, source: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Update ``x`` from the source (or itself).

        Args:
            x: ``[B, Tq, H]``.
            allowed: Bool ``[B, Tq, Tk]`` or ``[B, 1, Tk]``: which source steps each query may attend to.
            source: ``[B, Tk, H]`` for a ``cross`` block; ignored (``x`` attends to itself) otherwise.

        Returns:
            ``(x [B, Tq, H], attention update [B, Tq, H])``, the update before dropout (zero where the query
            had no allowed key).
        """
        q = self.norm_q(x)  # [B, Tq, H]
        kv = q if self.norm_kv is None or source is None else self.norm_kv(source)  # [B, Tk, H]
        attended, _ = self.attn(q, kv, kv, allowed)  # [B, Tq, H]
        x = x + self.dropout(attended)  # [B, Tq, H]
        return x + self.dropout(self.ffn(self.norm_ff(x))), attended
