"""Pure schedule functions of a training run: ramps of a rate over epochs, and when a scheduler steps."""

from __future__ import annotations

import math

__all__ = ["PER_STEP_SCHEDULERS", "ramp_factor", "steps_per_batch"]

PER_STEP_SCHEDULERS: frozenset[str] = frozenset({"onecycle"})
"""Names of ``TrainConfig.scheduler`` values stepped after every optimiser step (the others step once per epoch)."""

_RAMPS = ("constant", "linear", "cosine")


def ramp_factor(kind: str, epoch: int, warmup_epochs: int) -> float:
    """Return the factor in [0, 1] that a ramp of ``kind`` applies at ``epoch`` (0-based).

    ``"constant"`` is always 1. ``"linear"`` is ``epoch / warmup_epochs`` and ``"cosine"`` is
    ``(1 - cos(pi * epoch / warmup_epochs)) / 2`` until ``epoch == warmup_epochs``, and 1 from then on; so the first
    epoch gets 0 and epoch ``warmup_epochs + 1`` (1-based) the full rate. ``warmup_epochs == 0`` means 1 throughout.

    Args:
        kind: ``"constant"``, ``"linear"`` or ``"cosine"``.
        epoch: 0-based epoch index.
        warmup_epochs: Length of the ramp in epochs.

    Raises:
        ValueError: on an unknown ``kind`` or a negative ``epoch`` / ``warmup_epochs``.

    Example:
        >>> [ramp_factor("linear", e, 4) for e in range(6)]
        [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
        >>> [round(ramp_factor("cosine", e, 2), 3) for e in range(3)], ramp_factor("constant", 0, 5)
        ([0.0, 0.5, 1.0], 1.0)
    """
    if kind not in _RAMPS:
        raise ValueError(f"The 'kind' parameter of ramp_factor must be one of {list(_RAMPS)}. Got {kind!r} instead.")
    for name, value in (("epoch", epoch), ("warmup_epochs", warmup_epochs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(
                f"The {name!r} parameter of ramp_factor must be a non-negative integer. Got {value!r} instead."
            )
    if kind == "constant" or warmup_epochs == 0 or epoch >= warmup_epochs:
        return 1.0
    progress = epoch / warmup_epochs
    if kind == "linear":
        return progress
    return 0.5 * (1.0 - math.cos(math.pi * progress))


def steps_per_batch(scheduler: str) -> bool:
    """Whether the scheduler named ``scheduler`` steps after every optimiser step (else once per epoch).

    Example:
        >>> steps_per_batch("onecycle"), steps_per_batch("cosine")
        (True, False)
    """
    return scheduler in PER_STEP_SCHEDULERS
