"""Graph attention fusion: intra-modal temporal graphs, then a small cross-modal graph at every step.

GASM-style two-stage fusion built from graph attention layers (Velickovic et al. 2018, "Graph Attention
Networks", ICLR). Stage 1 treats the steps of one modality as the nodes of a graph whose edges join
temporally adjacent steps and feature-similar steps (k nearest neighbours by cosine similarity), and refines
every step with graph attention over its neighbours. Stage 2 treats the modalities present at a step as the
nodes of a fully connected graph and lets them attend to each other; their mean is projected to ``out_dim``.
Both stages are dense masked attention (``[B, T, T]`` and ``[B, T, M, M]``): no loop over steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mmfuse.fusion._attention import AttentionFusion
from mmfuse.fusion._checks import check_int
from mmfuse.fusion.registry import register_fusion
from mmfuse.layers.attention import resolve_num_heads
from mmfuse.layers.dropout import Dropout
from mmfuse.layers.masking import masked_mean, masked_softmax

__all__ = ["GraphAttention", "GraphAttentionFusion", "temporal_knn_adjacency"]


def temporal_knn_adjacency(
    x: Tensor, mask: Tensor, *, temporal_window: int = 1, knn: int = 4, causal: bool = False
) -> Tensor:
    """Edges of the intra-modal graph over the steps of one modality.

    Step ``i`` (a present step) is joined to step ``j`` when ``j`` is present and

    * ``|i - j| <= temporal_window`` (temporal adjacency; ``j == i`` is the self loop), or
    * ``j`` is one of the ``knn`` present steps ``j != i`` whose features are most cosine-similar to step
      ``i``'s (all of them when fewer are present; exact ties are broken by :func:`torch.topk`).

    With ``causal=True`` only ``j <= i`` qualifies, and the ``knn`` neighbours are chosen among earlier present
    steps. A missing step has no edges at all, in either direction. The edges are directed: row ``i`` lists
    the steps ``i`` attends to, and ``i`` being among ``j``'s nearest neighbours does not make ``j`` one of
    ``i``'s. The similarity is computed on ``x`` without gradient (the graph is discrete).

    Args:
        x: Features ``[B, T, D]``; the values at missing steps are ignored.
        mask: Bool ``[B, T]``, True where the step is present.
        temporal_window: Largest ``|i - j|`` joined by a temporal edge (0: self loops only).
        knn: Number of similarity neighbours per step (0: none).
        causal: Keep only edges to ``j <= i``.

    Returns:
        Bool ``[B, T, T]``: ``[b, i, j]`` is True when step ``i`` attends to step ``j``.

    Raises:
        ValueError: if ``temporal_window`` or ``knn`` is not an integer >= 0, or the shapes disagree.

    Example:
        >>> x = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, -0.1]]])
        >>> mask = torch.tensor([[True, True, False, True]])
        >>> temporal_knn_adjacency(x, mask, temporal_window=1, knn=1).int().tolist()
        [[[1, 1, 0, 1], [1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 1]]]
    """
    check_int("temporal_knn_adjacency", "temporal_window", temporal_window, 0)
    check_int("temporal_knn_adjacency", "knn", knn, 0)
    if x.dim() != 3 or mask.dim() != 2 or tuple(mask.shape) != tuple(x.shape[:2]) or mask.dtype != torch.bool:
        raise ValueError(
            "temporal_knn_adjacency needs x of shape [B, T, D] and a bool mask of shape [B, T]. "
            f"Got x {list(x.shape)} and mask {list(mask.shape)} ({mask.dtype}) instead."
        )
    t = x.shape[1]
    steps = torch.arange(t, device=x.device)
    offset = steps.unsqueeze(0) - steps.unsqueeze(1)  # [T, T], j - i
    both = mask.unsqueeze(2) & mask.unsqueeze(1)  # [B, T, T], both ends present
    reach = offset.abs() <= temporal_window  # [T, T]
    if causal:
        reach = reach & (offset <= 0)
    edges = both & reach.unsqueeze(0)  # [B, T, T]
    if knn > 0:
        candidate = both & ((offset < 0) if causal else (offset != 0)).unsqueeze(0)  # [B, T, T]
        b = x.shape[0]
        with torch.no_grad():
            safe = torch.where(mask.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))  # [B, T, D]
            unit = safe / safe.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # [B, T, D]
            sim = unit @ unit.transpose(1, 2)  # [B, T, T] cosine similarity
            low = torch.full((), torch.finfo(sim.dtype).min, dtype=sim.dtype, device=sim.device)
            sim = torch.where(candidate, sim, low)  # non-candidates rank last
            padded = torch.cat([sim, low.expand(b, t, knn)], dim=-1)  # [B, T, T+knn], so that knn <= T+knn
            best = padded.topk(knn, dim=-1).indices  # [B, T, knn]
            chosen = torch.zeros(b, t, t + knn, dtype=torch.bool, device=x.device).scatter(-1, best, True)
        edges = edges | (candidate & chosen[..., :t])
    return edges


class GraphAttention(nn.Module):
    """One multi-head graph attention layer on a dense boolean adjacency (Velickovic et al. 2018).

    Node ``i`` scores neighbour ``j`` with ``e_ij = LeakyReLU(a_dst . W h_i + a_src . W h_j)`` per head (the
    split form of ``a^T [W h_i ; W h_j]``), normalises the scores with a softmax over its neighbours only, and
    takes the weighted sum of the neighbours' ``W h_j``. Heads are concatenated and a bias is added. A node
    without neighbours gets just the bias, never NaN.

    Args:
        dim: Node feature size ``H`` (input and output).
        num_heads: Heads; must divide ``dim``. Each head has ``H // num_heads`` features.
        dropout: Dropout on the attention coefficients (training only).
        negative_slope: Slope of the LeakyReLU for negative scores.
        few_nodes: Aggregate with a broadcast product instead of a batched matrix product: several times faster
            on CPU for graphs of a handful of nodes (e.g. the ``M`` modalities), slower for long ones.

    Shapes:
        ``V`` nodes (steps ``T`` for a temporal graph, modalities ``M`` for a cross-modal one), any leading
        batch dimensions ``...``: ``h`` ``[..., V, H]``, ``adjacency`` bool ``[..., V, V]`` ->
        ``[..., V, H]`` and weights ``[..., heads, V, V]``.

    Example:
        >>> gat = GraphAttention(8, num_heads=2)
        >>> h = torch.randn(3, 5, 8)
        >>> adjacency = torch.eye(5, dtype=torch.bool).expand(3, 5, 5)
        >>> out, w = gat(h, adjacency)
        >>> out.shape, w.shape, bool((w.sum(-1) == 1).all())  # one neighbour each: weight 1
        (torch.Size([3, 5, 8]), torch.Size([3, 2, 5, 5]), True)
    """

    def __init__(
        self, dim: int, num_heads: int, *, dropout: float = 0.0, negative_slope: float = 0.2, few_nodes: bool = False
    ) -> None:
        super().__init__()
        check_int("GraphAttention", "dim", dim, 1)
        num_heads = resolve_num_heads("GraphAttention", num_heads, dim, dim_name="dim")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.negative_slope = float(negative_slope)
        self.few_nodes = bool(few_nodes)
        self.lin = nn.Linear(dim, dim, bias=False)
        self.att_dst = nn.Parameter(torch.empty(num_heads, self.head_dim))
        self.att_src = nn.Parameter(torch.empty(num_heads, self.head_dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.dropout = Dropout(dropout)
        nn.init.xavier_uniform_(self.lin.weight)
        nn.init.xavier_uniform_(self.att_dst)
        nn.init.xavier_uniform_(self.att_src)

    def forward(self, h: Tensor, adjacency: Tensor, *, need_weights: bool = True) -> tuple[Tensor, Tensor | None]:
        """Attend from every node over its neighbours.

        Args:
            h: Node features ``[..., V, H]``.
            adjacency: Bool ``[..., V, V]``; ``[..., i, j]`` True when node ``i`` attends to node ``j``.
            need_weights: Return the attention weights. Without them the layer masks with an additive bias,
                which saves two passes over the ``V x V`` scores; the output is the same.

        Returns:
            ``(out [..., V, H], weights [..., heads, V, V] or None)``; each row of ``weights`` sums to 1 over the
            node's neighbours and is 0 elsewhere (all 0 for a node without neighbours).
        """
        wh = self.lin(h).unflatten(-1, (self.num_heads, self.head_dim))  # [..., V, heads, hd]
        dst = (wh * self.att_dst).sum(dim=-1).transpose(-1, -2)  # [..., heads, V]
        src = (wh * self.att_src).sum(dim=-1).transpose(-1, -2)  # [..., heads, V]
        scores = F.leaky_relu(dst.unsqueeze(-1) + src.unsqueeze(-2), self.negative_slope)  # [..., heads, V, V]
        if need_weights:
            weights = masked_softmax(scores, adjacency.unsqueeze(-3), dim=-1)  # [..., heads, V, V]
        else:
            low = torch.full((), torch.finfo(scores.dtype).min, dtype=scores.dtype, device=scores.device)
            bias = torch.where(adjacency, torch.zeros_like(low), low).unsqueeze(-3)  # [..., 1, V, V]
            weights = torch.softmax(scores + bias, dim=-1)  # [..., heads, V, V]; isolated rows fixed below
        values = wh.transpose(-3, -2)  # [..., heads, V, hd]
        if self.few_nodes:
            out = (self.dropout(weights).unsqueeze(-1) * values.unsqueeze(-3)).sum(dim=-2)  # [..., heads, V, hd]
        else:
            out = self.dropout(weights) @ values  # [..., heads, V, hd]
        out = out.transpose(-3, -2).flatten(-2)  # [..., V, H]
        if not need_weights:
            linked = adjacency.any(dim=-1, keepdim=True)  # [..., V, 1]
            out = torch.where(linked, out, torch.zeros((), dtype=out.dtype, device=out.device))
        return out + self.bias, weights if need_weights else None


@register_fusion("graph")
class GraphAttentionFusion(AttentionFusion):
    """Two-stage graph attention fusion: temporal graphs per modality, then a modality graph per step.

    Each modality is projected to ``hidden`` and tagged with a learned modality embedding.

    Stage 1 (intra-modal, ``layers`` times, own weights per modality): the graph of
    :func:`temporal_knn_adjacency` over the modality's steps (temporal edges within ``temporal_window``,
    ``knn`` cosine-nearest present steps, self loops; never to or from a missing step; built once from the
    fusion's input features), a :class:`GraphAttention` layer over it, then ``h = LayerNorm(h + ELU(gat))``.

    Stage 2 (cross-modal, at every step): the modalities present at the step form a fully connected graph
    (self loops included); one :class:`GraphAttention` layer shared by all steps, ``z = LayerNorm(h + ELU(gat))``,
    then the mean of ``z`` over the present modalities and a Linear to ``out_dim``. A step where every modality
    is missing gives the projection of the zero vector (finite).

    Args:
        modality_dims: Modality name -> ``D_m``.
        out_dim: Output size.
        hidden: Node feature size ``H`` (default ``out_dim``).
        num_heads: Attention heads; must divide ``hidden``. Default: the largest of 4, 2, 1 that does.
        temporal_window: Temporal edges join steps at most this far apart (>= 0).
        knn: Feature-similarity neighbours per step (>= 0; clipped to the present steps available).
        layers: Number of stage-1 graph attention layers.
        dropout: Dropout on attention coefficients and residual branches.
        causal: Stage-1 edges only to steps ``j <= t`` (similarity neighbours among earlier steps); stage 2 is
            pointwise in time, so the instance is causal (``is_causal`` True).

    Raises:
        ValueError: for a non-positive ``hidden`` or ``layers``, a negative ``temporal_window`` or ``knn``, a
            ``num_heads`` that does not divide ``hidden``, or ``dropout`` outside ``[0, 1)``.

    Shapes:
        ``inputs[m]`` ``[B, T, D_m]`` -> stage 1 per modality ``[B, T, H]`` with attention ``[B, heads, T, T]``
        -> stage 2 nodes ``[B, T, M, H]`` with attention ``[B, T, heads, M, M]`` -> ``[B, T, out_dim]``.
        ``forward_with_weights`` returns the stage-2 cross-modal attention averaged over heads,
        ``[B, T, M_query, M_key]`` in canonical order: row ``m`` sums to 1 over the modalities present at the
        step when ``m`` is present, and is all 0 when ``m`` is missing; columns of missing modalities are 0.

    Example:
        >>> fusion = GraphAttentionFusion({"text": 5, "audio": 3}, out_dim=8, knn=2, causal=True)
        >>> fusion.is_causal
        True
        >>> x = {"audio": torch.randn(2, 6, 3), "text": torch.randn(2, 6, 5)}
        >>> m = {"audio": torch.ones(2, 6, dtype=torch.bool), "text": torch.zeros(2, 6, dtype=torch.bool)}
        >>> out, w = fusion.forward_with_weights(x, m)
        >>> out.shape, w.shape
        (torch.Size([2, 6, 8]), torch.Size([2, 6, 2, 2]))
        >>> w[0, 0].tolist()  # only audio is present: it attends to itself
        [[1.0, 0.0], [0.0, 0.0]]
    """

    def __init__(
        self,
        modality_dims: Mapping[str, int],
        out_dim: int,
        *,
        hidden: int | None = None,
        num_heads: int | None = None,
        temporal_window: int = 1,
        knn: int = 4,
        layers: int = 1,
        dropout: float = 0.0,
        causal: bool = False,
    ) -> None:
        super().__init__(modality_dims, out_dim, hidden=hidden, num_heads=num_heads, causal=causal, dropout=dropout)
        owner = type(self).__name__
        self.temporal_window = check_int(owner, "temporal_window", temporal_window, 0)
        self.knn = check_int(owner, "knn", knn, 0)
        self.num_layers = check_int(owner, "layers", layers, 1)
        self.intra = nn.ModuleList(
            nn.ModuleList(GraphAttention(self.hidden, self.num_heads, dropout=dropout) for _ in self.modalities)
            for _ in range(layers)
        )
        self.intra_norms = nn.ModuleList(
            nn.ModuleList(nn.LayerNorm(self.hidden) for _ in self.modalities) for _ in range(layers)
        )
        self.cross = GraphAttention(self.hidden, self.num_heads, dropout=dropout, few_nodes=True)
        self.cross_norm = nn.LayerNorm(self.hidden)
        self.out_proj = nn.Linear(self.hidden, out_dim)

    def extra_repr(self) -> str:
        """Sizes, heads, causality and graph settings, shown in ``repr``."""
        return (
            f"{super().extra_repr()}, temporal_window={self.temporal_window}, knn={self.knn}, layers={self.num_layers}"
        )

    def adjacency(self, values: list[Tensor], masks: list[Tensor]) -> list[Tensor]:
        """The stage-1 graph of every modality (see :func:`temporal_knn_adjacency`).

        Args:
            values: ``M`` tensors ``[B, T, D_m]`` in canonical order.
            masks: ``M`` bool tensors ``[B, T]``.

        Returns:
            ``M`` bool tensors ``[B, T, T]``.
        """
        return [
            temporal_knn_adjacency(x, mask, temporal_window=self.temporal_window, knn=self.knn, causal=self.is_causal)
            for x, mask in zip(values, masks, strict=True)
        ]

    def fuse(self, values: list[Tensor], masks: list[Tensor]) -> tuple[Tensor, Tensor | None]:
        """Temporal graph attention per modality, then modality graph attention per step (see the class)."""
        graphs = self.adjacency(values, masks)  # M x [B, T, T]
        hs = self.embed(values)  # M x [B, T, H]
        for gats, norms in zip(self.intra, self.intra_norms, strict=True):
            hs = [
                norm(h + self.dropout(F.elu(gat(h, graph, need_weights=False)[0])))  # [B, T, H]
                for gat, norm, h, graph in zip(
                    cast(nn.ModuleList, gats), cast(nn.ModuleList, norms), hs, graphs, strict=True
                )
            ]
        nodes = torch.stack(hs, dim=2)  # [B, T, M, H]
        present = torch.stack(masks, dim=-1)  # [B, T, M]
        complete = present.unsqueeze(-1) & present.unsqueeze(-2)  # [B, T, M, M]
        attended, weights = self.cross(nodes, complete)  # [B, T, M, H], [B, T, heads, M, M]
        z = self.cross_norm(nodes + self.dropout(F.elu(attended)))  # [B, T, M, H]
        pooled = masked_mean(z, present, dim=2)  # [B, T, H]
        if weights is None:  # pragma: no cover - the cross-modal layer always returns its weights
            raise RuntimeError("GraphAttention returned no weights.")
        return self.out_proj(pooled), weights.mean(dim=2)  # [B, T, out_dim], [B, T, M, M]
