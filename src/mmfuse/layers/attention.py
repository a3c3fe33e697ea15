"""Multi-head attention that takes boolean masks and never produces NaN.

``torch.nn.MultiheadAttention`` returns NaN for a query whose keys are all masked, which happens whenever a
modality is missing for a whole sequence. :class:`MaskedMultiheadAttention` gives such a query a zero
attention output instead.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from mmfuse.layers.masking import masked_softmax

__all__ = ["MaskedMultiheadAttention"]


class MaskedMultiheadAttention(nn.Module):
    """Scaled dot-product multi-head attention with a boolean "may attend" mask.

    Args:
        embed_dim: Size ``H`` of queries, keys, values and output.
        num_heads: Number of heads; must divide ``embed_dim``.
        dropout: Dropout on the attention weights (training only).
        kdim: Feature size of keys and values when it differs from ``embed_dim``.

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
    """

    def __init__(self, embed_dim: int, num_heads: int, *, dropout: float = 0.0, kdim: int | None = None) -> None:
        super().__init__()
        if embed_dim < 1 or num_heads < 1 or embed_dim % num_heads:
            raise ValueError(
                "The 'num_heads' parameter of MaskedMultiheadAttention must be a positive divisor of embed_dim "
                f"({embed_dim}). Got {num_heads!r} instead."
            )
        kdim = embed_dim if kdim is None else kdim
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(kdim, embed_dim)
        self.v_proj = nn.Linear(kdim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, allowed: Tensor) -> tuple[Tensor, Tensor]:
        """Attend from every query to the keys it is allowed to see.

        Args:
            query: ``[B, Tq, H]``.
            key: ``[B, Tk, H_k]``.
            value: ``[B, Tk, H_k]``.
            allowed: Bool ``[B, Tq, Tk]`` (or broadcastable, e.g. ``[B, 1, Tk]`` for a key-padding mask);
                True = the query may attend to the key.

        Returns:
            The attended values ``[B, Tq, H]`` (zero for a query with no allowed key, before the output
            projection) and the attention weights ``[B, heads, Tq, Tk]`` (averaging is left to the caller).
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
        return self.out_proj(attended), weights
