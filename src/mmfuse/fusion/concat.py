"""Early fusion: concatenate the modalities and their presence flags, then project."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmfuse.fusion.base import Fusion
from mmfuse.fusion.registry import register_fusion
from mmfuse.layers.dropout import Dropout
from mmfuse.layers.mlp import make_activation

__all__ = ["ConcatFusion"]


@register_fusion("concat")
class ConcatFusion(Fusion):
    """Concatenate every modality (zero where missing) with one presence flag per modality, then project.

    The flags let the projection tell "missing" apart from "present with zero features". The fusion is
    pointwise in time, hence causal.

    Args:
        modality_dims: Modality name -> ``D_m``.
        out_dim: Output size.
        activation: Activation after the projection (a name from :data:`mmfuse.layers.ACTIVATIONS`).
        dropout: Dropout on the output.

    Shapes:
        ``inputs[m]`` ``[B, T, D_m]`` -> concatenated ``[B, T, sum(D_m) + M]`` -> ``[B, T, out_dim]``.
        ``forward_with_weights`` returns None as weights (no modality weighting to inspect).

    Example:
        >>> fusion = ConcatFusion({"text": 5, "audio": 3}, out_dim=8)
        >>> x = {"audio": torch.randn(2, 4, 3), "text": torch.randn(2, 4, 5)}
        >>> m = {"audio": torch.ones(2, 4, dtype=torch.bool), "text": torch.zeros(2, 4, dtype=torch.bool)}
        >>> fusion(x, m).shape
        torch.Size([2, 4, 8])
    """

    def __init__(
        self, modality_dims: Mapping[str, int], out_dim: int, *, activation: str = "gelu", dropout: float = 0.0
    ) -> None:
        super().__init__(modality_dims, out_dim)
        in_dim = sum(self.modality_dims.values()) + self.num_modalities
        self.proj = nn.Linear(in_dim, out_dim)
        self.act = make_activation(activation)
        self.dropout = Dropout(dropout)

    def fuse(self, values: list[Tensor], masks: list[Tensor]) -> tuple[Tensor, Tensor | None]:
        """Concatenate features and presence flags and project them (see the class docstring)."""
        flags = [m.unsqueeze(-1).to(values[0].dtype) for m in masks]  # M x [B, T, 1]
        joint = torch.cat([*values, *flags], dim=-1)  # [B, T, sum(D_m) + M]
        return self.dropout(self.act(self.proj(joint))), None  # [B, T, out_dim]
