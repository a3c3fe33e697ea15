"""``MultimodalModel``: per-modality projection and temporal encoder, a registered fusion, and a head."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mmfuse.fusion.registry import create_fusion, get_fusion_class
from mmfuse.layers.dropout import Dropout
from mmfuse.layers.encoders import make_encoder
from mmfuse.layers.masking import zero_missing
from mmfuse.layers.mlp import MLP, make_activation
from mmfuse.layers.pooling import make_pooling
from mmfuse.layers.pretrained import PretrainedTextEncoder
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
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.act(self.norm(self.linear(x))))


def _module_key(name: str) -> str:
    """A modality or context name as a submodule name: torch forbids "." there, so it becomes "__"."""
    return name.replace(".", "__")


class _NameDict(nn.ModuleDict):
    """A ``ModuleDict`` indexed by modality (or context) names, which may contain "." (stored as "__").

    Example:
        >>> d = _NameDict({"audio.lld": nn.Identity()})
        >>> list(d.keys()), "audio.lld" in d, type(d["audio.lld"]).__name__
        (['audio__lld'], True, 'Identity')
    """

    def __init__(self, modules: Mapping[str, nn.Module]) -> None:
        keys = [_module_key(k) for k in modules]
        if len(set(keys)) != len(keys):
            raise ValueError(
                f"The names {sorted(modules)} collide once '.' is replaced by '__' in submodule names; rename one."
            )
        super().__init__({_module_key(k): v for k, v in modules.items()})

    def __getitem__(self, key: str) -> nn.Module:
        return super().__getitem__(_module_key(key))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(_module_key(key))


class _ContextConditioning(nn.Module):
    """Embed categorical context per sample and join it to a sequence ``[B, T, H]`` (film, add or concat).

    Index 0 of every embedding table means "unknown": a batch without a value for a context uses it.
    """

    def __init__(self, sizes: Mapping[str, int], dim: int, hidden: int, mode: str) -> None:
        super().__init__()
        self.names: tuple[str, ...] = tuple(sorted(sizes))
        self.sizes = {k: int(sizes[k]) for k in self.names}
        self.mode = mode
        self.embeddings = _NameDict({k: nn.Embedding(self.sizes[k] + 1, dim) for k in self.names})
        total = dim * len(self.names)
        if mode == "film":
            self.film = nn.Linear(total, 2 * hidden)
            nn.init.zeros_(self.film.weight)  # starts as the identity: conditioning is learned, not imposed
            nn.init.zeros_(self.film.bias)
        elif mode == "add":
            self.proj = nn.Linear(total, hidden)
        else:
            self.proj = nn.Linear(hidden + total, hidden)

    def codes(self, context: Mapping[str, Tensor], batch: int, device: torch.device) -> Tensor:
        """Context name -> ``[B]`` category index (0-based) -> embedding ``[B, n_ctx * dim]`` (unknown when absent)."""
        parts = []
        for k in self.names:
            given = context.get(k)
            if given is None:
                idx = torch.zeros(batch, dtype=torch.long, device=device)
            else:
                if given.dim() != 1 or given.shape[0] != batch:
                    raise ValueError(
                        f"The context {k!r} given to MultimodalModel must be an int tensor of shape [{batch}]. "
                        f"Got {list(given.shape)} instead."
                    )
                tracing = torch.compiler.is_compiling()  # export/compile: no data-dependent checks in the graph
                if not tracing and given.numel() and (int(given.min()) < 0 or int(given.max()) >= self.sizes[k]):
                    raise ValueError(
                        f"The context {k!r} given to MultimodalModel has category indices outside "
                        f"[0, {self.sizes[k] - 1}] (ModelConfig.context_sizes[{k!r}] = {self.sizes[k]})."
                    )
                idx = given.to(device=device, dtype=torch.long) + 1
            parts.append(self.embeddings[k](idx))
        return torch.cat(parts, dim=-1)  # [B, n_ctx * dim]

    def forward(self, h: Tensor, context: Mapping[str, Tensor]) -> Tensor:
        """Condition ``h`` (``[B, T, H]``) on the context -> ``[B, T, H]``."""
        c = self.codes(context, h.shape[0], h.device).unsqueeze(1)  # [B, 1, n_ctx * dim]
        if self.mode == "film":
            gamma, beta = self.film(c).chunk(2, dim=-1)  # [B, 1, H] each
            return h * (1 + gamma) + beta
        if self.mode == "add":
            return h + self.proj(c)
        return self.proj(torch.cat([h, c.expand(-1, h.shape[1], -1)], dim=-1))


class MultimodalModel(nn.Module):
    """Project, encode over time, fuse and predict, with availability masks honoured at every stage.

    Stages (each callable on its own, and composed by :meth:`forward`):

    1. :meth:`encode`: per modality, missing steps are zeroed (``torch.where``), then
       Linear -> LayerNorm -> activation -> dropout to ``H``, zeroed again where missing, then a temporal
       encoder that sees only real steps (packed sequences for GRU/LSTM); its output is zeroed where the
       modality is missing. A token modality (``config.pretrained``) first goes through its pretrained encoder:
       the token ids of every present step of the batch as one batch ``[N, L]`` -> pooled ``[N, D]`` ->
       ``[B, T, D]`` (no input dropout on ids), then the same projection.
    2. :meth:`fuse`: the registered fusion ``config.fusion`` with ``modality_dims = {m: H}`` and
       ``out_dim = H``, followed by dropout, then the context conditioning when ``config.context_sizes`` is set.
       A decision-level fusion (``output_level == "prediction"``, e.g. ``late``) is built with ``out_dim = C``
       and its output is the prediction; the context is then added to each modality's encoding instead.
    3. :meth:`head`: an MLP to ``C``, per step, or after masked pooling over real steps for sample labels
       (for a decision-level fusion: no MLP, only the pooling of its predictions for sample labels).

    Inputs may carry more modalities than the model uses (a unimodal baseline reads one modality of a
    trimodal batch); the extra ones are ignored.

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
        self.input_dropout = Dropout(config.input_dropout)
        token_encoders = {
            m: PretrainedTextEncoder(spec["source"], **{k: v for k, v in spec.items() if k != "source"})
            for m, spec in config.pretrained.items()
        }
        self.pretrained = _NameDict(token_encoders)  # empty unless config.pretrained names token modalities
        in_dims = {m: token_encoders[m].dim if m in token_encoders else d for m, d in config.modality_dims.items()}
        self.projections = _NameDict(
            {
                m: _Projection(d, h, config.activation, config.dropout, config.projection_norm)
                for m, d in in_dims.items()
            }
        )
        self.encoders = _NameDict(
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
        # A decision-level fusion outputs the prediction itself: C values per step, no head after it.
        self.decision_level = get_fusion_class(config.fusion).output_level == "prediction"
        fusion_out = config.out_dim if self.decision_level else h
        self.fusion = create_fusion(config.fusion, {m: h for m in self.modalities}, fusion_out, **config.fusion_kwargs)
        if config.causal and not self.fusion.is_causal:
            raise ValueError(
                f"ModelConfig(causal=True) needs a causal fusion, but {config.fusion!r} with fusion_kwargs "
                f"{config.fusion_kwargs} is not causal (for cross_attention pass fusion_kwargs={{'causal': True}})."
            )
        self.fusion_dropout = Dropout(0.0 if self.decision_level else config.dropout)
        self.context: _ContextConditioning | None = None
        if config.context_sizes:
            self.context = _ContextConditioning(
                config.context_sizes, config.context_dim or h, h, "add" if self.decision_level else config.context_mode
            )
        pooled_dim = config.out_dim if self.decision_level else h
        self.pool = make_pooling(config.pooling, pooled_dim) if config.label_level is LabelLevel.SAMPLE else None
        head_hidden = config.effective_head_hidden
        self.head_mlp: nn.Module = (
            nn.Identity()
            if self.decision_level
            else MLP(
                h,
                [head_hidden] if head_hidden else [],
                config.out_dim,
                activation=config.activation,
                dropout=config.dropout,
            )
        )
        self.modality_dropout_rate = float(config.modality_dropout)

    @property
    def is_causal(self) -> bool:
        """Whether the output at step ``t`` depends only on steps ``<= t`` (step labels) or on the prefix."""
        return bool(self.config.causal)

    @property
    def modality_dropout_target(self) -> float:
        """The configured modality-dropout rate (``ModelConfig.modality_dropout``)."""
        return float(self.config.modality_dropout)

    def set_modality_dropout(self, p: float) -> None:
        """Set the rate at which training hides whole modalities (a schedule moves it towards the target).

        Raises:
            ValueError: if ``p`` is not in [0, 1).
        """
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) < 1.0:
            raise ValueError(f"The modality dropout rate must be a number in [0, 1). Got {p!r} instead.")
        self.modality_dropout_rate = float(p)

    def _check(self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor], padding_mask: Tensor) -> None:
        expected = set(self.modalities)
        for what, given in (("inputs", inputs), ("masks", masks)):
            if not expected <= set(given):
                raise ValueError(
                    f"The {what!r} given to MultimodalModel must include the modalities {list(self.modalities)}; "
                    f"missing {sorted(expected - set(given))} (given: {sorted(given)})."
                )
        if padding_mask.dtype != torch.bool or padding_mask.dim() != 2:
            raise ValueError(
                f"The 'padding_mask' of MultimodalModel must be a bool [B, T] tensor. "
                f"Got {padding_mask.dtype} {list(padding_mask.shape)} instead."
            )
        steps = torch.arange(padding_mask.shape[1], device=padding_mask.device)
        # The prefix check reads the data: skipped while tracing (torch.export, ONNX, torch.compile), where only
        # the shapes below are checked; the exported graph documents the same contract (mmfuse.models.export).
        if not torch.compiler.is_compiling() and not torch.equal(
            padding_mask, steps.unsqueeze(0) < padding_mask.sum(dim=1, keepdim=True)
        ):
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
        p = self.modality_dropout_rate
        if self.training and p > 0 and len(self.modalities) > 1:
            b = padding_mask.shape[0]
            draws = torch.rand(b, len(self.modalities), device=padding_mask.device)  # [B, M]
            keep = draws >= p
            # never hide every modality of a sequence: where all were drawn, keep one chosen at random
            one = torch.nn.functional.one_hot(draws.argmax(dim=1), len(self.modalities)).bool()  # [B, M]
            keep = torch.where(keep.any(dim=1, keepdim=True), keep, one)
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
            if m in self.pretrained:
                x = self._embed_tokens(m, inputs[m], present)  # [B, T, D] (token ids are never dropped out)
            else:
                x = self.input_dropout(zero_missing(inputs[m], present))  # [B, T, D_m]
            h = zero_missing(self.projections[m](x), present)  # [B, T, H]
            if self.config.gradient_checkpointing and self.training and torch.is_grad_enabled():
                h = checkpoint(self.encoders[m], h, padding_mask, present, use_reentrant=False)  # [B, T, H]
            else:
                h = self.encoders[m](h, padding_mask, present)  # [B, T, H]
            encoded[m] = zero_missing(h, present)  # [B, T, H]
        return encoded

    def _embed_tokens(self, m: str, ids: Tensor, present: Tensor) -> Tensor:
        """Run modality ``m``'s pretrained encoder on its present steps: ids ``[B, T, L]`` -> ``[B, T, D]``.

        All present steps of the batch go through the encoder as one batch of ``N`` texts; missing steps are 0.
        """
        encoder = cast(PretrainedTextEncoder, self.pretrained[m])
        rows = ids[present][:, : encoder.max_length]  # [N, L'], N = present steps of the batch
        out = rows.new_zeros((*present.shape, encoder.dim))  # [B, T, D]
        if rows.shape[0] == 0:
            return out
        if not torch.compiler.is_compiling():  # a data-dependent check: eager only
            bad = (rows != rows.round()) | (rows < 0) | (rows >= encoder.vocab_size)  # [N, L']
            if bool(bad.any()):
                row, col = (int(i) for i in bad.nonzero()[0])
                raise ValueError(
                    f"The input of modality {m!r} to MultimodalModel must hold token ids of its pretrained encoder "
                    f"(whole numbers in [0, {encoder.vocab_size - 1}]). Present step {row} of the batch has "
                    f"{float(rows[row, col])} at token position {col}."
                )
        pooled = encoder.encode_ids(rows)  # [N, D] (a frozen encoder reads rows it has seen from its cache)
        return out.index_put((present,), pooled.to(out.dtype))  # [B, T, D]

    def fuse(
        self,
        encoded: Mapping[str, Tensor],
        masks: Mapping[str, Tensor],
        context: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """Fuse encoded modalities: ``{m: [B, T, H]}`` with masks ``{m: [B, T]}`` -> ``[B, T, H]``.

        For a decision-level fusion the result is ``[B, T, C]``, the per-step prediction. ``context`` (name ->
        ``[B]`` category index) conditions the result when the model was configured with ``context_sizes``;
        absent names count as "unknown".
        """
        return self.fuse_with_weights(encoded, masks, context)[0]

    def fuse_with_weights(
        self,
        encoded: Mapping[str, Tensor],
        masks: Mapping[str, Tensor],
        context: Mapping[str, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """As :meth:`fuse`, also returning the fusion's inspection weights (see ``Fusion.forward_with_weights``)."""
        encoded = {m: encoded[m] for m in self.modalities}
        masks = {m: masks[m] for m in self.modalities}
        ctx = context or {}
        if self.context is not None and self.decision_level:
            encoded = {m: zero_missing(self.context(x, ctx), masks[m]) for m, x in encoded.items()}
        fused, weights = self.fusion.forward_with_weights(encoded, masks)
        fused = self.fusion_dropout(fused)
        if self.context is not None and not self.decision_level:
            fused = self.context(fused, ctx)
        return fused, weights

    def head(self, fused: Tensor, padding_mask: Tensor) -> Tensor:
        """Predict from fused features ``[B, T, H]`` (a decision-level fusion's ``[B, T, C]`` passes through).

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
        return self.head(self.fuse(encoded, masks, batch.context), batch.padding_mask)
