"""Step-by-step execution of a trained causal :class:`~mmfuse.models.MultimodalModel`, with cached state.

:class:`IncrementalModel` runs the model's own submodules one step at a time and carries their state between
steps, so a step costs the same whatever the stream's length:

========================  =========================================================================
part                      incremental state
========================  =========================================================================
projection, head          none (pointwise); the model's own modules are called on ``[B, 1, ...]``
encoder ``gru`` / ``lstm``  the recurrent hidden state (and cell state), carried between steps
encoder ``conv`` (causal)  the last ``kernel_size - 1`` inputs of every layer
encoder ``transformer``   a key/value cache per layer (causal), plus the step position
encoder ``none``          none
fusion concat/gated/...   none: pointwise fusions (``concat``, ``gated``, ``weighted`` or any fusion with
                          ``is_pointwise = True``) run through ``model.fuse`` on one step
fusion cross_attention    a key/value cache per query modality (``causal=True`` only)
========================  =========================================================================

Key/value caches grow by one entry per step. With ``max_history=N`` they keep the newest ``N`` steps, which
bounds memory and time on endless streams; the outputs then equal the offline model's only for the first ``N``
steps (offline, step ``t`` attends to every earlier step). Recurrent and convolutional state is fixed-size and
exact forever.

Any other causal model (an encoder or a fusion this module does not know) runs in *windowed recompute*: the
last ``max_history`` normalised input steps are kept and the whole model is run on them at every step (exact
while the stream is shorter than the window). Stepping needs the model in evaluation mode (dropout off) and a
causal model: a non-causal model's step ``t`` depends on steps not yet seen, so it is refused.

States are dicts of tensors whose first dimension is the batch, so the states of several streams can be
stacked (:func:`stack_states`) and stepped together, then split again (:func:`split_states`). Caches are kept
right-aligned (newest entry last) with a validity mask, so streams of different lengths stack by left padding.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mmfuse.errors import StreamError
from mmfuse.layers.encoders import ConvEncoder, IdentityEncoder, RNNEncoder, TransformerEncoder, _sinusoidal_positions
from mmfuse.layers.masking import masked_mean, masked_softmax, zero_missing
from mmfuse.models import MultimodalModel
from mmfuse.types import Batch, LabelLevel

__all__ = ["POINTWISE_FUSIONS", "IncrementalModel", "State", "split_states", "stack_states"]

State = dict[str, Tensor]
"""Stepping state: name -> tensor with the batch first. Names starting with ``cache.`` are growing caches
``[B, L, ...]``, right-aligned, with a matching ``valid.`` mask ``[B, L]``."""

POINTWISE_FUSIONS = frozenset({"concat", "gated", "weighted"})
"""Registered fusions whose output at step ``t`` depends on step ``t`` only."""


def _any(x: Any) -> Any:
    """Submodule containers typed loosely (their items are known layer classes)."""
    return x


def _growing(key: str) -> bool:
    return key.startswith(("cache.", "valid.", "hist."))


def stack_states(states: Sequence[State]) -> State:
    """Stack per-stream states (batch 1 or more each) into one batch; caches are left-padded to one length.

    Example:
        >>> ok = torch.ones(1, 2, dtype=torch.bool)
        >>> a = {"pos": torch.tensor([3]), "cache.k": torch.ones(1, 2, 4), "valid.k": ok}
        >>> b = {"pos": torch.tensor([1]), "cache.k": torch.ones(1, 1, 4), "valid.k": ok[:, :1]}
        >>> s = stack_states([a, b])
        >>> s["cache.k"].shape, s["valid.k"].tolist()
        (torch.Size([2, 2, 4]), [[True, True], [False, True]])
    """
    if not states:
        raise StreamError("stack_states needs at least one state.")
    out: State = {}
    for key in states[0]:
        parts = [s[key] for s in states]
        if _growing(key) and len({p.shape[1] for p in parts}) > 1:
            n = max(p.shape[1] for p in parts)
            parts = [
                p if p.shape[1] == n else torch.cat([p.new_zeros(p.shape[0], n - p.shape[1], *p.shape[2:]), p], dim=1)
                for p in parts
            ]
        out[key] = torch.cat(parts, dim=0)
    return out


def split_states(state: State, sizes: Sequence[int] | None = None) -> list[State]:
    """Split a stacked state back into per-stream states (batch 1 each unless ``sizes`` is given).

    Caches keep the stacked length; padding entries stay marked invalid.
    """
    b = next(iter(state.values())).shape[0]
    sizes = [1] * b if sizes is None else list(sizes)
    pieces = {k: torch.split(v, sizes, dim=0) for k, v in state.items()}
    return [{k: pieces[k][i] for k in state} for i in range(len(sizes))]


def _append(state: State, name: str, value: Tensor, valid: Tensor, max_history: int | None) -> tuple[Tensor, Tensor]:
    """Append one step ``value [B, 1, ...]`` to cache ``name`` (right-aligned) and return (cache, valid)."""
    cache = torch.cat([state[f"cache.{name}"], value], dim=1)  # [B, L + 1, ...]
    ok = torch.cat([state[f"valid.{name}"], valid], dim=1)  # [B, L + 1]
    if max_history is not None and cache.shape[1] > max_history:
        cache, ok = cache[:, -max_history:], ok[:, -max_history:]
    state[f"cache.{name}"], state[f"valid.{name}"] = cache, ok
    return cache, ok


class IncrementalModel:
    """Run a trained causal model one step at a time with cached state (see the module docstring).

    Args:
        model: A causal :class:`~mmfuse.models.MultimodalModel`; put in evaluation mode here.
        max_history: Steps kept by key/value caches and by windowed recompute (None: unbounded caches, and 4096
            steps for windowed recompute).

    Attributes:
        incremental: True when every part steps with cached state; False for windowed recompute.
        reason: Why windowed recompute is used (empty when incremental).
        modalities: Canonical modality order.

    Example:
        >>> from mmfuse.models import ModelConfig, build_model
        >>> cfg = ModelConfig({"a": 2, "b": 3}, out_dim=2, hidden=8, causal=True, bidirectional=False,
        ...                   label_level="step")
        >>> engine = IncrementalModel(build_model(cfg))
        >>> state = engine.init_state(1)
        >>> x = {"a": torch.randn(1, 2), "b": torch.randn(1, 3)}
        >>> m = {"a": torch.tensor([True]), "b": torch.tensor([False])}
        >>> out, state = engine.step(x, m, state)
        >>> out.shape, engine.incremental
        (torch.Size([1, 2]), True)
    """

    def __init__(self, model: MultimodalModel, *, max_history: int | None = None) -> None:
        if not isinstance(model, MultimodalModel):
            raise StreamError(f"IncrementalModel needs a MultimodalModel. Got {type(model).__name__}.")
        if not model.is_causal:
            raise StreamError(
                "IncrementalModel needs a causal model (ModelConfig(causal=True, bidirectional=False) with a causal "
                "fusion): the output of a non-causal model at step t depends on steps that have not arrived yet."
            )
        if max_history is not None and (not isinstance(max_history, int) or max_history < 1):
            raise StreamError(
                "The 'max_history' parameter of IncrementalModel must be a positive integer or None. "
                f"Got {max_history!r}."
            )
        self.model = model.eval()
        self.max_history = max_history
        self.modalities = model.modalities
        self.config = model.config
        self.step_level = model.config.label_level is LabelLevel.STEP
        self.hidden = model.config.hidden
        p = next(model.parameters())
        self.dtype, self.device = p.dtype, p.device
        reasons = []
        for m in self.modalities:
            enc = model.encoders[m]
            if not isinstance(enc, (IdentityEncoder, RNNEncoder, ConvEncoder, TransformerEncoder)):
                reasons.append(f"encoder {type(enc).__name__} has no incremental step here")
        fusion = model.fusion
        self._pointwise = model.config.fusion in POINTWISE_FUSIONS or bool(getattr(fusion, "is_pointwise", False))
        self._xattn = model.config.fusion == "cross_attention" and bool(getattr(fusion, "is_causal", False))
        if not (self._pointwise or self._xattn):
            reasons.append(f"fusion {model.config.fusion!r} is causal but not known to be pointwise")
        if getattr(fusion, "output_level", "representation") != "representation":
            reasons.append(f"fusion {model.config.fusion!r} has output_level {fusion.output_level!r}")
        self.reason = "; ".join(reasons)
        self.incremental = not reasons
        self._pe: Tensor | None = None
        self._last_embeddings: dict[str, Tensor] = {}

    # ------------------------------------------------------------------------------------------------ state
    def init_state(self, batch_size: int = 1) -> State:
        """The state before the first step, for ``batch_size`` streams."""
        b, h, dev, dt = batch_size, self.hidden, self.device, self.dtype
        s: State = {"pos": torch.zeros(b, dtype=torch.long, device=dev)}
        if not self.incremental:
            for m in self.modalities:
                s[f"cache.x.{m}"] = torch.zeros(b, 0, self.config.modality_dims[m], dtype=dt, device=dev)
                s[f"valid.x.{m}"] = torch.zeros(b, 0, dtype=torch.bool, device=dev)
                s[f"cache.m.{m}"] = torch.zeros(b, 0, dtype=torch.bool, device=dev)
                s[f"valid.m.{m}"] = torch.zeros(b, 0, dtype=torch.bool, device=dev)
            return s
        for m in self.modalities:
            enc: Any = self.model.encoders[m]
            if isinstance(enc, RNNEncoder):
                layers = enc.rnn.num_layers
                s[f"rnn.h.{m}"] = torch.zeros(b, layers, h, dtype=dt, device=dev)
                if isinstance(enc.rnn, nn.LSTM):
                    s[f"rnn.c.{m}"] = torch.zeros(b, layers, h, dtype=dt, device=dev)
            elif isinstance(enc, ConvEncoder):
                k = int(_any(enc.convs[0]).kernel_size[0])
                for i in range(len(enc.convs)):
                    s[f"conv.{m}.{i}"] = torch.zeros(b, k - 1, h, dtype=dt, device=dev)
            elif isinstance(enc, TransformerEncoder):
                for i, layer in enumerate(_any(enc.layers)):
                    heads, hd = layer.attn.num_heads, layer.attn.head_dim
                    for kv in ("k", "v"):
                        s[f"cache.tf.{m}.{i}.{kv}"] = torch.zeros(b, 0, heads, hd, dtype=dt, device=dev)
                        s[f"valid.tf.{m}.{i}.{kv}"] = torch.zeros(b, 0, dtype=torch.bool, device=dev)
        if self._xattn:
            n = len(self.modalities)
            fusion: Any = self.model.fusion
            for i, attn in enumerate(fusion.attn):
                for kv in ("k", "v"):
                    s[f"cache.xa.{i}.{kv}"] = torch.zeros(b, 0, n, attn.num_heads, attn.head_dim, dtype=dt, device=dev)
                    s[f"valid.xa.{i}.{kv}"] = torch.zeros(b, 0, n, dtype=torch.bool, device=dev)
        return s

    # ------------------------------------------------------------------------------------------------- step
    @torch.inference_mode()
    def step(self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor], state: State) -> tuple[Tensor, State]:
        """Advance every stream of the batch by one step.

        Args:
            inputs: Modality -> ``[B, D_m]`` normalised features of this step.
            masks: Modality -> bool ``[B]`` (True = present).
            state: From :meth:`init_state` or the previous step (not modified; a new dict is returned).

        Returns:
            ``(outputs [B, C], new state)``: the model's output at this step (step labels) or for the prefix
            ending here (sample labels, ``pooling="last"``).

        Raises:
            StreamError: missing or unexpected modalities, or wrong shapes.
        """
        self._check(inputs, masks)
        state = dict(state)
        if not self.incremental:
            return self._windowed(inputs, masks, state)
        out, _ = self._incremental(inputs, masks, state)
        return out, state

    @torch.inference_mode()
    def step_with_embeddings(
        self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor], state: State
    ) -> tuple[Tensor, dict[str, Tensor], State]:
        """As :meth:`step`, and also return each modality's encoded step ``[B, H]`` (zero where missing).

        In windowed recompute the embeddings are the encoder outputs of the last step of the window.
        """
        self._check(inputs, masks)
        state = dict(state)
        if not self.incremental:
            out, state = self._windowed(inputs, masks, state)
            return out, self._last_embeddings, state
        out, emb = self._incremental(inputs, masks, state)
        return out, emb, state

    def _check(self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> None:
        for what, given in (("inputs", inputs), ("masks", masks)):
            if set(given) != set(self.modalities):
                raise StreamError(
                    f"The {what!r} of IncrementalModel.step must have exactly the modalities {list(self.modalities)}; "
                    f"got {sorted(given)}."
                )
        b = masks[self.modalities[0]].shape[0]
        for m in self.modalities:
            d = self.config.modality_dims[m]
            if inputs[m].shape != (b, d) or masks[m].shape != (b,) or masks[m].dtype != torch.bool:
                raise StreamError(
                    f"Modality {m!r} of IncrementalModel.step needs inputs [B, {d}] and a bool mask [B] with B = {b}. "
                    f"Got {list(inputs[m].shape)} and {masks[m].dtype} {list(masks[m].shape)}."
                )

    def _incremental(
        self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor], s: State
    ) -> tuple[Tensor, dict[str, Tensor]]:
        model = self.model
        pos = s["pos"]  # [B]
        encoded: dict[str, Tensor] = {}
        step_masks: dict[str, Tensor] = {}
        for m in self.modalities:
            present = masks[m].unsqueeze(1)  # [B, 1]
            x = zero_missing(inputs[m].to(self.dtype).unsqueeze(1), present)  # [B, 1, D_m]
            h = zero_missing(model.projections[m](x), present)  # [B, 1, H]
            h = self._encode_step(m, h, present, pos, s)  # [B, 1, H]
            encoded[m] = zero_missing(h, present)
            step_masks[m] = present
        if self._pointwise:
            fused = model.fuse(encoded, step_masks)  # [B, 1, H]
        else:
            fused = model.fusion_dropout(self._xattn_step(encoded, step_masks, s))  # [B, 1, H]
        ones = torch.ones(fused.shape[0], 1, dtype=torch.bool, device=fused.device)
        out = model.head(fused, ones)  # [B, 1, C] (step) or [B, C] (sample, last-step pooling)
        s["pos"] = pos + 1
        return (out[:, 0] if out.dim() == 3 else out), {m: e[:, 0] for m, e in encoded.items()}

    def _encode_step(self, m: str, h: Tensor, present: Tensor, pos: Tensor, s: State) -> Tensor:
        enc: Any = self.model.encoders[m]
        if isinstance(enc, IdentityEncoder):
            return h
        if isinstance(enc, RNNEncoder):
            hx = s[f"rnn.h.{m}"].transpose(0, 1).contiguous()  # [layers, B, H]
            if isinstance(enc.rnn, nn.LSTM):
                cx = s[f"rnn.c.{m}"].transpose(0, 1).contiguous()
                ctx, (hn, cn) = enc.rnn(h, (hx, cx))  # [B, 1, H]
                s[f"rnn.c.{m}"] = cn.transpose(0, 1)
            else:
                ctx, hn = enc.rnn(h, hx)  # [B, 1, H]
            s[f"rnn.h.{m}"] = hn.transpose(0, 1)  # [B, layers, H]
            ctx = enc.dropout(ctx)
            return enc.norm(h + ctx if enc.residual else ctx)
        if isinstance(enc, ConvEncoder):
            x = h
            for i, conv in enumerate(enc.convs):
                window = torch.cat([s[f"conv.{m}.{i}"], x], dim=1)  # [B, k, H]
                s[f"conv.{m}.{i}"] = window[:, 1:]
                y = conv(window.transpose(1, 2))  # [B, H, 1]
                x = x + enc.dropout(enc.act(y)).transpose(1, 2)  # [B, 1, H]
            return enc.norm(x)
        assert isinstance(enc, TransformerEncoder)
        x = h + self._positions(pos, h.shape[-1]).unsqueeze(1)  # [B, 1, H]
        for i, layer in enumerate(_any(enc.layers)):
            a: Any = layer.attn
            b = x.shape[0]
            y = layer.norm_q(x)
            q = a.q_proj(y).view(b, 1, a.num_heads, a.head_dim)  # [B, 1, heads, hd]
            k_new = a.k_proj(y).view(b, 1, a.num_heads, a.head_dim)
            v_new = a.v_proj(y).view(b, 1, a.num_heads, a.head_dim)
            k, ok = _append(s, f"tf.{m}.{i}.k", k_new, present, self.max_history)  # [B, L, heads, hd], [B, L]
            v, _ = _append(s, f"tf.{m}.{i}.v", v_new, present, self.max_history)
            scores = torch.einsum("bqhd,blhd->bhql", q, k) / math.sqrt(a.head_dim)  # [B, heads, 1, L]
            w = masked_softmax(scores, ok[:, None, None, :], dim=-1)  # [B, heads, 1, L]
            att = torch.einsum("bhql,blhd->bqhd", a.dropout(w), v).reshape(b, 1, -1)  # [B, 1, H]
            # as AttentionBlock: a query with no present key so far gets a zero attention update, not the bias
            x = x + layer.dropout(zero_missing(a.out_proj(att), ok.any(dim=-1, keepdim=True)))  # [B, 1, H]
            x = x + layer.dropout(layer.ffn(layer.norm_ff(x)))
        return enc.norm(x)

    def _positions(self, pos: Tensor, dim: int) -> Tensor:
        need = int(pos.max().item()) + 1
        if self._pe is None or self._pe.shape[0] < need:
            size = max(need, 2 * (0 if self._pe is None else self._pe.shape[0]), 256)
            self._pe = _sinusoidal_positions(size, dim, self.device, self.dtype)  # [size, H]
        return self._pe[pos]  # [B, H]

    def _xattn_step(self, encoded: Mapping[str, Tensor], masks: Mapping[str, Tensor], s: State) -> Tensor:
        f: Any = self.model.fusion
        n = len(self.modalities)
        hs = [  # M x [B, 1, hidden]
            proj(encoded[m]) + f.modality_embedding[i]
            for i, (proj, m) in enumerate(zip(f.in_proj, self.modalities, strict=True))
        ]
        keys = torch.cat(hs, dim=1)  # [B, M, hidden]
        present = torch.cat([masks[m] for m in self.modalities], dim=1)  # [B, M]
        b = keys.shape[0]
        parts = []
        for i in range(n):
            a = f.attn[i]
            other = present.clone()
            other[:, i] = False  # a modality never attends to itself
            k_new = a.k_proj(keys).view(b, 1, n, a.num_heads, a.head_dim)  # [B, 1, M, heads, hd]
            v_new = a.v_proj(keys).view(b, 1, n, a.num_heads, a.head_dim)
            k, ok = _append(s, f"xa.{i}.k", k_new, other.unsqueeze(1), self.max_history)  # [B, L, M, heads, hd]
            v, _ = _append(s, f"xa.{i}.v", v_new, other.unsqueeze(1), self.max_history)
            kl = k.flatten(1, 2)  # [B, L*M, heads, hd]
            vl = v.flatten(1, 2)
            q = a.q_proj(hs[i]).view(b, 1, a.num_heads, a.head_dim)  # [B, 1, heads, hd]
            scores = torch.einsum("bqhd,blhd->bhql", q, kl) / math.sqrt(a.head_dim)  # [B, heads, 1, L*M]
            w = masked_softmax(scores, ok.flatten(1, 2)[:, None, None, :], dim=-1)
            att = torch.einsum("bhql,blhd->bqhd", a.dropout(w), vl).reshape(b, 1, -1)  # [B, 1, hidden]
            parts.append(f.norms[i](hs[i] + f.dropout(a.out_proj(att))))  # [B, 1, hidden]
        z = torch.stack(parts, dim=2)  # [B, 1, M, hidden]
        pooled = masked_mean(z, present.unsqueeze(1), dim=2)  # [B, 1, hidden]
        return f.out_proj(pooled)  # [B, 1, H]

    # ------------------------------------------------------------------------------------ windowed recompute
    def _windowed(self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor], s: State) -> tuple[Tensor, State]:
        window = self.max_history or 4096
        ok = None
        for m in self.modalities:
            b = masks[m].shape[0]
            ones = torch.ones(b, 1, dtype=torch.bool, device=self.device)
            _append(s, f"x.{m}", inputs[m].to(self.dtype).unsqueeze(1), ones, window)
            _, ok = _append(s, f"m.{m}", masks[m].unsqueeze(1), ones, window)
        assert ok is not None
        # Right-aligned caches -> left-aligned batch (real steps first), as the model expects.
        lengths = ok.sum(dim=1)  # [B]
        t = ok.shape[1]
        shift = (torch.arange(t, device=self.device).unsqueeze(0) + (t - lengths).unsqueeze(1)) % t  # [B, T]
        padding = torch.arange(t, device=self.device).unsqueeze(0) < lengths.unsqueeze(1)  # [B, T]

        def left(x: Tensor) -> Tensor:
            idx = shift.view(*shift.shape, *([1] * (x.dim() - 2))).expand_as(x)
            return torch.gather(x, 1, idx)

        batch_inputs = {m: left(s[f"cache.x.{m}"]) for m in self.modalities}  # [B, T, D_m]
        batch_masks = {m: left(s[f"cache.m.{m}"]) & padding for m in self.modalities}  # [B, T]
        masks_all = {m: batch_masks[m] & padding for m in self.modalities}
        encoded = self.model.encode(batch_inputs, masks_all, padding)
        out = self.model.head(self.model.fuse(encoded, masks_all), padding)
        last = (lengths - 1).clamp_min(0)
        rows = torch.arange(out.shape[0], device=self.device)
        self._last_embeddings = {m: e[rows, last] for m, e in encoded.items()}
        s["pos"] = s["pos"] + 1
        return (out[rows, last] if out.dim() == 3 else out), s

    # --------------------------------------------------------------------------------------------- offline
    @torch.no_grad()
    def run_offline(self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> Tensor:
        """The model's offline output for every prefix of one recording, ``{m: [T, D_m]}`` -> ``[T, C]``.

        For step labels this is one forward pass; for sample labels (last-step pooling) it is the pooled output
        of each prefix, computed by running the step-level stages once and the head on every step.
        """
        t = masks[self.modalities[0]].shape[0]
        padding = torch.ones(1, t, dtype=torch.bool, device=self.device)
        x = {m: inputs[m].to(self.dtype).unsqueeze(0) for m in self.modalities}  # [1, T, D_m]
        mk = {m: masks[m].unsqueeze(0) & padding for m in self.modalities}
        if self.step_level:
            return self.model(Batch(inputs=x, masks=mk, padding_mask=padding))[0]  # [T, C]
        fused = self.model.fuse(self.model.encode(x, mk, padding), mk)  # [1, T, H]
        return self.model.head_mlp(fused[0])  # [T, C]: last-step pooling of each prefix is its last step
