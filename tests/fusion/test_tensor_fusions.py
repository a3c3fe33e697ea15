"""Tensor fusions: ``tfn`` against explicit outer products, ``lmf`` against the full tensor it factorises."""

from __future__ import annotations

import pytest
import torch

from mmfuse.fusion import LowRankFusion, TensorFusion, create_fusion, fusion_kwargs
from mmfuse.testing import make_fusion_inputs

DIMS = {"text": 5, "audio": 3, "video": 4}  # canonical order: audio, text, video


def _one(z: torch.Tensor) -> torch.Tensor:
    return torch.cat([z, torch.ones_like(z[..., :1])], dim=-1)


def _embed(f: TensorFusion, i: int, x: torch.Tensor) -> torch.Tensor:
    """``[h_m; 1]`` for one present step, by hand."""
    return _one(f.proj[i](x))


# ------------------------------------------------------------------------------------------------------------ tfn


def test_tfn_defaults_and_flags() -> None:
    assert fusion_kwargs("tfn")["factor_dim"] == 16
    f = create_fusion("tfn", DIMS, 8)
    assert f.tensor_size == 17**3 and f.mlp.net[0].in_features == 4913
    assert f.is_causal and f.output_level == "representation"


def test_tfn_parameter_count() -> None:
    f = TensorFusion(DIMS, 8, factor_dim=4, hidden=16, num_layers=2)
    projections = (3 * 4 + 4) + (5 * 4 + 4) + (4 * 4 + 4)
    mlp = (5**3 * 16 + 16) + (16 * 16 + 16) + (16 * 8 + 8)
    assert sum(p.numel() for p in f.parameters()) == projections + mlp == 2484
    g = TensorFusion(DIMS, 8, factor_dim=4, num_layers=0)  # one linear layer from the tensor
    assert sum(p.numel() for p in g.mlp.parameters()) == 125 * 8 + 8


def test_tfn_published_sizes() -> None:
    """The EMNLP 2017 model: 128-d language, 32-d audio and video embeddings, two 128-unit ReLU layers."""
    dims = {"text": 300, "audio": 74, "video": 35}
    factor_dim = {"text": 128, "audio": 32, "video": 32}
    with pytest.raises(ValueError, match=r"prod_m \(factor_dim\[m\] \+ 1\) = 33 \* 129 \* 33 = 140481"):
        TensorFusion(dims, 1, factor_dim=factor_dim)
    with torch.device("meta"):  # shapes only, no memory
        f = TensorFusion(dims, 1, factor_dim=factor_dim, hidden=128, num_layers=2, max_tensor_size=200_000)
    assert f.tensor_size == 129 * 33 * 33 == 140_481
    assert f.mlp.net[0].in_features == 140_481 and isinstance(f.mlp.net[1], torch.nn.ReLU)
    assert sum(p.numel() for p in f.mlp.parameters()) == (140_481 * 128 + 128) + (128 * 128 + 128) + (128 + 1)


def test_tfn_two_modalities_is_the_outer_product() -> None:
    torch.manual_seed(0)
    f = TensorFusion({"a": 2, "b": 3}, 5, factor_dim={"a": 3, "b": 2}, hidden=8).eval()
    x = {"a": torch.randn(2, 4, 2), "b": torch.randn(2, 4, 3)}
    m = {k: torch.ones(2, 4, dtype=torch.bool) for k in x}
    z = f.fusion_tensor(x, m)
    out = f(x, m)
    assert z.shape == (2, 4, 4 * 3)
    for b in range(2):
        for t in range(4):
            with torch.no_grad():
                by_hand = torch.outer(_embed(f, 0, x["a"][b, t]), _embed(f, 1, x["b"][b, t])).flatten()  # [12]
                torch.testing.assert_close(z[b, t], by_hand)
                torch.testing.assert_close(out[b, t], f.mlp(by_hand))
    # The unimodal terms sit next to the bimodal ones: the last row/column is [h_a; 1] / [h_b; 1].
    grid = z.view(2, 4, 4, 3)
    torch.testing.assert_close(grid[..., 3, :2], f.proj[1](x["b"]))
    torch.testing.assert_close(grid[..., :3, 2], f.proj[0](x["a"]))


def test_tfn_missing_modality_keeps_only_the_others_terms() -> None:
    torch.manual_seed(0)
    f = TensorFusion(DIMS, 6, factor_dim=3, hidden=8).eval()
    with torch.no_grad():
        f.proj[1][0].bias.fill_(0.5)  # relu(W 0 + b) != 0: only zeroing after the projection drops "text"
    x, _ = make_fusion_inputs(DIMS, 2, 5, seed=1)
    m = {k: torch.ones(2, 5, dtype=torch.bool) for k in x}
    m["text"] = torch.zeros(2, 5, dtype=torch.bool)  # the middle axis of the product
    x["text"] = torch.full_like(x["text"], float("nan"))
    with torch.no_grad():
        out = f(x, m)
        z_a, z_v = _embed(f, 0, x["audio"]), _embed(f, 2, x["video"])  # [B, T, 4]
        expected = torch.zeros(2, 5, 4, 4, 4)
        expected[:, :, :, 3, :] = z_a.unsqueeze(-1) * z_v.unsqueeze(-2)  # text index = d: the constant 1
        torch.testing.assert_close(f.fusion_tensor(x, m), expected.flatten(2))
        torch.testing.assert_close(out, f.mlp(expected.flatten(2)))
        # The same MLP terms as a two-modality product of audio and video.
        torch.testing.assert_close(
            expected[:, :, :, 3, :].flatten(2), torch.einsum("bti,btj->btij", z_a, z_v).flatten(2)
        )


def test_tfn_everything_missing_is_the_constant_corner() -> None:
    f = TensorFusion(DIMS, 6, factor_dim=2).eval()
    x, m = make_fusion_inputs(DIMS, 1, 3)
    m = {k: torch.zeros_like(v) for k, v in m.items()}
    z = f.fusion_tensor(x, m)
    corner = torch.zeros(27)
    corner[-1] = 1.0
    torch.testing.assert_close(z, corner.expand(1, 3, 27))
    with torch.no_grad():
        torch.testing.assert_close(f(x, m), f.mlp(corner).expand(1, 3, 6))


def test_tfn_refuses_a_huge_tensor_naming_the_numbers() -> None:
    dims = {f"m{i}": 2 for i in range(5)}
    with pytest.raises(
        ValueError, match=r"\(factor_dim \+ 1\) \*\* M = \(16 \+ 1\) \*\* 5 = 1419857 .*max_tensor_size = 100000"
    ):
        TensorFusion(dims, 4)
    assert TensorFusion(dims, 4, factor_dim=2).tensor_size == 3**5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"factor_dim": 0}, "'factor_dim' parameter of TensorFusion must be a positive integer. Got 0"),
        ({"factor_dim": {"audio": 2}}, r"'factor_dim' parameter of TensorFusion must be an int or a mapping.*'video'"),
        ({"factor_dim": {"audio": 2, "text": 0, "video": 2}}, r"'factor_dim\[text\]' parameter of TensorFusion"),
        ({"hidden": 0}, "'hidden' parameter of TensorFusion must be a positive integer"),
        ({"num_layers": -1}, "'num_layers' parameter of TensorFusion must be an integer >= 0. Got -1"),
        ({"max_tensor_size": 0}, "'max_tensor_size' parameter of TensorFusion"),
        ({"dropout": 1.5}, "'dropout' parameter of TensorFusion must be a number in"),
        ({"activation": "nope"}, "Unknown activation 'nope'"),
    ],
)
def test_tfn_bad_kwargs(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TensorFusion(DIMS, 4, **kwargs)


# ------------------------------------------------------------------------------------------------------------ lmf


def _full_weight(f: LowRankFusion) -> torch.Tensor:
    """The full-rank TFN weight ``sum_r w_r W_1[r] ⊗ ... ⊗ W_M[r]``: ``[D_1 + 1, ..., D_M + 1, out_dim]``."""
    axes = "ijk"[: len(f.factors)]
    equation = "r," + ",".join(f"r{a}o" for a in axes) + f"->{axes}o"
    return torch.einsum(equation, f.rank_weights, *f.factors)


@pytest.mark.parametrize("dims", [{"a": 2, "b": 3}, {"a": 2, "b": 1, "c": 3}])
def test_lmf_equals_the_full_tensor_product_it_factorises(dims: dict[str, int]) -> None:
    torch.manual_seed(0)
    f = LowRankFusion(dims, 4, rank=3).eval()
    with torch.no_grad():
        f.rank_weights.copy_(torch.tensor([0.5, -1.0, 2.0]))
        f.bias.copy_(torch.randn(4))
    x, m = make_fusion_inputs(dims, 2, 6, seed=2)  # with missing steps: z_m = [0, ..., 0, 1] there
    zs = [_one(torch.where(m[k].unsqueeze(-1), x[k], 0.0)) for k in sorted(dims)]  # M x [B, T, D_m + 1]
    axes = "ijk"[: len(dims)]
    equation = ",".join(f"bt{a}" for a in axes) + f",{axes}o->bto"
    with torch.no_grad():
        expected = torch.einsum(equation, *zs, _full_weight(f)) + f.bias  # [B, T, out]
        torch.testing.assert_close(f(x, m), expected)


def test_lmf_missing_modality_uses_its_constant_row() -> None:
    torch.manual_seed(0)
    f = LowRankFusion({"a": 2, "b": 3}, 4, rank=2).eval()
    x = {"a": torch.randn(1, 3, 2), "b": torch.full((1, 3, 3), float("nan"))}
    m = {"a": torch.ones(1, 3, dtype=torch.bool), "b": torch.zeros(1, 3, dtype=torch.bool)}
    with torch.no_grad():
        a = torch.einsum("bti,rio->btro", _one(x["a"]), f.factors[0])  # [B, T, r, out]
        expected = torch.einsum("btro,r->bto", a * f.factors[1][:, -1], f.rank_weights) + f.bias
        torch.testing.assert_close(f(x, m), expected)


def test_lmf_parameter_count_and_shapes() -> None:
    f = LowRankFusion(DIMS, 8, rank=4)
    assert [tuple(w.shape) for w in f.factors] == [(4, 4, 8), (4, 6, 8), (4, 5, 8)]
    assert sum(p.numel() for p in f.parameters()) == 4 * (4 + 6 + 5) * 8 + 4 + 8
    assert fusion_kwargs("lmf") == {"rank": 4, "dropout": 0.0}
    assert f.is_causal and f.output_level == "representation"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rank": 0}, "'rank' parameter of LowRankFusion must be a positive integer. Got 0"),
        ({"rank": 2.0}, "'rank' parameter of LowRankFusion"),
        ({"dropout": 1.0}, "'dropout' parameter of LowRankFusion"),
    ],
)
def test_lmf_bad_kwargs(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LowRankFusion(DIMS, 4, **kwargs)
