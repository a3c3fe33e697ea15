"""Stabilising live predictions: an exponential moving average with uncertainty gating, and its trade-offs.

Functional core, stateful shell: :func:`stabilize` processes a whole recording (vectorised), :class:`Stabilizer`
does the same one step at a time for a live stream, and both give the same numbers.

Rule, per step ``t`` with raw prediction ``p_t`` (class probabilities or regression outputs) and uncertainty
``u_t``:

* if ``u_t > threshold`` the step is *held*: the output is the last stable output and the average is not
  updated (before the first confident step the output is the raw prediction, marked held);
* otherwise ``s_t = alpha * p_t + (1 - alpha) * s_prev`` (the first confident step starts the average at
  ``p_t``).

For classification the default uncertainty is the normalised entropy of ``p_t`` (0 = certain, 1 = uniform).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.signal import lfilter

__all__ = [
    "StabilizedOutput",
    "Stabilizer",
    "normalized_entropy",
    "stability_metrics",
    "stabilize",
    "threshold_sweep",
]


def _check_alpha_threshold(alpha: Any, threshold: Any, owner: str) -> tuple[float, float]:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha <= 1.0:
        raise ValueError(f"The 'alpha' parameter of {owner} must be a number in (0, 1]. Got {alpha!r} instead.")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or math.isnan(threshold):
        raise ValueError(f"The 'threshold' parameter of {owner} must be a number. Got {threshold!r} instead.")
    return float(alpha), float(threshold)


def normalized_entropy(probs: Any) -> np.ndarray:
    """Entropy of each row of ``probs`` ``[..., C]`` divided by ``log C``: 0 for one-hot, 1 for uniform.

    Example:
        >>> normalized_entropy([[1.0, 0.0], [0.5, 0.5]]).round(6).tolist()
        [0.0, 1.0]
    """
    p = np.asarray(probs, dtype=np.float64)
    c = p.shape[-1]
    if c < 2:
        return np.zeros(p.shape[:-1])
    safe = np.where(p > 0, p, 1.0)
    return 0.0 - (p * np.log(safe)).sum(axis=-1) / math.log(c)  # 0.0 - x: no negative zero


@dataclass
class StabilizedOutput:
    """Stabilised outputs of a recording.

    Attributes:
        stable: ``[T, C]`` the stabilised outputs.
        held: ``[T]`` bool, True where the output was held (uncertainty above the threshold).
        uncertainty: ``[T]`` the uncertainty used.
    """

    stable: np.ndarray
    held: np.ndarray
    uncertainty: np.ndarray


def stabilize(
    raw: Any, uncertainty: Any = None, *, alpha: float = 0.3, threshold: float = math.inf
) -> StabilizedOutput:
    """Stabilise a whole recording (vectorised; the same numbers as :class:`Stabilizer` step by step).

    Args:
        raw: ``[T, C]`` (or ``[T]``) raw predictions, e.g. class probabilities.
        uncertainty: ``[T]``; default the normalised entropy of ``raw`` (for probabilities).
        alpha: Weight of the newest step in the average, in ``(0, 1]`` (1 = no smoothing).
        threshold: Steps with uncertainty above it are held (``inf`` = never hold).

    Returns:
        :class:`StabilizedOutput`.

    Example:
        >>> out = stabilize([[1.0], [0.0], [0.0]], uncertainty=[0.1, 0.9, 0.1], alpha=0.5, threshold=0.5)
        >>> out.stable[:, 0].tolist(), out.held.tolist()
        ([1.0, 1.0, 0.5], [False, True, False])
    """
    alpha, threshold = _check_alpha_threshold(alpha, threshold, "stabilize")
    x = np.asarray(raw, dtype=np.float64)
    squeeze = x.ndim == 1
    if squeeze:
        x = x[:, None]  # [T] -> [T, 1]
    if x.ndim != 2:
        raise ValueError(f"The 'raw' parameter of stabilize must be [T, C] or [T]. Got shape {x.shape}.")
    if not np.isfinite(x).all():
        raise ValueError("The 'raw' parameter of stabilize must be finite.")
    u = normalized_entropy(x) if uncertainty is None else np.asarray(uncertainty, dtype=np.float64).reshape(-1)
    if u.shape != (x.shape[0],):
        raise ValueError(f"The 'uncertainty' of stabilize must be [T] = [{x.shape[0]}]. Got shape {u.shape}.")
    held = ~(u <= threshold)  # NaN uncertainty holds too
    idx = np.flatnonzero(~held)  # confident steps
    stable = x.copy()
    if idx.size:
        sub = x[idx]  # [K, C]
        # s_k = a x_k + (1 - a) s_{k-1}, s_0 = x_0: a first-order IIR filter along time
        zi = ((1 - alpha) * sub[0])[None, :]  # [1, C] so that s_0 = x_0
        ema, _ = lfilter([alpha], [1.0, -(1.0 - alpha)], sub, axis=0, zi=zi)
        # forward fill: each step takes the newest confident step at or before it
        last = np.searchsorted(idx, np.arange(x.shape[0]), side="right") - 1  # [T]
        has = last >= 0
        stable[has] = ema[last[has]]
    out = stable[:, 0] if squeeze else stable
    return StabilizedOutput(stable=out, held=held, uncertainty=u)


class Stabilizer:
    """Step-by-step :func:`stabilize` for a live stream.

    Args:
        alpha: Weight of the newest step, in ``(0, 1]``.
        threshold: Uncertainty above which the last stable output is held.

    Example:
        >>> st = Stabilizer(alpha=0.5, threshold=0.5)
        >>> [st.update([1.0], 0.1)[0].tolist(), st.update([0.0], 0.9)[0].tolist(), st.update([0.0], 0.1)[0].tolist()]
        [[1.0], [1.0], [0.5]]
    """

    def __init__(self, alpha: float = 0.3, threshold: float = math.inf) -> None:
        self.alpha, self.threshold = _check_alpha_threshold(alpha, threshold, "Stabilizer")
        self.reset()

    def reset(self) -> None:
        """Forget the average (the next confident step starts it afresh)."""
        self._state: np.ndarray | None = None

    def update(self, raw: Any, uncertainty: float | None = None) -> tuple[np.ndarray, bool]:
        """One step: ``raw`` ``[C]`` -> ``(stable [C], held)``; uncertainty defaults to the normalised entropy."""
        x = np.asarray(raw, dtype=np.float64).reshape(-1)
        u = float(normalized_entropy(x)) if uncertainty is None else float(uncertainty)
        if not u <= self.threshold:
            return (x.copy() if self._state is None else self._state.copy()), True
        self._state = x.copy() if self._state is None else self.alpha * x + (1.0 - self.alpha) * self._state
        return self._state.copy(), False


def stability_metrics(outputs: Any, labels: Any = None) -> dict[str, float]:
    """How steady a sequence of outputs is.

    Args:
        outputs: ``[T, C]`` (or ``[T]``) outputs over time.
        labels: Optional ``[T]`` true class per step (classification); adds ``accuracy`` and ``delay``.

    Returns:
        ``variance`` (temporal variance, mean over outputs), ``jitter`` (mean over steps of the summed absolute change),
        ``flip_rate`` (fraction of steps whose argmax class differs from the previous step's; 0 for one output),
        and with labels ``accuracy`` and ``delay`` (mean steps after a label change until the argmax first
        matches the new label; ``nan`` when the label never changes).

    Example:
        >>> m = stability_metrics([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
        >>> m["jitter"], m["flip_rate"]
        (2.0, 1.0)
    """
    x = np.asarray(outputs, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"The 'outputs' of stability_metrics must be [T, C] with T >= 1. Got shape {x.shape}.")
    t = x.shape[0]
    diff = np.abs(np.diff(x, axis=0))
    res = {
        "variance": float(x.var(axis=0).mean()),
        "jitter": float(diff.sum(axis=1).mean()) if t > 1 else 0.0,
        "flip_rate": 0.0,
    }
    if x.shape[1] > 1 and t > 1:
        cls = x.argmax(axis=1)
        res["flip_rate"] = float((cls[1:] != cls[:-1]).sum() / (t - 1))
    if labels is not None:
        y = np.asarray(labels).reshape(-1)
        if y.shape[0] != t:
            raise ValueError(f"The 'labels' of stability_metrics must be [T] = [{t}]. Got {y.shape[0]}.")
        pred = x.argmax(axis=1) if x.shape[1] > 1 else (x[:, 0] > 0.5).astype(int)
        res["accuracy"] = float((pred == y).mean())
        changes = np.flatnonzero(y[1:] != y[:-1]) + 1  # first step of each new segment
        if changes.size:
            ends = np.r_[changes[1:], t]
            pos = np.flatnonzero(pred == y)  # correct steps
            j = np.searchsorted(pos, changes)  # first correct step at or after each change
            first = np.where(j < pos.size, pos[np.minimum(j, max(pos.size - 1, 0))] if pos.size else t, t)
            res["delay"] = float((np.minimum(first, ends) - changes).mean())  # capped at the segment's end
        else:
            res["delay"] = float("nan")
    return res


def threshold_sweep(
    probs: Any,
    thresholds: Sequence[float],
    *,
    alpha: float = 0.3,
    labels: Any = None,
    uncertainty: Any = None,
) -> list[dict[str, float]]:
    """Stabilise one recording at several uncertainty thresholds and report the trade-off.

    A lower threshold holds more steps (steadier, slower to follow a real change); a higher one follows the raw
    predictions more closely.

    Args:
        probs: ``[T, C]`` raw class probabilities (or outputs).
        thresholds: The thresholds to try.
        alpha: The average's weight of the newest step.
        labels: Optional ``[T]`` true classes, for accuracy and delay.
        uncertainty: ``[T]``; default the normalised entropy.

    Returns:
        One row per threshold: ``threshold``, ``held_fraction`` and :func:`stability_metrics` of the stabilised
        outputs; the raw outputs' metrics come first with ``threshold = nan`` and ``alpha = 1``.

    Example:
        >>> p = [[0.9, 0.1], [0.4, 0.6], [0.9, 0.1], [0.45, 0.55]]
        >>> rows = threshold_sweep(p, [0.5, 1.0], alpha=1.0)
        >>> [round(r["flip_rate"], 2) for r in rows]
        [1.0, 0.0, 1.0]
    """
    x = np.asarray(probs, dtype=np.float64)
    rows = [{"threshold": float("nan"), "alpha": 1.0, "held_fraction": 0.0, **stability_metrics(x, labels)}]
    for th in thresholds:
        out = stabilize(x, uncertainty, alpha=alpha, threshold=float(th))
        rows.append(
            {
                "threshold": float(th),
                "alpha": float(alpha),
                "held_fraction": float(out.held.mean()),
                **stability_metrics(out.stable, labels),
            }
        )
    return rows
