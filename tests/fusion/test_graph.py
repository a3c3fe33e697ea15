from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from mmfuse.fusion import GraphAttentionFusion, create_fusion, fusion_kwargs
from mmfuse.fusion.graph import GraphAttention, temporal_knn_adjacency
from mmfuse.testing import make_fusion_inputs

DIMS = {"text": 5, "audio": 3, "video": 4}

# Five steps of one modality; step 2 is missing (NaN) although its features would be step 0's best match.
# Cosine similarities between present steps: s04 = 0.981, s13 = 0.995, s34 = 0.293, s14 = 0.196,
# s03 = 0.0995, s01 = 0.
X = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [float("nan"), float("nan")], [0.1, 1.0], [1.0, 0.2]]])
X_HIDDEN = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.05], [0.1, 1.0], [1.0, 0.2]]])  # step 2 = 0.9988 to 0
MASK = torch.tensor([[True, True, False, True, True]])


def _edges(adjacency: torch.Tensor) -> list[set[int]]:
    return [set(torch.nonzero(row).flatten().tolist()) for row in adjacency[0]]


def test_adjacency_hand_made_case() -> None:
    expected = [{0, 1, 4}, {0, 1, 3}, set(), {1, 3, 4}, {0, 3, 4}]  # temporal |i-j|<=1, then 1 most similar
    assert _edges(temporal_knn_adjacency(X, MASK, temporal_window=1, knn=1)) == expected
    # The values of the missing step never matter, even when they would be the best match.
    assert _edges(temporal_knn_adjacency(X_HIDDEN, MASK, temporal_window=1, knn=1)) == expected


def test_adjacency_similarity_and_window_parts() -> None:
    # Self loops only.
    assert _edges(temporal_knn_adjacency(X, MASK, temporal_window=0, knn=0)) == [{0}, {1}, set(), {3}, {4}]
    # Similarity edges only (plus self loops): two nearest each.
    assert _edges(temporal_knn_adjacency(X, MASK, temporal_window=0, knn=2)) == [
        {0, 4, 3},
        {1, 3, 4},
        set(),
        {3, 1, 4},
        {4, 0, 3},
    ]
    # Wide window: steps 1 and 3 are two apart, the missing step 2 between them does not matter.
    assert _edges(temporal_knn_adjacency(X, MASK, temporal_window=2, knn=0))[1] == {0, 1, 3}
    # k larger than the present steps: clipped, every present step linked to every present step.
    full = temporal_knn_adjacency(X, MASK, temporal_window=0, knn=10)
    assert _edges(full) == [{0, 1, 3, 4}, {0, 1, 3, 4}, set(), {0, 1, 3, 4}, {0, 1, 3, 4}]


def test_adjacency_causal_hand_made_case() -> None:
    # Temporal edges to i-1 and i; the nearest neighbour chosen among earlier present steps only.
    expected = [{0}, {0, 1}, set(), {1, 3}, {0, 3, 4}]
    assert _edges(temporal_knn_adjacency(X, MASK, temporal_window=1, knn=1, causal=True)) == expected


def test_adjacency_causal_rows_ignore_the_future() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 9, 4, generator=gen)
    mask = torch.rand(3, 9, generator=gen) > 0.3
    ref = temporal_knn_adjacency(x, mask, temporal_window=2, knn=3, causal=True)
    assert not bool(torch.triu(ref, diagonal=1).any())
    for t in (0, 4, 7):
        x2, mask2 = x.clone(), mask.clone()
        x2[:, t + 1 :] = torch.randn_like(x2[:, t + 1 :])
        mask2[:, t + 1 :] = ~mask2[:, t + 1 :]
        new = temporal_knn_adjacency(x2, mask2, temporal_window=2, knn=3, causal=True)
        assert torch.equal(new[:, : t + 1], ref[:, : t + 1])


def test_gat_rows_sum_to_one_over_neighbours_and_match_the_formula() -> None:
    torch.manual_seed(0)
    gat = GraphAttention(6, num_heads=2).eval()
    with torch.no_grad():
        gat.bias.copy_(torch.randn(6))
    h = torch.randn(2, 4, 6)
    adjacency = torch.rand(2, 4, 4) > 0.5
    adjacency[0, 2] = False  # an isolated node
    adjacency[1, 1] = torch.tensor([False, True, False, False])
    out, w = gat(h, adjacency)
    assert w is not None and w.shape == (2, 2, 4, 4)
    linked = adjacency.any(-1)
    torch.testing.assert_close(w.sum(-1), linked.unsqueeze(1).expand(2, 2, 4).float())
    assert torch.all(w[~adjacency.unsqueeze(1).expand_as(w)] == 0)
    # Known answer, written out one node and head at a time.
    wh = (h @ gat.lin.weight.T).view(2, 4, 2, 3)
    for b in range(2):
        for i in range(4):
            for k in range(2):
                nbrs = torch.nonzero(adjacency[b, i]).flatten()
                if len(nbrs) == 0:
                    torch.testing.assert_close(out[b, i], gat.bias.detach())
                    continue
                e = torch.stack(
                    [F.leaky_relu(gat.att_dst[k] @ wh[b, i, k] + gat.att_src[k] @ wh[b, j, k], 0.2) for j in nbrs]
                )
                alpha = torch.softmax(e, dim=0)
                torch.testing.assert_close(w[b, k, i, nbrs], alpha)
                expected = (alpha.unsqueeze(-1) * wh[b, nbrs, k]).sum(0) + gat.bias[k * 3 : (k + 1) * 3]
                torch.testing.assert_close(out[b, i, k * 3 : (k + 1) * 3], expected)
    # The fast path (no weights) and the few-nodes aggregation give the same output.
    fast, none = gat(h, adjacency, need_weights=False)
    assert none is None
    torch.testing.assert_close(fast, out)
    gat.few_nodes = True
    torch.testing.assert_close(gat(h, adjacency)[0], out)


def test_fusion_weights_are_the_cross_modal_graph() -> None:
    f = GraphAttentionFusion(DIMS, 8).eval()
    x, m = make_fusion_inputs(DIMS, 3, 9, seed=2)
    with torch.no_grad():
        out, w = f.forward_with_weights(x, m)
    assert out.shape == (3, 9, 8)
    assert w is not None and w.shape == (3, 9, 3, 3)
    present = torch.stack([m[k] for k in sorted(DIMS)], dim=-1)  # [B, T, M]
    torch.testing.assert_close(w.sum(-1), present.float())  # present rows sum to 1, missing rows are 0
    assert torch.all(w[(~present).unsqueeze(-2).expand_as(w)] == 0)  # nobody attends to a missing modality
    lone = w[present.sum(-1) == 1]  # [n, M, M] at steps with one modality: it attends to itself only
    assert len(lone) > 0 and torch.all(torch.diagonal(lone, dim1=-2, dim2=-1).sum(-1) == 1)


def test_stage_one_follows_the_graph() -> None:
    """With one modality, the output at step 0 depends on step 3 (its nearest neighbour) but not on step 4."""
    x = {"a": torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.5], [1.0, 0.1], [-1.0, -1.0]]])}
    m = {"a": torch.ones(1, 5, dtype=torch.bool)}
    f = GraphAttentionFusion({"a": 2}, 8, temporal_window=1, knn=1).eval()
    graph = f.adjacency([x["a"]], [m["a"]])[0]
    assert _edges(graph)[0] == {0, 1, 3}
    far = {"a": x["a"].clone()}
    far["a"][0, 4] = torch.tensor([-1.0, -2.0])  # still nobody's neighbour among steps 0-2
    near = {"a": x["a"].clone()}
    near["a"][0, 3] = torch.tensor([2.0, 0.3])  # still step 0's nearest neighbour
    with torch.no_grad():
        ref = f(x, m)
        torch.testing.assert_close(f(far, m)[0, :3], ref[0, :3], rtol=0, atol=0)  # step 4 reaches only 3 and 4
        assert not torch.allclose(f(near, m)[0, 0], ref[0, 0])


def test_causal_variant_ignores_the_future_and_default_uses_it() -> None:
    x, m = make_fusion_inputs(DIMS, 2, 8, seed=4)
    x2 = {k: v.clone() for k, v in x.items()}
    m2 = {k: v.clone() for k, v in m.items()}
    for k in x2:
        x2[k][:, 5:] = x2[k][:, 5:] * -2 + 1
        m2[k][:, 5:] = True
    causal = GraphAttentionFusion(DIMS, 8, causal=True, layers=2).eval()
    plain = GraphAttentionFusion(DIMS, 8, layers=2).eval()
    assert causal.is_causal and not plain.is_causal
    with torch.no_grad():
        torch.testing.assert_close(causal(x2, m2)[:, :5], causal(x, m)[:, :5], rtol=0, atol=0)
        assert not torch.allclose(plain(x2, m2)[:, :5], plain(x, m)[:, :5])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden": 0}, "'hidden' parameter of GraphAttentionFusion must be a positive integer. Got 0"),
        ({"knn": -1}, "'knn' parameter of GraphAttentionFusion must be an integer >= 0. Got -1"),
        ({"temporal_window": 1.0}, "'temporal_window' parameter of GraphAttentionFusion must be an integer >= 0"),
        ({"layers": 0}, "'layers' parameter of GraphAttentionFusion must be a positive integer"),
        ({"hidden": 8, "num_heads": 3}, r"'num_heads' parameter of GraphAttentionFusion must be a positive divisor"),
        ({"dropout": -0.1}, r"'dropout' parameter of GraphAttentionFusion must be a number in \[0, 1\)"),
        ({"causal": "yes"}, "'causal' parameter of GraphAttentionFusion must be a bool"),
        ({"k": 3}, r"Unknown keyword argument\(s\) \['k'\] for fusion 'graph'"),
    ],
)
def test_bad_kwargs_are_clear(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_fusion("graph", DIMS, 8, **kwargs)


def test_adjacency_bad_input() -> None:
    with pytest.raises(ValueError, match="'knn' parameter of temporal_knn_adjacency"):
        temporal_knn_adjacency(X, MASK, knn=-2)
    with pytest.raises(ValueError, match=r"x of shape \[B, T, D\] and a bool mask of shape \[B, T\]"):
        temporal_knn_adjacency(X, MASK[:, :4])
    with pytest.raises(ValueError, match="bool mask"):
        temporal_knn_adjacency(X, MASK.float())
    with pytest.raises(ValueError, match="'num_heads' parameter of GraphAttention must be a positive divisor"):
        GraphAttention(6, 4)


def test_defaults() -> None:
    assert fusion_kwargs("graph") == {
        "hidden": None,
        "num_heads": None,
        "temporal_window": 1,
        "knn": 4,
        "layers": 1,
        "dropout": 0.0,
        "causal": False,
    }
    f = GraphAttentionFusion(DIMS, 8)
    assert f.hidden == 8 and f.num_heads == 4 and len(f.intra) == 1
    assert "knn=4" in repr(f)
