"""Gated fusion: each modality's own features decide, per feature, how much of it to let through."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmfuse.fusion.base import Fusion
from mmfuse.fusion.registry import register_fusion
from mmfuse.layers.dropout import Dropout

__all__ = ["GatedFusion"]


@register_fusion("gated")
class GatedFusion(Fusion):
    """A gated multimodal unit with one sigmoid gate vector per modality, renormalised over present modalities.

    For each modality ``m`` at each step: a candidate ``v_m = tanh(W_m x_m)`` and a gate
    ``g_m = sigmoid(U_m x_m)``, both ``[out_dim]``. Gates of missing modalities are set to exactly zero, the
    rest are divided by their sum over modalities (per feature), and the output is ``sum_m g_m * v_m``. A
    missing modality therefore contributes exactly nothing, and a step where every modality is missing gives
    the zero vector. Pointwise in time, hence causal.

    Args:
        modality_dims: Modality name -> ``D_m``.
        out_dim: Output size.
        dropout: Dropout on the output.
        eps: Floor of the gate sum, which keeps the division finite.

    Shapes:
        ``inputs[m]`` ``[B, T, D_m]`` -> ``[B, T, out_dim]``. ``forward_with_weights`` returns the normalised
        gates averaged over features, ``[B, T, M]`` in canonical modality order (rows sum to 1 where any
        modality is present, 0 where none is).

    Example:
        >>> fusion = GatedFusion({"audio": 3, "text": 5}, out_dim=8)
        >>> x = {"audio": torch.randn(1, 2, 3), "text": torch.randn(1, 2, 5)}
        >>> m = {"audio": torch.tensor([[True, False]]), "text": torch.tensor([[True, True]])}
        >>> out, w = fusion.forward_with_weights(x, m)
        >>> out.shape, w[0, 1].tolist()
        (torch.Size([1, 2, 8]), [0.0, 1.0])
    """

    def __init__(
        self, modality_dims: Mapping[str, int], out_dim: int, *, dropout: float = 0.0, eps: float = 1e-6
    ) -> None:
        super().__init__(modality_dims, out_dim)
        if not eps > 0:
            raise ValueError(f"The 'eps' parameter of GatedFusion must be positive. Got {eps!r} instead.")
        self.eps = float(eps)
        self.values = nn.ModuleList(nn.Linear(d, out_dim) for d in self.modality_dims.values())
        self.gates = nn.ModuleList(nn.Linear(d, out_dim) for d in self.modality_dims.values())
        self.dropout = Dropout(dropout)

    def fuse(self, values: list[Tensor], masks: list[Tensor]) -> tuple[Tensor, Tensor | None]:
        """Gate, renormalise over present modalities and sum (see the class docstring)."""
        branches = list(zip(self.values, self.gates, values, strict=True))
        cand = torch.stack([torch.tanh(v(x)) for v, _, x in branches], dim=2)  # [B, T, M, out_dim]
        gate = torch.stack([torch.sigmoid(g(x)) for _, g, x in branches], dim=2)  # [B, T, M, out_dim]
        present = torch.stack(masks, dim=-1).unsqueeze(-1)  # [B, T, M, 1]
        gate = torch.where(present, gate, torch.zeros((), dtype=gate.dtype, device=gate.device))  # [B, T, M, out_dim]
        gate = gate / gate.sum(dim=2, keepdim=True).clamp_min(self.eps)  # [B, T, M, out_dim]
        fused = (gate * cand).sum(dim=2)  # [B, T, out_dim]
        return self.dropout(fused), gate.mean(dim=-1)  # [B, T, out_dim], [B, T, M]
