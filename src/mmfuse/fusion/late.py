"""Late (decision-level) fusion: one prediction head per modality, averaged over the modalities present."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mmfuse.fusion._checks import check_probability
from mmfuse.fusion.base import Fusion
from mmfuse.fusion.registry import register_fusion
from mmfuse.layers.masking import masked_softmax
from mmfuse.layers.mlp import MLP, make_activation

__all__ = ["LateFusion"]


def _head_hidden_dims(owner: str, head_hidden: int | None) -> tuple[int, ...]:
    """Validate ``head_hidden`` and return the hidden sizes of one head MLP (empty: a linear head)."""
    if head_hidden is None:
        return ()
    if not isinstance(head_hidden, int) or isinstance(head_hidden, bool) or head_hidden < 1:
        raise ValueError(
            f"The 'head_hidden' parameter of {owner} must be a positive integer or None (a linear head). "
            f"Got {head_hidden!r} instead."
        )
    return (head_hidden,)


def _make_heads(
    owner: str,
    modality_dims: Mapping[str, int],
    out_features: int,
    head_hidden: int | None,
    activation: str,
    dropout: float,
) -> nn.ModuleList:
    """One head MLP per modality (canonical order): ``[B, T, D_m] -> [B, T, out_features]``."""
    hidden = _head_hidden_dims(owner, head_hidden)
    dropout = check_probability(owner, "dropout", dropout)
    make_activation(activation)  # unknown names fail here, listing the valid ones
    return nn.ModuleList(
        MLP(d, hidden, out_features, activation=activation, dropout=dropout) for d in modality_dims.values()
    )


@register_fusion("late")
class LateFusion(Fusion):
    """Decision-level fusion: every modality predicts on its own, the predictions are averaged.

    Each modality ``m`` has its own head (an MLP ``D_m -> head_hidden -> C``, with dropout after the hidden
    activation) that maps its features at every step to a prediction ``p_m`` of the ``C = out_dim`` model
    outputs (logits for classification, values for regression). The fused prediction at a step is
    ``sum_m w_m p_m`` over the modalities *present* at that step, with weights renormalised over them::

        w_m = present_m * exp(a_m) / sum_k present_k * exp(a_k)

    where ``a`` are learnable per-modality logits (initialised to 0: equal weights), or all 0 with
    ``learn_weights=False`` (a plain mean over the present modalities). The weights are never divided by a
    fixed count: with modality ``m`` missing, the others' weights grow so that they still sum to 1. A step
    where every modality is missing gets all-zero weights and the zero prediction (finite). Pointwise in time,
    hence causal.

    This is a *prediction-level* fusion (``output_level == "prediction"``): ``out_dim`` is the number of model
    outputs ``C`` and the model puts no head after it.

    Args:
        modality_dims: Modality name -> ``D_m``.
        out_dim: Number of model outputs ``C``.
        head_hidden: Hidden size of each modality's head; None for a linear head.
        activation: Activation inside the heads (a name from :data:`mmfuse.layers.ACTIVATIONS`).
        dropout: Dropout after the heads' hidden activation.
        learn_weights: Learn one weight logit per modality; False: equal weights over the present modalities.

    Raises:
        ValueError: for a bad ``head_hidden``, ``dropout`` or ``activation``.

    Shapes:
        ``inputs[m]`` ``[B, T, D_m]`` -> per-modality predictions ``[B, T, M, C]`` -> ``[B, T, C]``.
        ``forward_with_weights`` returns the weights actually used, ``[B, T, M]`` in canonical modality order:
        0 for a missing modality, rows summing to 1 where any modality is present and to 0 where none is.

    Example:
        >>> fusion = LateFusion({"audio": 3, "text": 5}, out_dim=2, learn_weights=False)
        >>> x = {"audio": torch.randn(1, 2, 3), "text": torch.randn(1, 2, 5)}
        >>> m = {"audio": torch.tensor([[True, False]]), "text": torch.tensor([[True, True]])}
        >>> with torch.no_grad():
        ...     out, w = fusion.forward_with_weights(x, m)
        >>> out.shape, w[0].tolist()
        (torch.Size([1, 2, 2]), [[0.5, 0.5], [0.0, 1.0]])
        >>> torch.allclose(out[0, 1], fusion.heads[1](x["text"][0, 1]))  # only "text": its own prediction
        True
    """

    output_level: ClassVar[str] = "prediction"
    contract_variants: ClassVar[tuple[dict[str, Any], ...]] = ({}, {"learn_weights": False})

    def __init__(
        self,
        modality_dims: Mapping[str, int],
        out_dim: int,
        *,
        head_hidden: int | None = 32,
        activation: str = "gelu",
        dropout: float = 0.0,
        learn_weights: bool = True,
    ) -> None:
        super().__init__(modality_dims, out_dim)
        if not isinstance(learn_weights, bool):
            raise ValueError(
                f"The 'learn_weights' parameter of LateFusion must be a bool. Got {learn_weights!r} instead."
            )
        self.heads = _make_heads("LateFusion", self.modality_dims, out_dim, head_hidden, activation, dropout)
        self.learn_weights = learn_weights
        self.weight_logits = nn.Parameter(torch.zeros(self.num_modalities)) if learn_weights else None

    def extra_repr(self) -> str:
        """Sizes and the weighting mode, shown in ``repr``."""
        return f"{super().extra_repr()}, learn_weights={self.learn_weights}"

    def modality_predictions(self, values: list[Tensor]) -> Tensor:
        """Run every modality's head.

        Args:
            values: ``M`` tensors ``[B, T, D_m]`` in canonical order (zeroed where missing).

        Returns:
            ``[B, T, M, C]`` (the head of a missing step sees zeros; its prediction gets zero weight).
        """
        return torch.stack([head(x) for head, x in zip(self.heads, values, strict=True)], dim=2)  # [B, T, M, C]

    def fuse(self, values: list[Tensor], masks: list[Tensor]) -> tuple[Tensor, Tensor | None]:
        """Predict per modality and average over the present ones (see the class docstring)."""
        preds = self.modality_predictions(values)  # [B, T, M, C]
        present = torch.stack(masks, dim=-1)  # [B, T, M]
        if self.weight_logits is None:
            scores = torch.zeros(present.shape, dtype=preds.dtype, device=preds.device)  # [B, T, M]
        else:
            scores = self.weight_logits.expand(present.shape)  # [M] -> [B, T, M]
        weights = masked_softmax(scores, present, dim=-1)  # [B, T, M], 0 where missing
        fused = (weights.unsqueeze(-1) * preds).sum(dim=2)  # [B, T, M, 1] * [B, T, M, C] -> [B, T, C]
        return fused, weights
