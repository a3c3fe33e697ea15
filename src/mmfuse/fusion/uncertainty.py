"""Uncertainty-weighted late fusion: per-modality predictions combined by inverse predicted variance."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from mmfuse.fusion.base import Fusion
from mmfuse.fusion.late import _make_heads
from mmfuse.fusion.registry import register_fusion
from mmfuse.layers.masking import masked_softmax

__all__ = ["UncertainPrediction", "UncertaintyLateFusion", "gaussian_nll_terms"]


@dataclass(frozen=True)
class UncertainPrediction:
    """Everything :meth:`UncertaintyLateFusion.predict_with_uncertainty` computes, for inspection.

    Attributes:
        prediction: The fused prediction ``[B, T, C]`` (0 where no modality is present).
        variance: The fused variance ``1 / sum_present(1 / var_m)``, ``[B, T, C]``; ``+inf`` where no modality
            is present (nothing is known there).
        modality_predictions: Each modality's own prediction ``[B, T, M, C]`` (canonical order; 0 where missing).
        log_variances: Each modality's clamped log-variance ``[B, T, M, C]`` (one value repeated over ``C`` when
            the variance is shared; 0 where missing).
        weights: The inverse-variance weights ``[B, T, M, C]`` (0 where missing; summing to 1 over ``M`` where
            any modality is present).
        present: Bool ``[B, T, M]``, True where the modality is present.
    """

    prediction: Tensor
    variance: Tensor
    modality_predictions: Tensor
    log_variances: Tensor
    weights: Tensor
    present: Tensor


def gaussian_nll_terms(predictions: Tensor, log_variances: Tensor, target: Tensor, present: Tensor) -> Tensor:
    """Per-modality Gaussian negative log-likelihood terms, zero where a modality is not counted.

    ``0.5 * (log_var + (target - prediction) ** 2 / exp(log_var))`` for every modality and output, the
    constant ``0.5 * log(2 pi)`` left out (as in ``torch.nn.functional.gaussian_nll_loss`` with
    ``full=False``). Adding their mean over the counted entries to the training loss makes each modality's
    variance a calibrated estimate of its own squared error on regression targets, instead of only a learned
    confidence weight (which is all the fused loss alone teaches it).

    Args:
        predictions: Per-modality predictions ``[..., M, C]`` (e.g. ``[B, T, M, C]``).
        log_variances: Log-variances, ``[..., M, C]`` or ``[..., M, 1]`` (shared over outputs).
        target: Targets ``[..., C]``.
        present: Bool ``[..., M]``: which terms count. Pass the modality masks combined with "the step has a
            label"; the target is never read where this is False (NaN there is harmless, also for gradients).

    Returns:
        ``[..., M, C]``, exactly 0 where ``present`` is False. Reduce it yourself, e.g. ``sum() / count``.

    Raises:
        ValueError: if the shapes do not line up.

    Example:
        >>> mu = torch.tensor([[1.0], [3.0]])  # M = 2, C = 1
        >>> lv = torch.zeros(2, 1)
        >>> gaussian_nll_terms(mu, lv, torch.tensor([2.0]), torch.tensor([True, False])).tolist()
        [[0.5], [0.0]]
    """
    if predictions.dim() < 2 or target.shape != predictions.shape[:-2] + predictions.shape[-1:]:
        raise ValueError(
            "The 'target' of gaussian_nll_terms must have the shape of 'predictions' [..., M, C] without M, i.e. "
            f"{list(predictions.shape[:-2] + predictions.shape[-1:])}. Got {list(target.shape)} instead."
        )
    if present.dtype != torch.bool or present.shape != predictions.shape[:-1]:
        raise ValueError(
            "The 'present' mask of gaussian_nll_terms must be bool with shape [..., M] = "
            f"{list(predictions.shape[:-1])}. Got {present.dtype} {list(present.shape)} instead."
        )
    if log_variances.shape not in (predictions.shape, (*predictions.shape[:-1], 1)):
        raise ValueError(
            "The 'log_variances' of gaussian_nll_terms must have shape [..., M, C] or [..., M, 1] = "
            f"{list(predictions.shape)} or {[*predictions.shape[:-1], 1]}. Got {list(log_variances.shape)}."
        )
    counted = present.unsqueeze(-1)  # [..., M, 1]
    zero = torch.zeros((), dtype=predictions.dtype, device=predictions.device)
    # Where a term is not counted, compare the prediction with itself: no NaN target reaches values or gradients.
    y = torch.where(counted, target.unsqueeze(-2), predictions.detach())  # [..., M, C]
    lv = torch.where(counted, log_variances, zero)  # [..., M, C or 1]
    terms = 0.5 * (lv + (y - predictions).square() * torch.exp(-lv))  # [..., M, C]
    return torch.where(counted, terms, zero)


def _soft_clamp(x: Tensor, low: float, high: float) -> Tensor:
    """Squash ``x`` smoothly into ``(low, high)``: about the identity near the centre, saturating at the ends."""
    centre, half = 0.5 * (low + high), 0.5 * (high - low)
    return centre + half * torch.tanh((x - centre) / half)


@register_fusion("uncertainty_late")
class UncertaintyLateFusion(Fusion):
    """Late fusion weighted by each modality's predicted uncertainty (inverse-variance weighting).

    Each modality ``m`` has its own head (an MLP ``D_m -> head_hidden -> C + K``) that predicts, at every step,
    the ``C = out_dim`` model outputs ``mu_m`` and ``K`` log-variances ``s_m``: ``K = C`` (one per output) or
    ``K = 1`` (one shared by all outputs, ``shared_variance=True``). The raw log-variance is clamped smoothly
    into ``(min_log_var, max_log_var)`` with a scaled ``tanh`` (about the identity near the middle of the range;
    unlike a hard clamp it keeps passing gradient near the ends of the range). The modalities present at a step
    are combined with weights proportional to their precision ``1 / var_m = exp(-s_m)``, normalised over the
    *present* ones only::

        w_m = (1 / var_m) / sum_present(1 / var_k),    fused = sum_present w_m mu_m,
        fused variance = 1 / sum_present(1 / var_k)

    which is the precision-weighted combination of independent Gaussian estimates. A missing modality gets
    weight 0; a step where every modality is missing gives the zero prediction (finite). With per-output
    variances the weights differ per output. For classification heads, ``mu_m`` are logits and ``var_m`` reads
    as the uncertainty of the logits. Pointwise in time, hence causal.

    What the variances mean depends on the loss. Trained only through the loss of the fused prediction, nothing
    ties ``var_m`` to the modality's actual error: the heads learn relative *confidence weights* (lower
    variance = more say), whose absolute scale is arbitrary, and the fused variance is not a calibrated error
    estimate. For regression, add the per-modality Gaussian NLL (:func:`gaussian_nll_terms` on
    :meth:`predict_with_uncertainty`'s output) to the loss to make each ``var_m`` estimate that modality's
    squared error.

    This is a *prediction-level* fusion (``output_level == "prediction"``): ``out_dim`` is the number of model
    outputs ``C`` and the model puts no head after it.

    Args:
        modality_dims: Modality name -> ``D_m``.
        out_dim: Number of model outputs ``C``.
        head_hidden: Hidden size of each modality's head; None for a linear head.
        activation: Activation inside the heads (a name from :data:`mmfuse.layers.ACTIVATIONS`).
        dropout: Dropout after the heads' hidden activation.
        shared_variance: One log-variance per modality and step shared by all outputs (True), or one per output.
        min_log_var: Lower end of the log-variance range.
        max_log_var: Upper end of the log-variance range. The default range ``(-6, 6)`` lets one modality
            outweigh another by at most ``e^12`` (about 1.6e5).

    Raises:
        ValueError: for a bad ``head_hidden``, ``dropout``, ``activation`` or log-variance range.

    Shapes:
        ``inputs[m]`` ``[B, T, D_m]`` -> predictions ``[B, T, M, C]`` and log-variances ``[B, T, M, K]`` ->
        ``[B, T, C]``. ``forward_with_weights`` returns the weights ``[B, T, M]`` in canonical modality order,
        averaged over the ``C`` outputs when the variance is per output (0 for a missing modality; rows sum to 1
        where any modality is present, to 0 where none is); :meth:`predict_with_uncertainty` gives them per
        output.

    Example:
        >>> fusion = UncertaintyLateFusion({"audio": 3, "text": 5}, out_dim=2)
        >>> x = {"audio": torch.randn(1, 4, 3), "text": torch.randn(1, 4, 5)}
        >>> m = {"audio": torch.tensor([[True, True, False, False]]),
        ...      "text": torch.tensor([[True, False, True, False]])}
        >>> with torch.no_grad():
        ...     res = fusion.predict_with_uncertainty(x, m)
        >>> res.prediction.shape, res.modality_predictions.shape, res.weights.shape
        (torch.Size([1, 4, 2]), torch.Size([1, 4, 2, 2]), torch.Size([1, 4, 2, 2]))
        >>> res.weights[0, 1, 0].tolist(), res.variance[0, 3].tolist()  # only "audio", then nothing present
        ([1.0, 1.0], [inf, inf])
        >>> torch.allclose(res.variance[0, 0], 1 / (1 / res.log_variances[0, 0].exp()).sum(0))
        True
    """

    output_level: ClassVar[str] = "prediction"
    contract_variants: ClassVar[tuple[dict[str, Any], ...]] = ({}, {"shared_variance": True})

    def __init__(
        self,
        modality_dims: Mapping[str, int],
        out_dim: int,
        *,
        head_hidden: int | None = 32,
        activation: str = "gelu",
        dropout: float = 0.0,
        shared_variance: bool = False,
        min_log_var: float = -6.0,
        max_log_var: float = 6.0,
    ) -> None:
        super().__init__(modality_dims, out_dim)
        owner = "UncertaintyLateFusion"
        if not isinstance(shared_variance, bool):
            raise ValueError(
                f"The 'shared_variance' parameter of {owner} must be a bool. Got {shared_variance!r} instead."
            )
        for name, value in (("min_log_var", min_log_var), ("max_log_var", max_log_var)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"The {name!r} parameter of {owner} must be a finite number. Got {value!r} instead.")
        if not min_log_var < max_log_var:
            raise ValueError(
                f"The 'min_log_var' parameter of {owner} must be smaller than 'max_log_var'. "
                f"Got min_log_var={min_log_var!r} and max_log_var={max_log_var!r} instead."
            )
        self.shared_variance = shared_variance
        self.num_log_vars = 1 if shared_variance else out_dim
        self.min_log_var = float(min_log_var)
        self.max_log_var = float(max_log_var)
        self.heads = _make_heads(
            owner, self.modality_dims, out_dim + self.num_log_vars, head_hidden, activation, dropout
        )

    def extra_repr(self) -> str:
        """Sizes, the variance mode and range, shown in ``repr``."""
        return (
            f"{super().extra_repr()}, shared_variance={self.shared_variance}, "
            f"log_var_range=({self.min_log_var}, {self.max_log_var})"
        )

    def _predict(self, values: list[Tensor], masks: list[Tensor]) -> UncertainPrediction:
        """Heads, clamped log-variances, inverse-variance weights and their combination."""
        out = torch.stack([head(x) for head, x in zip(self.heads, values, strict=True)], dim=2)  # [B, T, M, C + K]
        preds = out[..., : self.out_dim]  # [B, T, M, C]
        log_var = _soft_clamp(out[..., self.out_dim :], self.min_log_var, self.max_log_var)  # [B, T, M, K]
        present = torch.stack(masks, dim=-1)  # [B, T, M]
        counted = present.unsqueeze(-1)  # [B, T, M, 1]
        # softmax(-s) over the present modalities is exactly (1 / var_m) / sum_present(1 / var_k), computed stably.
        weights = masked_softmax(-log_var, counted, dim=2)  # [B, T, M, K]
        fused = (weights * preds).sum(dim=2)  # [B, T, M, C] -> [B, T, C] (K = 1 broadcasts)
        zero = torch.zeros((), dtype=preds.dtype, device=preds.device)
        precision = torch.where(counted, torch.exp(-log_var), zero).sum(dim=2)  # [B, T, K]
        any_present = counted.any(dim=2)  # [B, T, 1]
        tiny = torch.finfo(preds.dtype).tiny
        inf = torch.full((), math.inf, dtype=preds.dtype, device=preds.device)
        variance = torch.where(any_present, 1.0 / precision.clamp_min(tiny), inf)  # [B, T, K]; no NaN gradients
        shape = preds.shape  # [B, T, M, C]
        return UncertainPrediction(
            prediction=fused,
            variance=variance.expand(*shape[:2], self.out_dim),  # [B, T, C]
            modality_predictions=torch.where(counted, preds, zero),
            log_variances=torch.where(counted, log_var, zero).expand(shape),  # [B, T, M, C]
            weights=weights.expand(shape),  # [B, T, M, C]
            present=present,
        )

    def fuse(self, values: list[Tensor], masks: list[Tensor]) -> tuple[Tensor, Tensor | None]:
        """Combine the heads' predictions by inverse variance (see the class docstring)."""
        res = self._predict(values, masks)
        weights = res.weights[..., 0] if self.shared_variance else res.weights.mean(dim=-1)  # [B, T, M]
        return res.prediction, weights  # [B, T, C], [B, T, M]

    def predict_with_uncertainty(
        self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor]
    ) -> UncertainPrediction:
        """Fuse and return the fused variance, the per-modality predictions, log-variances and weights.

        Args:
            inputs: Modality name -> ``[B, T, D_m]``.
            masks: Modality name -> bool ``[B, T]``, True where the modality is present.

        Returns:
            An :class:`UncertainPrediction` (shapes documented there; ``prediction`` equals ``forward``'s output).

        Raises:
            ValueError: on malformed inputs (see :meth:`Fusion.prepare`).
        """
        values, present = self.prepare(inputs, masks)
        return self._predict(values, present)
