"""Attention-bottleneck fusion: modalities exchange information only through a few shared fusion tokens.

After Nagrani et al. (2021), "Attention Bottlenecks for Multimodal Fusion" (MBT, NeurIPS). Pairwise
cross-modal attention lets every step of every modality attend to every step of every other modality, which
costs ``O(M² T² H)`` and lets each modality copy whatever it likes from the others. Here each modality runs its
own small transformer over ``[its present steps ; K fusion tokens]``; the fusion tokens each modality produced
are averaged into the next layer's tokens, so all cross-modal exchange is squeezed through ``K`` vectors per
sequence and costs ``O(M T K H_b)`` on top of the per-modality self-attention ``O(M T² H_b)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mmfuse.fusion._checks import check_int, check_probability
from mmfuse.fusion.base import Fusion
from mmfuse.fusion.registry import register_fusion
from mmfuse.layers.attention import resolve_num_heads
from mmfuse.layers.dropout import Dropout, dropout
from mmfuse.layers.masking import masked_mean, masked_softmax

__all__ = ["BottleneckFusion"]


class _BottleneckLayer(nn.Module):
    """One pre-norm transformer layer of one modality over ``[its T steps ; the K fusion tokens]``.

    The step queries use the fused ``scaled_dot_product_attention`` kernel; the ``K`` token queries are
    computed explicitly (a ``K x (T+K)`` score matrix, cheap) so their attention weights can be inspected.
    Every query can see the tokens, so no row of the softmax is empty.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), Dropout(dropout), nn.Linear(2 * dim, dim))
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor, allowed: Tensor, steps: int) -> tuple[Tensor, Tensor]:
        """Update steps and tokens.

        Args:
            x: ``[B, T+K, H_b]``, the modality's steps then the fusion tokens.
            allowed: Bool ``[B, 1, 1, T+K]``, the keys every query may attend to.
            steps: ``T``.

        Returns:
            ``[B, T+K, H_b]`` and the tokens' attention weights ``[B, heads, K, T+K]``.
        """
        b, length, dim = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, length, 3, self.num_heads, self.head_dim)  # [B, T+K, 3, heads, hd]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, T+K, hd]
        # The attention dropout follows the block's Dropout module, so MC dropout (which switches on only the
        # dropout modules of an evaluating model) samples the attention weights too.
        p = self.dropout.p if self.dropout.training else 0.0
        from_steps = F.scaled_dot_product_attention(q[:, :, :steps], k, v, attn_mask=allowed, dropout_p=p)
        scores = q[:, :, steps:] @ k.transpose(-2, -1) * self.head_dim**-0.5  # [B, heads, K, T+K]
        weights = masked_softmax(scores, allowed, dim=-1)  # [B, heads, K, T+K]
        from_tokens = dropout(weights, p) @ v  # [B, heads, K, hd]
        attended = torch.cat([from_steps, from_tokens], dim=2).transpose(1, 2).reshape(b, length, dim)  # [B, T+K, H_b]
        x = x + self.dropout(self.proj(attended))
        return x + self.dropout(self.ffn(self.norm2(x))), weights


@register_fusion("bottleneck")
class BottleneckFusion(Fusion):
    """MBT-style fusion: per-modality transformers that share only ``K`` learned fusion tokens.

    Each modality is projected to the bottleneck width ``H_b`` (``bottleneck_dim``). ``K`` learned fusion
    tokens start the exchange. In every layer, modality ``m`` runs a pre-norm transformer layer (its own
    weights: ``x + attention``, then ``x + feed-forward``) over the sequence ``[its steps ; the fusion tokens]``;
    keys are its *present* steps and the tokens (the availability mask is the key-padding mask), so the tokens
    read modality ``m`` and its steps read the tokens. The ``M`` updated token sets are averaged over the
    modalities present at some step of the sequence, giving the next layer's fusion tokens (a sequence with no
    present modality keeps its tokens). There is no attention from one modality to another: whatever modality
    ``a`` learns about modality ``b`` passed through the tokens.

    Output per step: ``Linear(mean_m LayerNorm(x_m))`` over the modalities present at the step, plus a residual
    path ``mean_m Linear_m(input_m)`` over the same modalities that bypasses the narrow bottleneck. A step
    where every modality is missing gives the output projection's bias (finite).

    Notes:
        * With ``layers=1`` the tokens the modalities read are the learned initial ones, so modalities only
          meet in the final mean (late fusion); each extra layer adds one round of exchange.
        * Not causal: the tokens summarise the whole sequence, so the output at step ``t`` depends on later
          steps. Restricting the tokens to a prefix would need one token set per step, which defeats the
          bottleneck; there is therefore no ``causal`` option (``is_causal`` is False).

    Args:
        modality_dims: Modality name -> ``D_m``.
        out_dim: Output size.
        bottleneck_dim: Width ``H_b`` of the per-modality transformers and of the fusion tokens.
        num_tokens: Number ``K`` of fusion tokens.
        layers: Number of stacked layers (rounds of exchange through the tokens, see Notes).
        num_heads: Attention heads; must divide ``bottleneck_dim``. Default: one per 16 features when
            ``bottleneck_dim`` is a multiple of 16 (2 for the default width), else 1.
        dropout: Dropout on attention weights, residual branches and inside the feed-forward blocks.

    Raises:
        ValueError: if a size is not a positive integer, ``num_heads`` does not divide ``bottleneck_dim`` or
            ``dropout`` is not in ``[0, 1)``.

    Shapes:
        ``inputs[m]`` ``[B, T, D_m]`` -> per modality ``[B, T+K, H_b]`` (steps then tokens) -> fusion tokens
        ``[B, K, H_b]`` -> ``[B, T, out_dim]``.
        ``forward_with_weights`` returns ``[B, T, M]``: how much the fusion tokens read from step ``t`` of
        modality ``m``, i.e. the attention mass the token queries put on that step, averaged over heads,
        tokens and layers. It is 0 where the modality is missing, and for each modality it sums over ``T`` to
        at most 1 (the rest is the tokens attending to themselves).

    Example:
        >>> fusion = BottleneckFusion({"text": 5, "audio": 3}, out_dim=8, bottleneck_dim=16, num_tokens=2)
        >>> x = {"audio": torch.randn(2, 6, 3), "text": torch.randn(2, 6, 5)}
        >>> m = {"audio": torch.ones(2, 6, dtype=torch.bool), "text": torch.rand(2, 6) > 0.5}
        >>> out, w = fusion.forward_with_weights(x, m)
        >>> out.shape, w.shape
        (torch.Size([2, 6, 8]), torch.Size([2, 6, 2]))
        >>> bool((w[..., 1][~m["text"]] == 0).all())  # the tokens read nothing from a missing step
        True
    """

    is_causal = False
    limitations: ClassVar[Mapping[str, str]] = {
        "is_causal": "the fusion tokens summarise the whole sequence, so the output at step t depends on later steps"
    }

    def __init__(
        self,
        modality_dims: Mapping[str, int],
        out_dim: int,
        *,
        bottleneck_dim: int = 32,
        num_tokens: int = 4,
        layers: int = 2,
        num_heads: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(modality_dims, out_dim)
        owner = type(self).__name__
        check_int(owner, "bottleneck_dim", bottleneck_dim, 1)
        check_int(owner, "num_tokens", num_tokens, 1)
        check_int(owner, "layers", layers, 1)
        if num_heads is None:  # heads of 16 features: narrower heads cost more than they give on CPU
            num_heads = bottleneck_dim // 16 if bottleneck_dim >= 16 and bottleneck_dim % 16 == 0 else 1
        num_heads = resolve_num_heads(owner, num_heads, bottleneck_dim, dim_name="bottleneck_dim")
        check_probability(owner, "dropout", dropout)
        self.bottleneck_dim = bottleneck_dim
        self.num_tokens = num_tokens
        self.num_layers = layers
        self.num_heads = num_heads
        self.in_proj = nn.ModuleList(nn.Linear(d, bottleneck_dim) for d in self.modality_dims.values())
        self.tokens = nn.Parameter(torch.randn(num_tokens, bottleneck_dim) * 0.02)
        self.layers = nn.ModuleList(
            nn.ModuleList(_BottleneckLayer(bottleneck_dim, num_heads, dropout) for _ in self.modalities)
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(bottleneck_dim)
        self.out_proj = nn.Linear(bottleneck_dim, out_dim)
        self.skip = nn.ModuleList(nn.Linear(d, out_dim) for d in self.modality_dims.values())

    def extra_repr(self) -> str:
        """Sizes, shown in ``repr``."""
        return (
            f"{super().extra_repr()}, bottleneck_dim={self.bottleneck_dim}, num_tokens={self.num_tokens}, "
            f"layers={self.num_layers}, num_heads={self.num_heads}"
        )

    def merge_tokens(self, updated: Tensor, has_any: Tensor, previous: Tensor) -> Tensor:
        """Average the fusion tokens the modalities produced into the next layer's tokens.

        This is the only place where modalities meet before the output mean.

        Args:
            updated: ``[B, M, K, H_b]``, the tokens after each modality's layer.
            has_any: Bool ``[B, M]``, True where the modality is present at some step of the sequence.
            previous: ``[B, K, H_b]``, the tokens the layer started from (kept where no modality is present).

        Returns:
            ``[B, K, H_b]``.
        """
        keep = has_any[:, :, None, None]  # [B, M, 1, 1]
        total = torch.where(keep, updated, torch.zeros((), dtype=updated.dtype, device=updated.device)).sum(dim=1)
        count = has_any.to(updated.dtype).sum(dim=1)  # [B]
        mean = total / count.clamp_min(1.0)[:, None, None]  # [B, K, H_b]
        return torch.where((count > 0)[:, None, None], mean, previous)

    def fuse(self, values: list[Tensor], masks: list[Tensor]) -> tuple[Tensor, Tensor | None]:
        """Exchange through the fusion tokens, pool over present modalities (see the class docstring)."""
        b, t = masks[0].shape
        k = self.num_tokens
        tokens = self.tokens.unsqueeze(0).expand(b, k, self.bottleneck_dim)  # [B, K, H_b]
        xs = [proj(x) for proj, x in zip(self.in_proj, values, strict=True)]  # M x [B, T, H_b]
        token_keys = torch.ones(b, k, dtype=torch.bool, device=masks[0].device)  # [B, K]
        allowed = [torch.cat([mask, token_keys], dim=1)[:, None, None, :] for mask in masks]  # M x [B, 1, 1, T+K]
        has_any = torch.stack([mask.any(dim=1) for mask in masks], dim=1)  # [B, M]
        reads = [torch.zeros((), dtype=xs[0].dtype, device=xs[0].device) for _ in masks]  # M x [B, T] (summed)
        for layer in self.layers:
            updated = []
            for i, block in enumerate(cast(nn.ModuleList, layer)):
                seq, w = block(torch.cat([xs[i], tokens], dim=1), allowed[i], t)  # [B, T+K, H_b], [B, heads, K, T+K]
                xs[i] = seq[:, :t]  # [B, T, H_b]
                updated.append(seq[:, t:])  # [B, K, H_b]
                reads[i] = reads[i] + w[..., :t].mean(dim=(1, 2))  # [B, T]
            tokens = self.merge_tokens(torch.stack(updated, dim=1), has_any, tokens)  # [B, K, H_b]
        present = torch.stack(masks, dim=-1)  # [B, T, M]
        refined = self.norm(torch.stack(xs, dim=2))  # [B, T, M, H_b]
        pooled = masked_mean(refined, present, dim=2)  # [B, T, H_b]
        skip = torch.stack([proj(x) for proj, x in zip(self.skip, values, strict=True)], dim=2)  # [B, T, M, out_dim]
        fused = self.out_proj(pooled) + masked_mean(skip, present, dim=2)  # [B, T, out_dim]
        return fused, torch.stack(reads, dim=-1) / len(self.layers)  # [B, T, out_dim], [B, T, M]
