"""Cross-modal attention: every modality's sequence attends over the other modalities' sequences in time."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmfuse.fusion._attention import AttentionFusion
from mmfuse.fusion.registry import register_fusion
from mmfuse.layers.attention import MaskedMultiheadAttention
from mmfuse.layers.masking import masked_mean

__all__ = ["CrossAttentionFusion"]


@register_fusion("cross_attention")
class CrossAttentionFusion(AttentionFusion):
    """Bi-directional cross-modal attention with residual + LayerNorm, pooled over modalities.

    Each modality is projected to ``hidden`` and tagged with a learned modality embedding. Modality ``m``
    then queries, at every step, the keys of all *other* modalities at all steps (or at steps ``<= t`` when
    ``causal``), with one attention module per query modality. Keys come only from present steps (the
    availability masks are the key-padding masks); a query with nothing to attend to receives the output
    projection of the zero vector (its bias) as attention output, never NaN. ``z_m = LayerNorm(h_m +
    attention_m)``; the ``z_m`` of the modalities present at a step are averaged and projected to ``out_dim``.
    A step where every modality is missing gives the projection of the zero vector (finite).

    Args:
        modality_dims: Modality name -> ``D_m``.
        out_dim: Output size.
        hidden: Attention width (default ``out_dim``).
        num_heads: Attention heads; must divide ``hidden``. Default: the largest of 4, 2, 1 that does.
        causal: Attend only to steps ``<= t``; makes this instance causal (``is_causal`` is True).
        dropout: Dropout on attention weights and the attention output.

    Raises:
        ValueError: for a non-positive ``hidden``, a ``num_heads`` that does not divide it, a dropout outside
            ``[0, 1)`` or a non-bool ``causal``.

    Shapes:
        ``inputs[m]`` ``[B, T, D_m]`` -> keys ``[B, M*T, hidden]`` -> ``[B, T, out_dim]``.
        ``forward_with_weights`` returns the attention mass each query modality puts on each key modality,
        ``[B, T, M_query, M_key]`` (canonical order; rows sum to 1 where the query has something to attend to,
        and the diagonal is 0).

    Example:
        >>> fusion = CrossAttentionFusion({"audio": 3, "text": 5}, out_dim=8, causal=True)
        >>> fusion.is_causal
        True
        >>> x = {"audio": torch.randn(2, 4, 3), "text": torch.randn(2, 4, 5)}
        >>> m = {"audio": torch.zeros(2, 4, dtype=torch.bool), "text": torch.zeros(2, 4, dtype=torch.bool)}
        >>> bool(fusion(x, m).isfinite().all())
        True
    """

    def __init__(
        self,
        modality_dims: Mapping[str, int],
        out_dim: int,
        *,
        hidden: int | None = None,
        num_heads: int | None = None,
        causal: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(modality_dims, out_dim, hidden=hidden, num_heads=num_heads, causal=causal, dropout=dropout)
        self.attn = nn.ModuleList(
            MaskedMultiheadAttention(self.hidden, self.num_heads, dropout=dropout) for _ in range(self.num_modalities)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(self.hidden) for _ in range(self.num_modalities))
        self.out_proj = nn.Linear(self.hidden, out_dim)

    def fuse(self, values: list[Tensor], masks: list[Tensor]) -> tuple[Tensor, Tensor | None]:
        """Cross-attend, add + normalise, pool over present modalities (see the class docstring)."""
        b, t = masks[0].shape
        n = self.num_modalities
        device = masks[0].device
        hs = self.embed(values)  # M x [B, T, hidden]
        keys = torch.cat(hs, dim=1)  # [B, M*T, hidden]
        key_present = torch.cat(masks, dim=1)  # [B, M*T]
        key_modality = torch.arange(n, device=device).unsqueeze(1).expand(n, t).reshape(-1)  # [M*T]
        allowed_base = key_present.unsqueeze(1)  # [B, 1, M*T]
        if self.is_causal:
            steps = torch.arange(t, device=device)
            key_step = steps.unsqueeze(0).expand(n, t).reshape(-1)  # [M*T]
            allowed_base = allowed_base & (key_step.unsqueeze(0) <= steps.unsqueeze(1)).unsqueeze(0)  # [B, T, M*T]
        fused_parts = []
        mass_parts = []
        for i in range(n):
            allowed = allowed_base & (key_modality != i).view(1, 1, -1)  # [B, T or 1, M*T]
            attended, w = self.attn[i](hs[i], keys, keys, allowed)  # [B, T, hidden], [B, heads, T, M*T]
            fused_parts.append(self.norms[i](hs[i] + self.dropout(attended)))  # [B, T, hidden]
            mass_parts.append(w.mean(dim=1).view(b, t, n, t).sum(dim=-1))  # [B, T, M_key]
        z = torch.stack(fused_parts, dim=2)  # [B, T, M, hidden]
        pooled = masked_mean(z, torch.stack(masks, dim=-1), dim=2)  # [B, T, hidden]
        return self.out_proj(pooled), torch.stack(mass_parts, dim=2)  # [B, T, out_dim], [B, T, M, M]
