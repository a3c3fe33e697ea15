"""Multimodal Transformer (MulT) fusion: directional cross-modal transformers between every ordered pair.

After Tsai et al., "Multimodal Transformer for Unaligned Multimodal Language Sequences", ACL 2019. Unlike the
public reference implementations (MMSA, MultiBench), the attention here never looks at padding or at missing
steps: every attention takes the source's availability mask as its key-padding mask, and a query with no
present key receives a zero attention output instead of NaN.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmfuse.fusion._attention import AttentionFusion
from mmfuse.fusion._checks import check_int, check_probability
from mmfuse.fusion.registry import register_fusion
from mmfuse.layers.attention import AttentionBlock
from mmfuse.layers.encoders import _sinusoidal_positions
from mmfuse.layers.masking import masked_mean

__all__ = ["MulTFusion"]


class _Stack(nn.Module):
    """``num_blocks`` blocks then a LayerNorm; also returns the summed L2 norm of the attention outputs per step."""

    def __init__(
        self, dim: int, num_heads: int, num_blocks: int, *, cross: bool, dropout: float, attn_dropout: float
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            AttentionBlock(dim, num_heads, cross=cross, dropout=dropout, attn_dropout=attn_dropout)
            for _ in range(num_blocks)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, allowed: Tensor, source: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x`` ``[B, T, dim]`` -> (``[B, T, dim]``, attention-output norm ``[B, T]``, detached)."""
        update = torch.zeros_like(x[..., 0]).detach()  # [B, T]
        for block in self.blocks:
            x, attended = block(x, allowed, source)  # [B, T, dim] x 2
            update = update + attended.detach().norm(dim=-1)  # [B, T]
        return self.norm(x), update


@register_fusion("mult")
class MulTFusion(AttentionFusion):
    """Multimodal Transformer: each modality attends over time to every other one, then over itself.

    1. Per modality a temporal 1-D convolution (``kernel_size`` steps, left-padded when ``causal``) projects
       ``D_m -> hidden``; sinusoidal positions are added.
    2. For every ordered pair (source ``s`` -> target ``g``), a stack of ``layers`` cross-modal blocks
       (pre-LayerNorm; the target's steps query the source's steps, then a feed-forward), ending in a
       LayerNorm. Keys are only the source's present steps (and steps ``<= t`` when ``causal``); a query with
       no such key gets a zero attention output. ``M * (M - 1)`` stacks in all, in canonical order.
    3. Per target, the outputs of its ``M - 1`` stacks are concatenated (width ``W = (M - 1) * hidden``) and
       passed through ``self_layers`` self-attention blocks over time whose keys are the target's own present
       steps, then a LayerNorm.
    4. At each step the targets present at that step are averaged and projected ``W -> out_dim``. A step where
       every modality is missing gives the projection of the zero vector (finite).

    With a single modality there are no pairs: step 3 runs on the modality's own projection (``W = hidden``).

    Args:
        modality_dims: Modality name -> ``D_m``.
        out_dim: Output size.
        hidden: Width of every cross-modal stream. The default is small on purpose (the paper used 30 on
            CMU-MOSI): the self-attention stage runs at ``(M - 1) * hidden`` and dominates the cost.
        num_heads: Attention heads; must divide ``hidden``. Default: the largest of 4, 2, 1 that does.
        layers: Cross-modal blocks per ordered pair (>= 1).
        self_layers: Self-attention blocks per target over the concatenated streams (>= 0).
        kernel_size: Odd width in steps of the input convolutions (1 = pointwise projection).
        causal: Attend only to steps ``<= t`` (and left-pad the convolutions); makes this instance causal.
        dropout: Dropout on residual branches, inside the feed-forwards and before the output projection.
        attn_dropout: Dropout on attention weights.

    Raises:
        ValueError: for a non-positive ``hidden``/``layers``/``kernel_size``, an even ``kernel_size``, a
            negative ``self_layers``, a ``num_heads`` that does not divide ``hidden``, a dropout outside
            ``[0, 1)`` or a non-bool ``causal``.

    Shapes:
        ``inputs[m]`` ``[B, T, D_m]`` -> streams ``M x [B, T, hidden]`` -> per-target concatenation
        ``[B, T, W]`` -> stacked ``[B, T, M, W]`` -> pooled over present modalities ``[B, T, W]`` ->
        ``[B, T, out_dim]``.
        ``forward_with_weights`` returns ``[B, T, M_target, M_source]`` (canonical order): the share of target
        ``g``'s cross-modal attention update at step ``t`` that comes from source ``s``, i.e. the L2 norm of
        the attention output of the ``s -> g`` stack at ``t`` (summed over its layers) divided by the sum over
        sources. Rows sum to 1 where some source has a key to attend to, are 0 where none has, the diagonal is
        0, and a source missing everywhere gets 0.

    Example:
        >>> fusion = MulTFusion({"text": 5, "audio": 3, "video": 4}, out_dim=8, causal=True)
        >>> len(fusion.pairs), fusion.is_causal
        (6, True)
        >>> x = {"audio": torch.randn(2, 6, 3), "text": torch.randn(2, 6, 5), "video": torch.randn(2, 6, 4)}
        >>> m = {k: torch.ones(2, 6, dtype=torch.bool) for k in x}
        >>> out, w = fusion.forward_with_weights(x, m)
        >>> out.shape, w.shape
        (torch.Size([2, 6, 8]), torch.Size([2, 6, 3, 3]))
        >>> bool(torch.allclose(w.sum(-1), torch.ones(2, 6, 3)))  # every target's shares sum to 1
        True
    """

    def __init__(
        self,
        modality_dims: Mapping[str, int],
        out_dim: int,
        *,
        hidden: int = 32,
        num_heads: int | None = None,
        layers: int = 1,
        self_layers: int = 1,
        kernel_size: int = 1,
        causal: bool = False,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
    ) -> None:
        super().__init__(
            modality_dims,
            out_dim,
            hidden=hidden,
            num_heads=num_heads,
            causal=causal,
            dropout=dropout,
            modality_tokens=False,
        )
        owner = type(self).__name__
        layers = check_int(owner, "layers", layers, 1)
        self_layers = check_int(owner, "self_layers", self_layers, 0)
        self.kernel_size = check_int(owner, "kernel_size", kernel_size, 1)
        if kernel_size % 2 == 0:
            raise ValueError(f"The 'kernel_size' parameter of {owner} must be odd. Got {kernel_size} instead.")
        drop = {"dropout": float(dropout), "attn_dropout": check_probability(owner, "attn_dropout", attn_dropout)}

        n = self.num_modalities
        self.pad = (kernel_size - 1, 0) if causal else ((kernel_size - 1) // 2, (kernel_size - 1) // 2)
        # (source, target) modality indices of the cross-modal stacks, grouped by target.
        self.pairs: tuple[tuple[int, int], ...] = tuple((s, g) for g in range(n) for s in range(n) if s != g)
        self.width = self.hidden * max(n - 1, 1)

        self.in_proj = nn.ModuleList(nn.Conv1d(d, self.hidden, kernel_size) for d in self.modality_dims.values())
        self.cross = nn.ModuleList(_Stack(self.hidden, self.num_heads, layers, cross=True, **drop) for _ in self.pairs)
        self.self_attn = nn.ModuleList(
            _Stack(self.width, self.num_heads, self_layers, cross=False, **drop) for _ in range(n)
        )
        self.out_proj = nn.Linear(self.width, out_dim)

    def extra_repr(self) -> str:
        """Sizes, heads, causality and pairs, shown in ``repr``."""
        return f"{super().extra_repr()}, pairs={len(self.pairs)}"

    def embed(self, values: list[Tensor]) -> list[Tensor]:
        """Tokens as in :meth:`AttentionFusion.embed`, from each modality's temporal convolution plus positions."""
        t = values[0].shape[1]
        pos = _sinusoidal_positions(t, self.hidden, values[0].device, values[0].dtype)  # [T, hidden]
        streams = []
        for conv, x in zip(self.in_proj, values, strict=True):
            h = conv(nn.functional.pad(x.transpose(1, 2), self.pad))  # [B, hidden, T]
            streams.append(h.transpose(1, 2) + pos)  # [B, T, hidden]
        return streams

    def fuse(self, values: list[Tensor], masks: list[Tensor]) -> tuple[Tensor, Tensor | None]:
        """Project, cross-attend every ordered pair, self-attend per target, pool (see the class docstring)."""
        n = self.num_modalities
        t = masks[0].shape[1]
        device, dtype = values[0].device, values[0].dtype
        streams = self.embed(values)  # M x [B, T, hidden]
        allowed = [m.unsqueeze(1) for m in masks]  # M x [B, 1, T]: key-padding masks
        if self.is_causal:
            steps = torch.arange(t, device=device)
            past = steps.unsqueeze(0) <= steps.unsqueeze(1)  # [Tq, Tk]
            allowed = [a & past.unsqueeze(0) for a in allowed]  # M x [B, T, T]

        cross_out: list[list[Tensor]] = [[] for _ in range(n)]  # per target, M - 1 x [B, T, hidden]
        update = [[torch.zeros_like(masks[0], dtype=dtype) for _ in range(n)] for _ in range(n)]  # [g][s] [B, T]
        for stack, (s, g) in zip(self.cross, self.pairs, strict=True):
            z, update[g][s] = stack(streams[g], allowed[s], streams[s])  # [B, T, hidden], [B, T]
            cross_out[g].append(z)

        targets = []
        for g, stack in enumerate(self.self_attn):
            z = torch.cat(cross_out[g], dim=-1) if n > 1 else streams[g]  # [B, T, W]
            targets.append(stack(z, allowed[g])[0])  # [B, T, W]
        stacked = torch.stack(targets, dim=2)  # [B, T, M, W]
        pooled = masked_mean(stacked, torch.stack(masks, dim=-1), dim=2)  # [B, T, W]
        fused = self.out_proj(self.dropout(pooled))  # [B, T, out_dim]

        raw = torch.stack([torch.stack(row, dim=-1) for row in update], dim=2)  # [B, T, M_target, M_source]
        total = raw.sum(dim=-1, keepdim=True)  # [B, T, M, 1]
        share = torch.where(total > 0, raw / total.clamp_min(torch.finfo(dtype).tiny), torch.zeros((), dtype=dtype))
        return fused, share
