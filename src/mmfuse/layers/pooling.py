"""Masked pooling over time: ``[B, T, H]`` with a padding mask ``[B, T]`` -> ``[B, H]``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmfuse.layers.masking import masked_mean, masked_softmax

__all__ = ["POOLINGS", "AttentionPool", "LastStepPool", "MeanPool", "make_pooling"]


class MeanPool(nn.Module):
    """Mean over the real steps of each sequence.

    Example:
        >>> x = torch.tensor([[[2.0], [4.0], [9.0]]])
        >>> MeanPool()(x, torch.tensor([[True, True, False]])).tolist()
        [[3.0]]
    """

    def forward(self, x: Tensor, padding_mask: Tensor) -> Tensor:
        """Pool ``x`` ``[B, T, H]`` over the steps where ``padding_mask`` ``[B, T]`` is True -> ``[B, H]``."""
        return masked_mean(x, padding_mask, dim=1)


class AttentionPool(nn.Module):
    """Weighted sum over real steps with weights from a learned scoring layer (masked softmax over time).

    Args:
        dim: Feature size ``H``.

    Example:
        >>> pool = AttentionPool(4)
        >>> pool(torch.randn(2, 5, 4), torch.ones(2, 5, dtype=torch.bool)).shape
        torch.Size([2, 4])
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, x: Tensor, padding_mask: Tensor) -> Tensor:
        """Pool ``x`` ``[B, T, H]`` over the steps where ``padding_mask`` ``[B, T]`` is True -> ``[B, H]``."""
        weights = masked_softmax(self.score(x).squeeze(-1), padding_mask, dim=1)  # [B, T]
        safe = torch.where(padding_mask.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))  # [B, T, H]
        return (weights.unsqueeze(-1) * safe).sum(dim=1)  # [B, H]


class LastStepPool(nn.Module):
    """The features of the last real step of each sequence (padding must come after the real steps).

    A sequence with no real step pools to zeros. This is the causal choice: the output depends only on steps up
    to the end of the sequence, which is what a streaming model has seen.

    Example:
        >>> x = torch.tensor([[[1.0], [2.0], [7.0]]])
        >>> LastStepPool()(x, torch.tensor([[True, True, False]])).tolist()
        [[2.0]]
    """

    def forward(self, x: Tensor, padding_mask: Tensor) -> Tensor:
        """Pool ``x`` ``[B, T, H]`` to its last step where ``padding_mask`` ``[B, T]`` is True -> ``[B, H]``."""
        lengths = padding_mask.sum(dim=1)  # [B]
        index = (lengths - 1).clamp_min(0)  # [B]
        last = x[torch.arange(x.shape[0], device=x.device), index]  # [B, H]
        present = (lengths > 0).unsqueeze(-1)  # [B, 1]
        return torch.where(present, last, torch.zeros((), dtype=x.dtype, device=x.device))  # [B, H]


POOLINGS = ("attention", "last", "mean")
"""The pooling names :func:`make_pooling` accepts."""


def make_pooling(name: str, dim: int) -> nn.Module:
    """Return the pooling module called ``name`` ("mean", "attention" or "last") for features of size ``dim``.

    Example:
        >>> make_pooling("mean", 8)
        MeanPool()
    """
    if name == "mean":
        return MeanPool()
    if name == "attention":
        return AttentionPool(dim)
    if name == "last":
        return LastStepPool()
    raise ValueError(f"Unknown pooling {name!r}. Valid names: {', '.join(POOLINGS)}.")
