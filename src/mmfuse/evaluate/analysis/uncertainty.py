"""Uncertainty: predictive entropy / mutual information / variance from repeated stochastic passes, risk-coverage.

The passes come from MC dropout (dropout layers active at test time) or test-time augmentation (feature noise,
time shifts); :func:`enable_mc_dropout` switches only the dropout layers on, so nothing else about the model
(modality dropout, batch statistics) changes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from torch import nn

__all__ = [
    "classification_uncertainty",
    "enable_mc_dropout",
    "regression_uncertainty",
    "risk_coverage",
]


def classification_uncertainty(pass_probs: Any) -> dict[str, np.ndarray]:
    """Uncertainty of ``P`` stochastic passes over ``N`` rows and ``C`` classes.

    Args:
        pass_probs: ``[P, N, C]`` probabilities of each pass.

    Returns:
        ``mean_probs [N, C]``, ``entropy [N]`` (of the mean, nats: total uncertainty), ``expected_entropy [N]``
        (aleatoric part), ``mutual_information [N]`` (their difference: the epistemic part) and ``variance [N]``
        (variance over passes of the predicted class's probability).

    Example:
        >>> u = classification_uncertainty(np.array([[[1.0, 0.0]], [[0.0, 1.0]]]))
        >>> round(float(u["entropy"][0]), 4), round(float(u["mutual_information"][0]), 4)
        (0.6931, 0.6931)
    """
    p = np.asarray(pass_probs, dtype=np.float64)
    if p.ndim != 3 or p.shape[0] < 1:
        raise ValueError(
            f"The 'pass_probs' parameter of classification_uncertainty must be [P, N, C] with P >= 1. "
            f"Got {list(p.shape)}."
        )
    mean = p.mean(axis=0)  # [N, C]
    logp = np.log(np.clip(mean, 1e-12, 1.0))
    entropy = -(mean * logp).sum(axis=-1)  # [N]
    expected = -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=-1).mean(axis=0)  # [N]
    top = mean.argmax(axis=-1)  # [N]
    var = p[:, np.arange(p.shape[1]), top].var(axis=0)  # [N]
    return {
        "mean_probs": mean,
        "entropy": entropy,
        "expected_entropy": expected,
        "mutual_information": np.maximum(entropy - expected, 0.0),
        "variance": var,
    }


def regression_uncertainty(pass_preds: Any) -> dict[str, np.ndarray]:
    """Mean and variance over ``P`` passes of regression outputs ``[P, N]`` or ``[P, N, K]`` (variance summed over K).

    Example:
        >>> u = regression_uncertainty(np.array([[1.0, 2.0], [3.0, 2.0]]))
        >>> u["mean"].tolist(), u["variance"].tolist()
        ([2.0, 2.0], [1.0, 0.0])
    """
    p = np.asarray(pass_preds, dtype=np.float64)
    if p.ndim not in (2, 3) or p.shape[0] < 1:
        raise ValueError(
            f"The 'pass_preds' parameter of regression_uncertainty must be [P, N] or [P, N, K]. Got {list(p.shape)}."
        )
    var = p.var(axis=0)
    return {"mean": p.mean(axis=0), "variance": var if var.ndim == 1 else var.sum(axis=-1)}


def risk_coverage(confidence: Any, loss: Any) -> dict[str, Any]:
    """Risk-coverage curve: keep the most confident rows first; risk = mean loss of the kept rows.

    Args:
        confidence: ``[N]``, higher = more confident (e.g. minus the predictive entropy).
        loss: ``[N]`` per-row loss: 0/1 error for classification, absolute error for regression.

    Returns:
        ``{"coverage": [N], "risk": [N], "aurc": float}``: coverage ``k / N`` and the risk of the ``k`` most
        confident rows for ``k = 1..N``; ``aurc`` is the mean risk over coverages (area under the curve).

    Example:
        >>> rc = risk_coverage([0.9, 0.8, 0.1, 0.2], [0, 0, 1, 0])   # the one error is the least confident
        >>> rc["risk"].tolist()
        [0.0, 0.0, 0.0, 0.25]
    """
    c = np.asarray(confidence, dtype=np.float64)
    err = np.asarray(loss, dtype=np.float64)
    if c.ndim != 1 or c.shape != err.shape:
        raise ValueError(
            f"The 'confidence' and 'loss' parameters of risk_coverage must be 1-D of equal length. "
            f"Got {list(c.shape)} and {list(err.shape)}."
        )
    if c.size == 0:
        return {"coverage": np.zeros(0), "risk": np.zeros(0), "aurc": math.nan}
    order = np.argsort(-c, kind="stable")
    kept = np.arange(1, c.size + 1)
    risk = np.cumsum(err[order]) / kept
    return {"coverage": kept / c.size, "risk": risk, "aurc": float(risk.mean())}


@contextmanager
def enable_mc_dropout(model: nn.Module) -> Iterator[int]:
    """Put only the dropout layers of ``model`` in training mode for the duration of the block.

    Yields:
        The number of dropout layers with ``p > 0`` (0 means MC dropout gives identical passes).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).eval()
        >>> with enable_mc_dropout(net) as n:
        ...     n, net[1].training, net.training
        (1, True, False)
        >>> net[1].training
        False
    """
    dropouts = [
        m
        for m in model.modules()
        if isinstance(m, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)) and float(m.p) > 0
    ]
    before = [m.training for m in dropouts]
    try:
        for m in dropouts:
            m.train()
        yield len(dropouts)
    finally:
        for m, was in zip(dropouts, before, strict=True):
            m.train(was)
