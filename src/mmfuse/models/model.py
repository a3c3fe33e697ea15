"""``MultimodalModel``: per-modality projection and temporal encoder, a registered fusion, and a head."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmfuse.fusion.registry import create_fusion
from mmfuse.layers.encoders import make_encoder
from mmfuse.layers.masking import zero_missing
from mmfuse.layers.mlp import MLP, make_activation
from mmfuse.layers.pooling import make_pooling
from mmfuse.models.config import ModelConfig
from mmfuse.types import Batch, LabelLevel

__all__ = ["MultimodalModel"]


class _Projection(nn.Module):
    """Linear -> LayerNorm (optional) -> activation -> dropout: ``[B, T, D_m] -> [B, T, H]``."""

    def __init__(self, in_dim: int, hidden: int, activation: str, dropout: float, norm: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, hidden)
        self.norm: nn.Module = nn.LayerNorm(hidden) if norm else nn.Identity()
        self.act = make_activation(activation)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.act(self.norm(self.linear(x))))


class MultimodalModel(nn.Module):
    """Project, encode over time, fuse and predict, with availability masks honoured at every stage.

    Stages (each callable on its own, and composed by :meth:`forward`):

    1. :meth:`encode`: per modality, missing steps are zeroed (``torch.where``), then
       Linear -> LayerNorm -> activation -> dropout to ``H``, zeroed again where missing, then a temporal
       encoder that sees only real steps (packed sequences for GRU/LSTM); its output is zeroed where the
       modality is missing.
    2. :meth:`fuse`: the registered fusion ``config.fusion`` with ``modality_dims = {m: H}`` and
       ``out_dim = H``, followed by dropout.
    3. :meth:`head`: an MLP to ``C``, per step, or after masked pooling over real steps for sample labels.

    Build it with :func:`mmfuse.models.build_model` (which also enforces a parameter budget).

    Args:
        config: The validated model description.

    Example:
        >>> cfg = ModelConfig({"audio": 3, "text": 5}, out_dim=2, hidden=8)
        >>> model = MultimodalModel(cfg).eval()
        >>> batch = Batch(
        ...     inputs={"audio": torch.randn(2, 4, 3), "text": torch.randn(2, 4, 5)},
        ...     masks={"audio": torch.ones(2, 4, dtype=torch.bool), "text": torch.ones(2, 4, dtype=torch.bool)},
        ...     padding_mask=torch.ones(2, 4, dtype=torch.bool),
        ... )
        >>> model(batch).shape
        torch.Size([2, 2])
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.modalities: tuple[str, ...] = tuple(sorted(config.modality_dims))
        h = config.hidden
        self.input_dropout = nn.Dropout(config.input_dropout)
        self.projections = nn.ModuleDict(
            {
                m: _Projection(d, h, config.activation, config.dropout, config.projection_norm)
                for m, d in config.modality_dims.items()
            }
        )
        self.encoders = nn.ModuleDict(
            {
                m: make_encoder(
                    config.encoder,
                    h,
                    num_layers=config.encoder_layers,
                    bidirectional=config.bidirectional and not config.causal,
                    causal=config.causal,
                    dropout=config.dropout,
                    num_heads=config.num_heads,
                    kernel_size=config.kernel_size,
                    residual=config.encoder_residual,
                )
                for m in self.modalities
            }
        )
        self.fusion = create_fusion(config.fusion, {m: h for m in self.modalities}, h, **config.fusion_kwargs)
        if config.causal and not self.fusion.is_causal:
            raise ValueError(
                f"ModelConfig(causal=True) needs a causal fusion, but {config.fusion!r} with fusion_kwargs "
                f"{config.fusion_kwargs} is not causal (for cross_attention pass fusion_kwargs={{'causal': True}})."
            )
        self.fusion_dropout = nn.Dropout(config.dropout)
        self.pool = make_pooling(config.pooling, h) if config.label_level is LabelLevel.SAMPLE else None
        head_hidden = config.effective_head_hidden
        self.head_mlp = MLP(
            h,
            [head_hidden] if head_hidden else [],
            config.out_dim,
            activation=config.activation,
            dropout=config.dropout,
        )

    @property
    def is_causal(self) -> bool:
        """Whether the output at step ``t`` depends only on steps ``<= t`` (step labels) or on the prefix."""
        return bool(self.config.causal)

    def _check(self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor], padding_mask: Tensor) -> None:
        expected = set(self.modalities)
        for what, given in (("inputs", inputs), ("masks", masks)):
            if set(given) != expected:
                raise ValueError(
                    f"The {what!r} given to MultimodalModel must have exactly the modalities {list(self.modalities)}; "
                    f"missing {sorted(expected - set(given))}, unexpected {sorted(set(given) - expected)}."
                )
        if padding_mask.dtype != torch.bool or padding_mask.dim() != 2:
            raise ValueError(
                f"The 'padding_mask' of MultimodalModel must be a bool [B, T] tensor. "
                f"Got {padding_mask.dtype} {list(padding_mask.shape)} instead."
            )
        steps = torch.arange(padding_mask.shape[1], device=padding_mask.device)
        if not torch.equal(padding_mask, steps.unsqueeze(0) < padding_mask.sum(dim=1, keepdim=True)):
            raise ValueError(
                "The 'padding_mask' of MultimodalModel must mark a prefix of each row (real steps first, then "
                "padding), as mmfuse.data.collate produces."
            )
        for m in self.modalities:
            x = inputs[m]
            d = self.config.modality_dims[m]
            if x.dim() != 3 or x.shape[-1] != d or x.shape[:2] != padding_mask.shape:
                raise ValueError(
                    f"The input of modality {m!r} to MultimodalModel must have shape "
                    f"{[*padding_mask.shape, d]} ([B, T, D_m]). Got {list(x.shape)} instead."
                )
            if masks[m].dtype != torch.bool or masks[m].shape != padding_mask.shape:
                raise ValueError(
                    f"The mask of modality {m!r} to MultimodalModel must be a bool tensor of shape "
                    f"{list(padding_mask.shape)}. Got {masks[m].dtype} {list(masks[m].shape)} instead."
                )

    def _modality_dropout(self, masks: dict[str, Tensor], padding_mask: Tensor) -> dict[str, Tensor]:
        """In training, hide whole modalities of some sequences (never all of them)."""
        out = masks
        p = self.config.modality_dropout
        if self.training and p > 0 and len(self.modalities) > 1:
            b = padding_mask.shape[0]
            keep = torch.rand(b, len(self.modalities), device=padding_mask.device) >= p  # [B, M]
            keep = keep | ~keep.any(dim=1, keepdim=True)  # never hide every modality of a sequence
            out = {m: out[m] & keep[:, i : i + 1] for i, m in enumerate(self.modalities)}
        return out

    def encode(
        self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor], padding_mask: Tensor
    ) -> dict[str, Tensor]:
        """Project and temporally encode each modality.

        Args:
            inputs: Modality name -> ``[B, T, D_m]``.
            masks: Modality name -> bool ``[B, T]`` (True = present).
            padding_mask: Bool ``[B, T]``, True at real steps (a prefix of each row).

        Returns:
            Modality name -> ``[B, T, H]``, exactly zero where the modality is missing or the step is padding.
        """
        self._check(inputs, masks, padding_mask)
        encoded = {}
        for m in self.modalities:
            present = masks[m] & padding_mask  # [B, T]
            x = self.input_dropout(zero_missing(inputs[m], present))  # [B, T, D_m]
            h = zero_missing(self.projections[m](x), present)  # [B, T, H]
            h = self.encoders[m](h, padding_mask, present)  # [B, T, H]
            encoded[m] = zero_missing(h, present)  # [B, T, H]
        return encoded

    def fuse(self, encoded: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> Tensor:
        """Fuse encoded modalities: ``{m: [B, T, H]}`` with masks ``{m: [B, T]}`` -> ``[B, T, H]``."""
        return self.fusion_dropout(self.fusion(encoded, masks))

    def head(self, fused: Tensor, padding_mask: Tensor) -> Tensor:
        """Predict from fused features ``[B, T, H]``.

        Returns:
            ``[B, T, C]`` for step labels (padded steps hold finite values to ignore), ``[B, C]`` for sample
            labels (pooled over the steps where ``padding_mask`` is True).
        """
        if self.pool is not None:
            fused = self.pool(fused, padding_mask)  # [B, H]
        return self.head_mlp(fused)

    def forward(self, batch: Batch) -> Tensor:
        """Run every stage on a :class:`~mmfuse.types.Batch`.

        Returns:
            Logits (classification) or predictions (regression): ``[B, C]`` for sample labels,
            ``[B, T, C]`` for step labels.
        """
        self._check(batch.inputs, batch.masks, batch.padding_mask)
        masks = {m: batch.masks[m] & batch.padding_mask for m in self.modalities}  # M x [B, T]
        masks = self._modality_dropout(masks, batch.padding_mask)
        encoded = self.encode(batch.inputs, masks, batch.padding_mask)
        return self.head(self.fuse(encoded, masks), batch.padding_mask)
