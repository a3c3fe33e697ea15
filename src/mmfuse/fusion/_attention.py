"""The base of the attention fusions (atcm, cross_attention, graph, mult): their shared settings in one place."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mmfuse.fusion._checks import check_int, check_probability
from mmfuse.fusion.base import Fusion
from mmfuse.layers.attention import resolve_num_heads
from mmfuse.layers.dropout import Dropout

__all__ = ["AttentionFusion"]


class AttentionFusion(Fusion):
    """A fusion built from attention over tokens of width ``hidden``, with a causal switch.

    Validates and stores what every attention fusion takes: ``hidden`` (default ``out_dim``), ``num_heads``
    (:func:`~mmfuse.layers.attention.resolve_num_heads`), ``causal`` (a bool; the instance's ``is_causal``)
    and ``dropout`` (in ``[0, 1)``, as the module ``self.dropout``), and declares the causal switch as a
    contract variant. With ``modality_tokens`` it also creates the token embedding :meth:`embed` applies:
    one ``Linear(D_m, hidden)`` per modality (``in_proj``) and a learned embedding per modality
    (``modality_embedding``), in that order, before anything the subclass creates.

    Args:
        modality_dims: Modality name -> ``D_m``.
        out_dim: Output size.
        hidden: Token width; None means ``out_dim``.
        num_heads: Attention heads; must divide ``hidden``. None picks the largest of 4, 2, 1 that does.
        causal: The subclass attends only to steps ``<= t``.
        dropout: Dropout rate of ``self.dropout``.
        modality_tokens: Create ``in_proj`` and ``modality_embedding`` (a subclass that projects its inputs
            otherwise overrides :meth:`embed`).

    Raises:
        ValueError: for a non-positive ``hidden``, a ``num_heads`` that does not divide it, a non-bool
            ``causal`` or a ``dropout`` outside ``[0, 1)``, naming the subclass.
    """

    is_causal = False
    contract_variants: ClassVar[tuple[dict[str, Any], ...]] = ({}, {"causal": True})

    def __init__(
        self,
        modality_dims: Mapping[str, int],
        out_dim: int,
        *,
        hidden: int | None,
        num_heads: int | None,
        causal: bool,
        dropout: float,
        modality_tokens: bool = True,
    ) -> None:
        super().__init__(modality_dims, out_dim)
        owner = type(self).__name__
        self.hidden = check_int(owner, "hidden", self.out_dim if hidden is None else hidden, 1)
        self.num_heads = resolve_num_heads(owner, num_heads, self.hidden)
        if not isinstance(causal, bool):
            raise ValueError(f"The 'causal' parameter of {owner} must be a bool. Got {causal!r} instead.")
        self.is_causal = causal
        self.dropout = Dropout(check_probability(owner, "dropout", dropout))
        if modality_tokens:
            self.in_proj = nn.ModuleList(nn.Linear(d, self.hidden) for d in self.modality_dims.values())
            self.modality_embedding = nn.Parameter(torch.randn(self.num_modalities, self.hidden) * 0.02)

    def extra_repr(self) -> str:
        """Sizes, heads and causality, shown in ``repr``."""
        return f"{super().extra_repr()}, hidden={self.hidden}, num_heads={self.num_heads}, causal={self.is_causal}"

    def embed(self, values: list[Tensor]) -> list[Tensor]:
        """Project every modality to ``hidden`` and add its modality embedding.

        Args:
            values: ``M`` tensors ``[B, T, D_m]`` in canonical order.

        Returns:
            ``M`` tensors ``[B, T, hidden]``.
        """
        return [
            proj(x) + self.modality_embedding[i] for i, (proj, x) in enumerate(zip(self.in_proj, values, strict=True))
        ]
