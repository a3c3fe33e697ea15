"""Batch dataclasses, the shape glossary and type aliases shared by every layer of mmfuse.

Shape glossary (used in every public ``forward`` docstring and in shape comments):

==========  ===================================================================
``B``       batch size (number of sequences)
``T``       time steps of the aligned timeline (padded to the longest in a batch)
``M``       number of modalities; their canonical order is the sorted names
``D_m``     feature size of modality ``m`` (``D`` when only one is meant)
``H``       hidden size inside a model (every modality is projected to it)
``C``       output size: number of classes, or regression targets
``N``       number of source samples of one stream (before alignment)
==========  ===================================================================

Masks are boolean and ``True`` means *real / present*. Two kinds travel together:

* ``padding_mask`` ``[B, T]``: the step exists in the sequence (is not batch padding);
* ``masks[m]`` ``[B, T]``: modality ``m`` has real data at the step. It is always ``False`` where
  ``padding_mask`` is ``False``.

Values at steps whose mask is ``False`` are zero in a :class:`Batch` built by mmfuse, but fusion code must
never rely on that: it zeroes them with ``torch.where`` itself (``0 * nan`` is ``nan``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "Batch",
    "LabelLevel",
    "ModalityInputs",
    "ModalityMasks",
    "TaskType",
]

ModalityInputs = Mapping[str, Tensor]
"""Modality name -> values ``[B, T, D_m]``."""

ModalityMasks = Mapping[str, Tensor]
"""Modality name -> availability ``[B, T]`` (bool, ``True`` = present)."""


class TaskType(str, Enum):
    """What a model predicts."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"


class LabelLevel(str, Enum):
    """Whether there is one label per sequence or one per time step."""

    SAMPLE = "sample"
    STEP = "step"


@dataclass
class Batch:
    """A padded mini-batch of aligned multimodal sequences.

    Attributes:
        inputs: Modality name -> ``[B, T, D_m]`` float32, zero where the modality mask is False.
        masks: Modality name -> ``[B, T]`` bool availability (False where missing or padded).
        padding_mask: ``[B, T]`` bool, True for real steps of each sequence.
        targets: ``[B]`` (sample-level labels) or ``[B, T]`` (step-level labels); int64 class indices for
            classification, float32 for regression (``[B, C]`` / ``[B, T, C]`` for several targets).
            Step-level targets at padded steps are undefined and must be ignored via ``padding_mask``.
        ids: The sample id of each sequence, length ``B``.
        groups: The group (speaker, video, subject) of each sequence, length ``B``.
        context: Optional categorical context per sample, name -> ``[B]`` int64.

    Example:
        >>> x = torch.zeros(2, 3, 4)  # [B, T, D_m]
        >>> pad = torch.tensor([[True, True, True], [True, True, False]])  # [B, T]
        >>> batch = Batch({"audio": x}, {"audio": pad.clone()}, pad, torch.tensor([0, 1]), ids=["a", "b"])
        >>> batch.batch_size, batch.num_steps, batch.select_modalities([]).masks["audio"].any().item()
        (2, 3, False)
    """

    inputs: dict[str, Tensor]
    masks: dict[str, Tensor]
    padding_mask: Tensor
    targets: Tensor | None = None
    ids: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    context: dict[str, Tensor] = field(default_factory=dict)

    @property
    def modalities(self) -> list[str]:
        """The modality names in canonical (sorted) order."""
        return sorted(self.inputs)

    @property
    def batch_size(self) -> int:
        """``B``."""
        return int(self.padding_mask.shape[0])

    @property
    def num_steps(self) -> int:
        """``T``."""
        return int(self.padding_mask.shape[1])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """Return a copy with every tensor moved to ``device``."""

        def move(t: Any) -> Any:
            return t.to(device, non_blocking=non_blocking) if isinstance(t, Tensor) else t

        return replace(
            self,
            inputs={k: move(v) for k, v in self.inputs.items()},
            masks={k: move(v) for k, v in self.masks.items()},
            padding_mask=move(self.padding_mask),
            targets=move(self.targets),
            context={k: move(v) for k, v in self.context.items()},
        )

    def select_modalities(self, keep: list[str] | set[str]) -> Batch:
        """Return a copy in which every modality not in ``keep`` is marked missing (values zeroed, mask False).

        The set of modality keys is unchanged, so a model built for all modalities runs on it as is.
        """
        unknown = set(keep) - set(self.inputs)
        if unknown:
            raise ValueError(
                f"The 'keep' parameter of Batch.select_modalities names unknown modalities {sorted(unknown)}; "
                f"valid: {self.modalities}."
            )
        inputs = {k: (v if k in keep else torch.zeros_like(v)) for k, v in self.inputs.items()}
        masks = {k: (v if k in keep else torch.zeros_like(v)) for k, v in self.masks.items()}
        return replace(self, inputs=inputs, masks=masks)
