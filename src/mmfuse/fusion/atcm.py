"""ATCM fusion: attention over time with cross-modal local context (a short window) and global context."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmfuse.fusion._attention import AttentionFusion
from mmfuse.fusion._checks import check_int
from mmfuse.fusion.registry import register_fusion
from mmfuse.layers.attention import MaskedMultiheadAttention
from mmfuse.layers.encoders import TransformerEncoder
from mmfuse.layers.masking import masked_mean

__all__ = ["ATCMFusion"]


@register_fusion("atcm")
class ATCMFusion(AttentionFusion):
    """Attention over time with cross-modal local and global context.

    Stage 1, local cross-modal attention. Each modality is projected ``D_m -> hidden`` and tagged with a
    learned modality embedding (tokens ``[B, T, M, hidden]``). At step ``t`` a fused query (a learned query
    vector plus the mean of the tokens of the modalities present at ``t``) attends to the tokens of *all*
    modalities at steps ``t - window .. t + window`` (``t - window .. t`` when ``causal``), each tagged with a
    learned embedding of its offset: ``M * (2 * window + 1)`` keys per step, gathered with one ``unfold`` over
    a zero-padded sequence (no loop over steps). Only present tokens are keys; a step with none in its window
    gets a zero attention output. ``local = query + attention``. This stage sees fast cross-modal patterns.

    Stage 2, global context. A pre-LayerNorm transformer encoder (:class:`~mmfuse.layers.TransformerEncoder`,
    ``global_layers`` layers, sinusoidal positions) runs over the sequence of fused step tokens ``local``;
    its keys are the steps where any modality is present (and steps ``<= t`` when ``causal``).
    ``global_layers=0`` disables it (the global term is then zero).

    Output: ``Linear(LayerNorm(local + global))`` to ``out_dim``. Missing modalities contribute nothing: their
    tokens are never keys and never enter a query.

    Args:
        modality_dims: Modality name -> ``D_m``.
        out_dim: Output size.
        hidden: Token width (default ``out_dim``).
        num_heads: Attention heads of both stages; must divide ``hidden``. Default: the largest of 4, 2, 1
            that does.
        window: Half-width ``w`` of the local window in steps (>= 0; 0 = only the current step).
        global_layers: Layers of the global encoder (>= 0).
        causal: Local window ``[t - w, t]`` and causal global attention; makes this instance causal.
        dropout: Dropout on attention weights and residual branches of both stages.

    Raises:
        ValueError: for a negative ``window`` or ``global_layers``, a non-positive ``hidden``, a ``num_heads``
            that does not divide ``hidden``, a dropout outside ``[0, 1)`` or a non-bool ``causal``.

    Shapes:
        ``inputs[m]`` ``[B, T, D_m]`` -> tokens ``[B, T, M, hidden]`` -> windows ``[B, T, M, K, hidden]``
        (``K = 2w + 1``, or ``w + 1`` when causal) -> ``local`` ``[B, T, hidden]`` -> ``global``
        ``[B, T, hidden]`` -> ``[B, T, out_dim]``.
        ``forward_with_weights`` returns the local attention weights (mean over heads) as
        ``[B, T, M, 2w + 1]``: the mass step ``t`` puts on modality ``m`` (canonical order) at offset
        ``k - w`` (``k`` = 0 .. 2w). They sum to 1 over the present keys of the window, are 0 at missing,
        out-of-sequence and (when causal) future keys, and are all 0 where the window holds no present key.

    Example:
        >>> fusion = ATCMFusion({"text": 5, "audio": 3}, out_dim=8, window=1)
        >>> x = {"audio": torch.randn(2, 6, 3), "text": torch.randn(2, 6, 5)}
        >>> m = {k: torch.ones(2, 6, dtype=torch.bool) for k in x}
        >>> out, w = fusion.forward_with_weights(x, m)
        >>> out.shape, w.shape
        (torch.Size([2, 6, 8]), torch.Size([2, 6, 2, 3]))
        >>> w = w.detach()
        >>> float(w[0, 0, :, 0].sum())  # step 0 has no step -1: no mass on offset -1
        0.0
        >>> round(float(w[0, 0].sum()), 4)  # all of it is on offsets 0 and +1
        1.0
    """

    def __init__(
        self,
        modality_dims: Mapping[str, int],
        out_dim: int,
        *,
        hidden: int | None = None,
        num_heads: int | None = None,
        window: int = 2,
        global_layers: int = 1,
        causal: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(modality_dims, out_dim, hidden=hidden, num_heads=num_heads, causal=causal, dropout=dropout)
        owner = type(self).__name__
        self.window = check_int(owner, "window", window, 0)
        global_layers = check_int(owner, "global_layers", global_layers, 0)
        self.num_offsets = window + 1 if causal else 2 * window + 1  # K, keys per modality per step
        self.offset_embedding = nn.Parameter(torch.randn(self.num_offsets, self.hidden) * 0.02)
        self.query = nn.Parameter(torch.randn(self.hidden) * 0.02)
        self.local_attn = MaskedMultiheadAttention(self.hidden, self.num_heads, dropout=dropout, zero_unattended=True)
        self.global_encoder = (
            TransformerEncoder(
                self.hidden, num_layers=global_layers, num_heads=self.num_heads, causal=causal, dropout=dropout
            )
            if global_layers
            else None
        )
        self.out_norm = nn.LayerNorm(self.hidden)
        self.out_proj = nn.Linear(self.hidden, out_dim)

    def extra_repr(self) -> str:
        """Sizes, heads, causality and window, shown in ``repr``."""
        return f"{super().extra_repr()}, window={self.window}"

    def local_stage(self, values: list[Tensor], masks: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Stage 1 alone: windowed cross-modal attention from each step's fused query.

        Args:
            values: ``M`` tensors ``[B, T, D_m]`` in canonical order, zero where missing (as :meth:`fuse`
                receives them; see :meth:`~mmfuse.fusion.Fusion.prepare`).
            masks: ``M`` bool tensors ``[B, T]``.

        Returns:
            ``(local [B, T, hidden], weights [B, T, M, 2w + 1])`` (weights as in ``forward_with_weights``).
        """
        b, t = masks[0].shape
        n, k, w, h = self.num_modalities, self.num_offsets, self.window, self.hidden
        tokens = torch.stack([p(x) for p, x in zip(self.in_proj, values, strict=True)], dim=2)  # [B, T, M, H]
        tokens = tokens + self.modality_embedding  # [B, T, M, H]; as embed() does, summed in one broadcast
        present = torch.stack(masks, dim=2)  # [B, T, M]
        query = self.query + masked_mean(tokens, present, dim=2)  # [B, T, H]

        right = 0 if self.is_causal else w
        padded = torch.cat([tokens.new_zeros(b, w, n, h), tokens, tokens.new_zeros(b, right, n, h)], dim=1)
        padded_present = torch.cat([present.new_zeros(b, w, n), present, present.new_zeros(b, right, n)], dim=1)
        # padded: [B, T + w + right, M, H]; slot j of step t's window holds step t - w + j, at t + j once padded.
        index = torch.arange(t, device=present.device).unsqueeze(1) + torch.arange(k, device=present.device)  # [T, K]
        keys = padded[:, index].transpose(2, 3)  # [B, T, K, M, H] -> [B, T, M, K, H]
        keys = keys + self.offset_embedding  # [B, T, M, K, H]
        key_present = padded_present[:, index].transpose(2, 3)  # [B, T, M, K]

        keys = keys.reshape(b * t, n * k, h)  # [B*T, M*K, H]
        allowed = key_present.reshape(b * t, 1, n * k)  # [B*T, 1, M*K]
        attended, weights = self.local_attn(query.reshape(b * t, 1, h), keys, keys, allowed)  # [B*T, 1, H]
        local = query + self.dropout(attended.reshape(b, t, h))  # [B, T, H]; zero update without a present key

        mass = weights.mean(dim=1).reshape(b, t, n, k)  # [B, T, M, K]
        if self.is_causal and w:
            mass = torch.cat([mass, mass.new_zeros(b, t, n, w)], dim=-1)  # [B, T, M, 2w + 1], future = 0
        return local, mass

    def fuse(self, values: list[Tensor], masks: list[Tensor]) -> tuple[Tensor, Tensor | None]:
        """Local cross-modal attention, then global attention over the fused tokens (see the class docstring)."""
        local, mass = self.local_stage(values, masks)  # [B, T, H], [B, T, M, 2w + 1]
        if self.global_encoder is None:
            context = torch.zeros_like(local)  # [B, T, H]
        else:
            any_present = torch.stack(masks, dim=-1).any(dim=-1)  # [B, T]
            context = self.global_encoder(local, torch.ones_like(any_present), any_present)  # [B, T, H]
        return self.out_proj(self.out_norm(local + context)), mass  # [B, T, out_dim], [B, T, M, 2w + 1]
