"""Mask-aware primitives: zeroing missing steps, masked softmax and masked means.

Every function here is NaN-safe in the sense of rule 5: values at masked positions are replaced with
``torch.where`` (never multiplied by the mask), so a NaN written into a missing step cannot reach the result
or its gradient.

Where a mask is True everywhere (the common case: every modality present at every step) there is nothing to
replace, and :func:`zero_missing` and :func:`masked_softmax` skip the ``where`` passes, which give the same
values and gradients bit for bit. :func:`all_present` decides it, only for concrete CPU tensors outside
tracing and compilation, so an exported or compiled graph always keeps its masking and a GPU never waits on a
host-side check.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["all_present", "eager_cpu", "masked_mean", "masked_softmax", "zero_missing"]


def eager_cpu(t: Tensor) -> bool:
    """True for a concrete CPU tensor in eager mode: the one condition for this package's CPU-only shortcuts.

    False on any other device, under ``torch.jit`` tracing, ``torch.compile`` or ``torch.export``, and for tensor
    subclasses (fake tensors), so that a shortcut that looks at values (:func:`all_present`) or changes how a
    result is computed (:func:`mmfuse.layers.dropout.dropout`) is never recorded into a graph.

    Example:
        >>> eager_cpu(torch.zeros(2)), eager_cpu(torch.zeros(2, device="meta"))
        (True, False)
    """
    return (
        type(t) is Tensor
        and t.device.type == "cpu"
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
        and not torch.compiler.is_exporting()
    )


def all_present(mask: Tensor) -> bool:
    """True when ``mask`` is a concrete CPU tensor that is True everywhere, so masking it would change nothing.

    False (take the masked path) for a mask with any False, on any other device, under ``torch.jit`` tracing,
    ``torch.compile`` or ``torch.export``, and for tensor subclasses (fake tensors), so that no graph is ever
    specialised to "nothing is missing".

    Example:
        >>> all_present(torch.ones(2, 3, dtype=torch.bool)), all_present(torch.tensor([True, False]))
        (True, False)
    """
    return eager_cpu(mask) and bool(mask.all())


def zero_missing(x: Tensor, mask: Tensor) -> Tensor:
    """Replace the steps where ``mask`` is False with zeros.

    Args:
        x: Values ``[..., D]`` (e.g. ``[B, T, D_m]``).
        mask: Bool ``[...]`` matching the leading dimensions of ``x`` (e.g. ``[B, T]``); True = present.

    Returns:
        ``x`` with every masked step set to exactly zero; gradients to masked steps are exactly zero too.

    Example:
        >>> x = torch.tensor([[[1.0], [float("nan")]]])
        >>> zero_missing(x, torch.tensor([[True, False]])).tolist()
        [[[1.0], [0.0]]]
    """
    if all_present(mask):
        return x
    return torch.where(mask.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_softmax(scores: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax over the positions where ``mask`` is True; zero weight everywhere else.

    A slice in which every position is masked gets all-zero weights (not NaN), so a weighted sum over it is
    the zero vector.

    Args:
        scores: Unnormalised scores of any shape.
        mask: Bool, broadcastable to ``scores``; True = may receive weight.
        dim: The dimension to normalise over.

    Returns:
        Weights with the shape of ``scores``, summing to 1 over ``dim`` where any position is present and to
        0 where none is.

    Example:
        >>> w = masked_softmax(torch.zeros(2, 3), torch.tensor([[True, True, False], [False, False, False]]))
        >>> w.tolist()
        [[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]
    """
    if all_present(mask):
        return torch.softmax(scores, dim=dim)
    mask = mask.expand_as(scores)
    fill = torch.finfo(scores.dtype).min
    safe = torch.where(mask, scores, torch.full((), fill, dtype=scores.dtype, device=scores.device))
    weights = torch.softmax(safe, dim=dim)
    return torch.where(mask, weights, torch.zeros((), dtype=weights.dtype, device=weights.device))


def masked_mean(x: Tensor, mask: Tensor, dim: int = 1) -> Tensor:
    """Mean of ``x`` over ``dim`` counting only present positions (zero when none is present).

    Args:
        x: Values, e.g. ``[B, T, H]``.
        mask: Bool over the leading dimensions of ``x``, e.g. ``[B, T]``.
        dim: The dimension to average over (of ``x``; must be one of the mask's dimensions).

    Returns:
        ``x`` reduced over ``dim``, e.g. ``[B, H]``.

    Example:
        >>> x = torch.tensor([[[1.0], [3.0], [100.0]]])
        >>> masked_mean(x, torch.tensor([[True, True, False]])).tolist()
        [[2.0]]
    """
    m = mask.unsqueeze(-1)  # [..., 1], e.g. [B, T, 1]
    total = torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(dim=dim)
    count = m.to(x.dtype).sum(dim=dim).clamp_min(1.0)
    return total / count
