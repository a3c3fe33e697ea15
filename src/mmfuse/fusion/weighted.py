"""Attention-weighted fusion: a masked softmax over the modalities present at each step."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmfuse.fusion.base import Fusion
from mmfuse.fusion.registry import register_fusion
from mmfuse.layers.dropout import Dropout
from mmfuse.layers.masking import masked_softmax

__all__ = ["WeightedFusion"]


@register_fusion("weighted")
class WeightedFusion(Fusion):
    """Project each modality to ``out_dim`` and average the projections with learned attention weights.

    Each projected modality ``v_m = W_m x_m`` gets a scalar score ``s_m = q . tanh(A v_m)`` from a scorer
    shared by all modalities; the weights are a softmax of the scores over the modalities present at that
    step (missing ones get exactly zero weight). The output is ``sum_m a_m v_m``; a step where every
    modality is missing gets all-zero weights and the zero vector, never NaN. Pointwise in time, hence causal.

    Args:
        modality_dims: Modality name -> ``D_m``.
        out_dim: Output size.
        attention_dim: Hidden size of the scorer (default ``out_dim``).
        dropout: Dropout on the output.

    Shapes:
        ``inputs[m]`` ``[B, T, D_m]`` -> ``[B, T, out_dim]``. ``forward_with_weights`` returns the attention
        weights ``[B, T, M]`` in canonical modality order.

    Example:
        >>> fusion = WeightedFusion({"audio": 3, "text": 5}, out_dim=8)
        >>> x = {"audio": torch.randn(1, 2, 3), "text": torch.randn(1, 2, 5)}
        >>> m = {"audio": torch.tensor([[True, False]]), "text": torch.tensor([[True, False]])}
        >>> with torch.no_grad():
        ...     out, w = fusion.forward_with_weights(x, m)
        >>> round(float(w[0, 0].sum()), 4), w[0, 1].tolist(), out[0, 1].abs().sum().item()
        (1.0, [0.0, 0.0], 0.0)
    """

    def __init__(
        self,
        modality_dims: Mapping[str, int],
        out_dim: int,
        *,
        attention_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(modality_dims, out_dim)
        attention_dim = out_dim if attention_dim is None else attention_dim
        if not isinstance(attention_dim, int) or attention_dim < 1:
            raise ValueError(
                f"The 'attention_dim' parameter of WeightedFusion must be a positive integer. Got {attention_dim!r}."
            )
        self.proj = nn.ModuleList(nn.Linear(d, out_dim) for d in self.modality_dims.values())
        self.score = nn.Sequential(nn.Linear(out_dim, attention_dim), nn.Tanh(), nn.Linear(attention_dim, 1))
        self.dropout = Dropout(dropout)

    def fuse(self, values: list[Tensor], masks: list[Tensor]) -> tuple[Tensor, Tensor | None]:
        """Score, softmax over present modalities and average (see the class docstring)."""
        proj = torch.stack([p(x) for p, x in zip(self.proj, values, strict=True)], dim=2)  # [B, T, M, out_dim]
        scores = self.score(proj).squeeze(-1)  # [B, T, M, 1] -> [B, T, M]
        weights = masked_softmax(scores, torch.stack(masks, dim=-1), dim=-1)  # [B, T, M]
        fused = (weights.unsqueeze(-1) * proj).sum(dim=2)  # [B, T, out_dim]
        return self.dropout(fused), weights
