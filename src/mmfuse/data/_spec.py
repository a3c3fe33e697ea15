"""The in-memory description of a multimodal sequence data set: modality and task specs, one record."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from mmfuse.types import LabelLevel, TaskType

__all__ = ["MAX_TOKEN_ID", "MODALITY_KINDS", "ModalitySpec", "SequenceRecord", "TaskSpec", "invalid_token_rows"]

MODALITY_KINDS: tuple[str, ...] = ("continuous", "discrete", "embedding", "interval", "tokens")
"""The values ``ModalitySpec.kind`` may take."""

MAX_TOKEN_ID = 2**24 - 1
"""The largest token id a ``"tokens"`` modality can hold: float32 stores every whole number up to ``2**24`` exactly."""


def invalid_token_rows(values: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Indices of the present rows of a ``"tokens"`` modality that are not token ids (``[S, L]``, ``[S]`` bool).

    A token id is a whole number in ``[0, MAX_TOKEN_ID]`` (stored as float32). Missing rows are not checked.

    Example:
        >>> invalid_token_rows(np.array([[101, 7, 0], [101, 2.5, 0], [-1, 0, 0]]), np.array([True, True, False]))
        array([1])
    """
    ok = (values == np.round(values)) & (values >= 0) & (values <= MAX_TOKEN_ID)  # [S, L]; False for NaN too
    return np.flatnonzero(present & ~ok.all(axis=1))


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class ModalitySpec:
    """One modality of a data set: its name, feature size and kind.

    Args:
        name: Modality name; letters, digits, ``_``, ``.`` and ``-``, starting with a letter or digit
            (it becomes a file name).
        dim: Feature size ``D_m`` (a positive integer).
        kind: ``"continuous"``, ``"discrete"``, ``"embedding"``, ``"interval"`` or ``"tokens"``; preprocessing
            picks the default normaliser from it. A ``"tokens"`` modality holds, per step, ``dim`` token ids of
            one text (whole numbers stored as float32, padded with the tokenizer's pad id; see
            :func:`invalid_token_rows`): a model reads it with a pretrained encoder
            (``ModelConfig.pretrained``) and it is never normalised.
        description: Free text (sensor, extractor, units).

    Example:
        >>> ModalitySpec("accelerometer", 3).kind
        'continuous'
    """

    name: str
    dim: int
    kind: str = "continuous"
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ValueError(
                "The 'name' parameter of ModalitySpec must be a non-empty string of letters, digits, '_', '.' "
                f"or '-' that starts with a letter or digit. Got {self.name!r} instead."
            )
        if isinstance(self.dim, bool) or not isinstance(self.dim, (int, np.integer)) or self.dim <= 0:
            raise ValueError(
                f"The 'dim' parameter of ModalitySpec({self.name!r}) must be a positive integer. Got {self.dim!r}."
            )
        object.__setattr__(self, "dim", int(self.dim))
        if self.kind not in MODALITY_KINDS:
            raise ValueError(
                f"The 'kind' parameter of ModalitySpec({self.name!r}) must be one of {list(MODALITY_KINDS)}. "
                f"Got {self.kind!r} instead."
            )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (the form stored in ``meta.json``)."""
        return {"name": self.name, "dim": self.dim, "kind": self.kind, "description": self.description}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModalitySpec:
        """Build a spec from the output of :meth:`to_dict`."""
        return cls(
            name=data["name"],
            dim=data["dim"],
            kind=data.get("kind", "continuous"),
            description=data.get("description", ""),
        )


_E = TypeVar("_E", TaskType, LabelLevel)


def _task_enum(enum: type[_E], value: Any, parameter: str) -> _E:
    """Return ``enum(value)``; a value outside ``enum`` raises a ValueError naming the TaskSpec parameter."""
    try:
        return enum(value)
    except ValueError:
        raise ValueError(
            f"The {parameter!r} parameter of TaskSpec must be one of {[v.value for v in enum]}. Got {value!r}."
        ) from None


@dataclass(frozen=True)
class TaskSpec:
    """What the labels of a data set are.

    Args:
        type: Classification or regression (a :class:`~mmfuse.types.TaskType` or its string value).
        level: One label per sequence (``"sample"``) or per step (``"step"``).
        class_names: Classification only: class index -> name (at least two).
        target_dim: Regression only: number of targets per label (``1`` means a scalar target).

    Example:
        >>> TaskSpec("classification", "sample", class_names=("neg", "pos")).out_dim
        2
        >>> TaskSpec("regression", "step").out_dim
        1
    """

    type: TaskType
    level: LabelLevel
    class_names: tuple[str, ...] = ()
    target_dim: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", _task_enum(TaskType, self.type, "type"))
        object.__setattr__(self, "level", _task_enum(LabelLevel, self.level, "level"))
        names = tuple(self.class_names)
        object.__setattr__(self, "class_names", names)
        if self.type is TaskType.CLASSIFICATION:
            if len(names) < 2 or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
                raise ValueError(
                    "The 'class_names' parameter of TaskSpec must hold at least two distinct non-empty strings for "
                    f"classification. Got {names!r} instead."
                )
            if self.target_dim != 1:
                raise ValueError(
                    f"The 'target_dim' parameter of TaskSpec must be 1 for classification. Got {self.target_dim!r}."
                )
        else:
            if names:
                raise ValueError(
                    f"The 'class_names' parameter of TaskSpec must be empty for regression. Got {names!r}."
                )
            if isinstance(self.target_dim, bool) or not isinstance(self.target_dim, int) or self.target_dim < 1:
                raise ValueError(
                    f"The 'target_dim' parameter of TaskSpec must be a positive integer. Got {self.target_dim!r}."
                )

    @property
    def out_dim(self) -> int:
        """Output size ``C`` a model needs: number of classes, or number of regression targets."""
        return len(self.class_names) if self.type is TaskType.CLASSIFICATION else self.target_dim

    @property
    def is_classification(self) -> bool:
        """True for classification tasks."""
        return self.type is TaskType.CLASSIFICATION

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (the form stored in ``meta.json``)."""
        return {
            "type": self.type.value,
            "level": self.level.value,
            "class_names": list(self.class_names),
            "target_dim": self.target_dim,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskSpec:
        """Build a spec from the output of :meth:`to_dict`."""
        return cls(
            type=data["type"],
            level=data["level"],
            class_names=tuple(data.get("class_names", ())),
            target_dim=int(data.get("target_dim", 1)),
        )


@dataclass
class SequenceRecord:
    """One sample (an aligned multimodal sequence of ``T`` steps) in memory.

    Attributes:
        id: Unique sample id.
        group: Speaker / video / subject the sample belongs to (splits never share groups in the built-ins).
        split: Split name, e.g. ``"train"``, ``"val"``, ``"test"``.
        values: Modality -> ``[T, D_m]`` float32. Steps whose mask is False are zero in records read from
            disk; :func:`~mmfuse.data.write_dataset` zeroes them (they may hold NaN on the way in).
        masks: Modality -> ``[T]`` bool, True where the modality has real data.
        label: Sample level: an ``int`` class index or a ``float`` target (``[C]`` array for several regression
            targets). Step level: a ``[T]`` array (``[T, C]`` for several regression targets).
        timestamps: ``[T]`` float64 seconds (strictly increasing), or None.
        context: Categorical context of the sample (name -> value), e.g. ``{"device": "watch"}``.

    Example:
        >>> import numpy as np
        >>> rec = SequenceRecord(
        ...     id="s0", group="g0", split="train",
        ...     values={"imu": np.zeros((5, 3), np.float32)}, masks={"imu": np.ones(5, bool)}, label=1,
        ... )
        >>> len(rec)
        5
    """

    id: str
    group: str
    split: str
    values: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    label: Any
    timestamps: np.ndarray | None = None
    context: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        """Number of steps ``T`` (of the first modality; all modalities share it)."""
        for v in self.values.values():
            return int(np.shape(v)[0])
        return 0
