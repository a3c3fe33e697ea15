"""``ModelConfig``: the typed, JSON-safe description of a :class:`~mmfuse.models.MultimodalModel`."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mmfuse.fusion.registry import fusion_kwargs, list_fusions
from mmfuse.layers.encoders import ENCODERS
from mmfuse.layers.mlp import ACTIVATIONS
from mmfuse.layers.pooling import POOLINGS
from mmfuse.layers.pretrained import pretrained_spec
from mmfuse.types import LabelLevel, TaskType

__all__ = ["CONTEXT_MODES", "ModelConfig"]

CONTEXT_MODES = ("add", "concat", "film")
"""How categorical context joins the fused representation (see :attr:`ModelConfig.context_mode`)."""


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"The {name!r} parameter of ModelConfig must be a positive integer. Got {value!r} instead.")


def _probability(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"The {name!r} parameter of ModelConfig must be a number in [0, 1). Got {value!r} instead.")


def _sizes(name: str, value: Any, what: str, *, required: bool) -> dict[str, int]:
    """Validate a mapping of names to positive sizes (``modality_dims``, ``context_sizes``); sorted by name."""
    if not isinstance(value, Mapping) or (required and not value):
        raise ValueError(
            f"The {name!r} parameter of ModelConfig must be a {'non-empty ' if required else ''}mapping of {what}. "
            f"Got {value!r} instead."
        )
    for key, size in value.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"The {name!r} keys of ModelConfig must be non-empty strings. Got {key!r}.")
        _positive_int(f"{name}[{key!r}]", size)
    return {key: int(value[key]) for key in sorted(value)}


def _choice(name: str, value: Any, valid: tuple[str, ...] | list[str]) -> None:
    if value not in valid:
        raise ValueError(
            f"The {name!r} parameter of ModelConfig must be one of {', '.join(map(repr, valid))}. "
            f"Got {value!r} instead."
        )


@dataclass
class ModelConfig:
    """Everything needed to rebuild a :class:`~mmfuse.models.MultimodalModel` (validated on construction).

    Attributes:
        modality_dims: Modality name -> input feature size ``D_m``.
        out_dim: Output size ``C`` (classes, or regression targets).
        task: "classification" or "regression" (a :class:`~mmfuse.types.TaskType` is accepted too).
        label_level: "sample" (one output per sequence, ``[B, C]``) or "step" (``[B, T, C]``).
        fusion: Name of a registered fusion (see :func:`mmfuse.fusion.list_fusions`).
        fusion_kwargs: Keyword arguments for that fusion (JSON values only).
        hidden: Hidden size ``H`` of projections, encoders, fusion output and head.
        encoder: Temporal encoder per modality: "gru", "lstm", "transformer", "conv" or "none".
        bidirectional: Bidirectional recurrent encoder (must be False when ``causal``).
        encoder_layers: Stacked encoder layers.
        dropout: Dropout in projections, encoders, after the fusion and in the head.
        input_dropout: Feature dropout on the raw inputs (not on a token modality's ids nor on its encoder's output).
        modality_dropout: Probability, during training, of hiding a whole modality of a sequence (never all
            of them); teaches the model to cope with missing modalities.
        pooling: "mean", "attention" or "last": how sample-level models pool steps.
        causal: Every stage uses only past and present steps (streaming). Needs ``bidirectional=False``,
            a causal fusion (e.g. ``fusion_kwargs={"causal": True}`` for cross_attention) and, for sample
            labels, ``pooling="last"``.
        head_hidden: Hidden size of the head MLP (default ``hidden``; 0 for a single linear layer).
        activation: Activation name used in projections and head.
        num_heads: Attention heads of the transformer encoder.
        kernel_size: Kernel width of the conv encoder.
        projection_norm: LayerNorm after each modality's input projection. Per-step normalisation can wash out
            the scale differences that carry signal in pre-extracted features (about 1.5 points on CMU-MOSI).
        encoder_residual: Recurrent encoders add their input to their output (``LayerNorm(x + rnn(x))``);
            False forces every step through its context (``LayerNorm(rnn(x))``).
        context_sizes: Categorical context name -> number of categories (e.g. ``{"domain": 3}``); each is
            embedded and combined with the fused representation (see ``context_mode``). Index 0 of every
            embedding is reserved for "unknown", used when a batch carries no value for that context, so the
            model runs unchanged without context. Empty: no context conditioning.
        context_dim: Size of each context embedding (default ``hidden``).
        context_mode: How the context joins the fused sequence: ``"film"`` (feature-wise scale and shift,
            ``h * (1 + gamma(c)) + beta(c)``), ``"add"`` (``h + W c``) or ``"concat"`` (``W [h; c]``). With a
            decision-level fusion (``output_level == "prediction"``) the context is added to every modality's
            encoding before the fusion instead, since the fused output is already the prediction.
        gradient_checkpointing: Recompute each modality's temporal encoder in the backward pass instead of
            storing its activations (less memory for deep encoders and long sequences, about one extra forward
            of compute). Training only; outputs and gradients are unchanged.
        pretrained: Token modality -> the pretrained encoder that reads it (a ``"tokens"`` modality: ``D_m``
            token ids per step, see :class:`~mmfuse.data.ModalitySpec`):
            ``{"source": "minilm" or a folder, "pooling": "mean", "max_length": 128, "normalize": False,
            "trainable": True, "gradient_checkpointing": False}`` (defaults filled in; see
            :func:`mmfuse.layers.pretrained.pretrained_spec`). The model runs the encoder on the present steps and
            projects its pooled output (``D`` = the encoder's hidden size) like any other modality. ``trainable``
            False keeps the backbone frozen (in eval mode, no gradients; saved as a reference to its source);
            ``max_length`` keeps the first tokens of each step.

    Example:
        >>> cfg = ModelConfig({"audio": 73, "text": 100}, out_dim=2, task="classification", label_level="step")
        >>> ModelConfig.from_dict(cfg.to_dict()) == cfg
        True
        >>> ModelConfig({"audio": 73}, out_dim=2, encoder="rnn")
        Traceback (most recent call last):
        ...
        ValueError: The 'encoder' parameter of ModelConfig must be one of 'conv', 'gru', 'lstm', 'none', 'transformer'. Got 'rnn' instead.
    """  # noqa: E501

    modality_dims: dict[str, int]
    out_dim: int
    task: TaskType | str = TaskType.CLASSIFICATION
    label_level: LabelLevel | str = LabelLevel.SAMPLE
    fusion: str = "concat"
    fusion_kwargs: dict[str, Any] = field(default_factory=dict)
    hidden: int = 64
    encoder: str = "gru"
    bidirectional: bool = True
    encoder_layers: int = 1
    dropout: float = 0.2
    input_dropout: float = 0.0
    modality_dropout: float = 0.0
    pooling: str = "mean"
    causal: bool = False
    head_hidden: int | None = None
    activation: str = "gelu"
    num_heads: int = 4
    kernel_size: int = 3
    projection_norm: bool = True
    encoder_residual: bool = True
    context_sizes: dict[str, int] = field(default_factory=dict)
    context_dim: int | None = None
    context_mode: str = "film"
    gradient_checkpointing: bool = False
    pretrained: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.modality_dims = _sizes("modality_dims", self.modality_dims, "modality name -> feature size", required=True)
        _positive_int("out_dim", self.out_dim)
        _choice("task", getattr(self.task, "value", self.task), [t.value for t in TaskType])
        _choice("label_level", getattr(self.label_level, "value", self.label_level), [v.value for v in LabelLevel])
        self.task = TaskType(self.task)
        self.label_level = LabelLevel(self.label_level)
        _choice("fusion", self.fusion, list_fusions())
        if not isinstance(self.fusion_kwargs, Mapping):
            raise ValueError(
                f"The 'fusion_kwargs' parameter of ModelConfig must be a dict. Got {self.fusion_kwargs!r}."
            )
        self.fusion_kwargs = dict(self.fusion_kwargs)
        try:
            json.dumps(self.fusion_kwargs)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"The 'fusion_kwargs' parameter of ModelConfig must be JSON-serialisable: {exc}") from None
        unknown = sorted(set(self.fusion_kwargs) - set(fusion_kwargs(self.fusion)))
        if unknown:
            raise ValueError(
                f"The 'fusion_kwargs' parameter of ModelConfig has key(s) {unknown} that fusion {self.fusion!r} does "
                f"not accept; accepted: {sorted(fusion_kwargs(self.fusion))}."
            )
        _positive_int("hidden", self.hidden)
        _choice("encoder", self.encoder, ENCODERS)
        for flag in ("bidirectional", "causal", "projection_norm", "encoder_residual", "gradient_checkpointing"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"The {flag!r} parameter of ModelConfig must be a bool. Got {getattr(self, flag)!r}.")
        _positive_int("encoder_layers", self.encoder_layers)
        for p in ("dropout", "input_dropout", "modality_dropout"):
            _probability(p, getattr(self, p))
        _choice("pooling", self.pooling, POOLINGS)
        if self.head_hidden is not None and (
            not isinstance(self.head_hidden, int) or isinstance(self.head_hidden, bool) or self.head_hidden < 0
        ):
            raise ValueError(
                f"The 'head_hidden' parameter of ModelConfig must be None or a non-negative integer. "
                f"Got {self.head_hidden!r} instead."
            )
        _choice("activation", self.activation, sorted(ACTIVATIONS))
        _positive_int("num_heads", self.num_heads)
        _positive_int("kernel_size", self.kernel_size)
        if self.encoder == "transformer" and self.hidden % self.num_heads:
            raise ValueError(
                f"The 'num_heads' parameter of ModelConfig ({self.num_heads}) must divide 'hidden' "
                f"({self.hidden}) for the transformer encoder."
            )
        if self.encoder == "conv" and self.kernel_size % 2 == 0:
            raise ValueError(f"The 'kernel_size' parameter of ModelConfig must be odd. Got {self.kernel_size}.")
        if self.encoder in ("gru", "lstm") and self.bidirectional and self.hidden % 2:
            raise ValueError(
                f"The 'hidden' parameter of ModelConfig must be even for a bidirectional encoder. Got {self.hidden}."
            )
        self.context_sizes = _sizes(
            "context_sizes", self.context_sizes, "context name -> number of categories", required=False
        )
        if self.context_dim is not None:
            _positive_int("context_dim", self.context_dim)
        _choice("context_mode", self.context_mode, CONTEXT_MODES)
        self._check_pretrained()
        if self.causal:
            if self.encoder in ("gru", "lstm") and self.bidirectional:
                raise ValueError(
                    "ModelConfig(causal=True) needs bidirectional=False: a bidirectional encoder reads the future."
                )
            if self.label_level is LabelLevel.SAMPLE and self.pooling != "last":
                raise ValueError(
                    f"ModelConfig(causal=True) with sample-level labels needs pooling='last'. Got {self.pooling!r}."
                )

    def _check_pretrained(self) -> None:
        if not isinstance(self.pretrained, Mapping):
            raise ValueError(
                "The 'pretrained' parameter of ModelConfig must be a dict of token modality -> encoder description "
                f"(e.g. {{'text': {{'source': 'minilm'}}}}). Got {self.pretrained!r} instead."
            )
        unknown = sorted(set(self.pretrained) - set(self.modality_dims))
        if unknown:
            raise ValueError(
                f"The 'pretrained' parameter of ModelConfig names modalities {unknown} that are not in "
                f"'modality_dims' ({list(self.modality_dims)})."
            )
        self.pretrained = {
            m: pretrained_spec(self.pretrained[m], f"ModelConfig.pretrained[{m!r}]") for m in sorted(self.pretrained)
        }

    @property
    def effective_head_hidden(self) -> int:
        """The head MLP's hidden size (``head_hidden``, defaulting to ``hidden``)."""
        return self.hidden if self.head_hidden is None else self.head_hidden

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (enums as their string values) that :meth:`from_dict` reads back."""
        out = dataclasses.asdict(self)
        out["task"] = TaskType(self.task).value
        out["label_level"] = LabelLevel(self.label_level).value
        if not self.pretrained:
            # a model without a pretrained encoder writes the keys it always wrote: config.json files from before
            # the field existed stay equal to today's (``compare --resume`` compares them key by key)
            del out["pretrained"]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Build a config from :meth:`to_dict` output.

        Raises:
            ValueError: naming unknown keys (and the valid ones) or invalid values.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"ModelConfig.from_dict expects a mapping. Got {type(data).__name__} instead.")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"Unknown ModelConfig key(s) {unknown}; valid keys: {names}.")
        missing = [n for n in ("modality_dims", "out_dim") if n not in data]
        if missing:
            raise ValueError(f"ModelConfig.from_dict is missing the required key(s) {missing}.")
        return cls(**dict(data))

    def replace(self, **changes: Any) -> ModelConfig:
        """Return a validated copy with some fields changed.

        Example:
            >>> ModelConfig({"a": 2}, out_dim=3).replace(fusion="gated").fusion
            'gated'
        """
        return dataclasses.replace(self, **changes)
