"""Decision-level fusions: ``late`` and ``uncertainty_late``, checked against answers computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mmfuse.fusion import (
    LateFusion,
    UncertainPrediction,
    UncertaintyLateFusion,
    create_fusion,
    fusion_kwargs,
    gaussian_nll_terms,
)
from mmfuse.layers.dropout import Dropout
from mmfuse.testing import make_fusion_inputs

DIMS = {"text": 5, "audio": 3, "video": 4}  # canonical order: audio, text, video


def _inputs(b: int = 2, t: int = 6, seed: int = 0):
    return make_fusion_inputs(DIMS, b, t, seed=seed)


def _present(m: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.stack([m[k] for k in sorted(m)], dim=-1)  # [B, T, M]


def _set_linear(layer: nn.Linear, weight: torch.Tensor, bias: torch.Tensor) -> None:
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)


# ----------------------------------------------------------------------------------------------------------- late


def test_late_is_prediction_level_and_causal() -> None:
    for name in ("late", "uncertainty_late"):
        f = create_fusion(name, DIMS, 3)
        assert f.output_level == "prediction"
        assert f.is_causal is True
        assert f.handles_missing is True
    assert fusion_kwargs("late") == {"head_hidden": 32, "activation": "gelu", "dropout": 0.0, "learn_weights": True}


def test_late_renormalises_learned_weights_over_present_modalities() -> None:
    f = LateFusion(DIMS, 2).eval()
    with torch.no_grad():
        f.weight_logits.copy_(torch.log(torch.tensor([1.0, 2.0, 3.0])))  # softmax: 1/6, 2/6, 3/6
    x, _ = _inputs(b=1, t=4)
    masks = {  # per step: all present / audio missing / only video / none
        "audio": torch.tensor([[True, False, False, False]]),
        "text": torch.tensor([[True, True, False, False]]),
        "video": torch.tensor([[True, True, True, False]]),
    }
    out, w = f.forward_with_weights(x, masks)
    with torch.no_grad():
        p = {k: f.heads[i](x[k][0]) for i, k in enumerate(sorted(DIMS))}  # each [T, C], by hand
    expected_w = torch.tensor([[1 / 6, 2 / 6, 3 / 6], [0.0, 2 / 5, 3 / 5], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    assert w is not None
    torch.testing.assert_close(w[0], expected_w)
    torch.testing.assert_close(out[0, 0], p["audio"][0] / 6 + p["text"][0] * 2 / 6 + p["video"][0] * 3 / 6)
    torch.testing.assert_close(out[0, 1], p["text"][1] * 2 / 5 + p["video"][1] * 3 / 5)  # not divided by 3
    torch.testing.assert_close(out[0, 2], p["video"][2])
    assert torch.equal(out[0, 3], torch.zeros(2))


def test_late_uniform_weights_are_the_mean_of_present_predictions() -> None:
    f = LateFusion(DIMS, 3, learn_weights=False).eval()
    assert f.weight_logits is None
    assert all(name.startswith("heads.") for name, _ in f.named_parameters())
    x, m = _inputs(t=8)
    out, w = f.forward_with_weights(x, m)
    present = _present(m)
    with torch.no_grad():
        preds = torch.stack([f.heads[i](x[k]) for i, k in enumerate(sorted(DIMS))], dim=2)  # [B, T, M, C]
    count = present.sum(-1, keepdim=True)  # [B, T, 1]
    expected = torch.where(present.unsqueeze(-1), preds, 0.0).sum(2) / count.clamp_min(1)
    torch.testing.assert_close(out, expected)
    assert w is not None
    torch.testing.assert_close(w, present.float() / count.clamp_min(1))
    assert torch.all(out[count[..., 0] == 0] == 0)


def test_late_weights_learn_to_favour_the_informative_modality() -> None:
    torch.manual_seed(0)
    f = LateFusion({"good": 2, "bad": 2}, 1, head_hidden=None)  # canonical: bad, good
    target_w = torch.tensor([[1.5, -2.0]])
    _set_linear(f.heads[1].net[0], target_w, torch.zeros(1))  # "good" predicts the target exactly
    _set_linear(f.heads[0].net[0], torch.tensor([[0.3, 0.7]]), torch.zeros(1))
    for head in f.heads:
        head.requires_grad_(False)
    x = {"good": torch.randn(16, 5, 2), "bad": torch.randn(16, 5, 2)}
    m = {k: torch.ones(16, 5, dtype=torch.bool) for k in x}
    y = x["good"] @ target_w.T  # [B, T, 1]
    opt = torch.optim.Adam([f.weight_logits], lr=0.2)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.mse_loss(f(x, m), y).backward()
        opt.step()
    with torch.no_grad():
        _, w = f.forward_with_weights(x, m)
    assert w is not None and float(w[..., 1].min()) > 0.9


def test_late_head_structure() -> None:
    linear = LateFusion({"a": 3}, 2, head_hidden=None)
    assert [type(layer) for layer in linear.heads[0].net] == [nn.Linear]
    mlp = LateFusion({"a": 3}, 2, head_hidden=7, activation="relu", dropout=0.25)
    assert [type(layer) for layer in mlp.heads[0].net] == [nn.Linear, nn.ReLU, Dropout, nn.Linear]
    assert mlp.heads[0].net[0].out_features == 7 and mlp.heads[0].net[2].p == 0.25


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"head_hidden": 0}, "'head_hidden' parameter of LateFusion must be a positive integer or None"),
        ({"head_hidden": 2.5}, "'head_hidden' parameter of LateFusion"),
        ({"head_hidden": True}, "'head_hidden' parameter of LateFusion"),
        ({"dropout": 1.0}, r"'dropout' parameter of LateFusion must be a number in \[0, 1\). Got 1.0"),
        ({"activation": "nope"}, "Unknown activation 'nope'. Valid names"),
        ({"learn_weights": "yes"}, "'learn_weights' parameter of LateFusion must be a bool"),
    ],
)
def test_late_bad_kwargs(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LateFusion(DIMS, 2, **kwargs)


# ------------------------------------------------------------------------------------------------ uncertainty_late


def _linear_uncertainty(
    mu_bias: list[float], log_var_bias: list[float], *, shared: bool = True
) -> tuple[UncertaintyLateFusion, dict[str, torch.Tensor]]:
    """Linear heads with zero weights: modality i predicts mu_bias[i] with log-variance log_var_bias[i]."""
    dims = {f"m{i}": 2 for i in range(len(mu_bias))}
    f = UncertaintyLateFusion(dims, 1, head_hidden=None, shared_variance=shared).eval()
    for head, mu, lv in zip(f.heads, mu_bias, log_var_bias, strict=True):
        _set_linear(head.net[0], torch.zeros(2, 2), torch.tensor([mu, lv]))
    x = {k: torch.randn(1, 3, 2) for k in dims}
    return f, x


def test_uncertainty_low_variance_modality_dominates() -> None:
    f, x = _linear_uncertainty([1.0, -4.0], [-4.0, 4.0])
    m = {k: torch.ones(1, 3, dtype=torch.bool) for k in x}
    res = f.predict_with_uncertainty(x, m)
    lv = 6 * math.tanh(-4 / 6), 6 * math.tanh(4 / 6)  # the soft clamp into (-6, 6)
    w0 = math.exp(-lv[0]) / (math.exp(-lv[0]) + math.exp(-lv[1]))
    assert w0 > 0.99
    torch.testing.assert_close(res.weights[0, :, 0, 0], torch.full((3,), w0))
    torch.testing.assert_close(res.prediction[0, :, 0], torch.full((3,), w0 * 1.0 + (1 - w0) * -4.0))
    expected_var = 1 / (math.exp(-lv[0]) + math.exp(-lv[1]))
    torch.testing.assert_close(res.variance[0, :, 0], torch.full((3,), expected_var))
    assert expected_var < math.exp(lv[0])  # combining never increases the variance
    # With the confident modality missing, the other one takes all the weight and gives its own prediction.
    m["m0"] = torch.tensor([[True, False, False]])
    m["m1"] = torch.tensor([[True, True, False]])
    out, w = f.forward_with_weights(x, m)
    assert w is not None
    torch.testing.assert_close(w[0, 1], torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(out[0, 1], torch.tensor([-4.0]))
    assert torch.equal(out[0, 2], torch.zeros(1)) and torch.equal(w[0, 2], torch.zeros(2))


def test_uncertainty_inverse_variance_formula_per_output() -> None:
    torch.manual_seed(0)
    f = UncertaintyLateFusion(DIMS, 3, min_log_var=-2.0, max_log_var=4.0).eval()
    x, m = _inputs(t=8)
    res = f.predict_with_uncertainty(x, m)
    assert isinstance(res, UncertainPrediction)
    present = _present(m).unsqueeze(-1)  # [B, T, M, 1]
    with torch.no_grad():
        raw = torch.stack([f.heads[i](x[k]) for i, k in enumerate(sorted(DIMS))], dim=2)  # [B, T, M, 6]
    mu, s = raw[..., :3], 1.0 + 3.0 * torch.tanh((raw[..., 3:] - 1.0) / 3.0)  # centre 1, half-width 3
    precision = torch.where(present, 1 / s.exp(), 0.0)  # [B, T, M, C]
    total = precision.sum(2)  # [B, T, C]
    any_present = present.any(2)
    weights = precision / total.clamp_min(1e-30).unsqueeze(2)
    torch.testing.assert_close(res.weights, weights)
    torch.testing.assert_close(res.prediction, (weights * mu).sum(2))
    torch.testing.assert_close(res.variance[any_present.expand_as(total)], (1 / total)[any_present.expand_as(total)])
    assert torch.all(torch.isinf(res.variance[~any_present[..., 0]]))
    torch.testing.assert_close(res.modality_predictions, torch.where(present, mu, 0.0))
    torch.testing.assert_close(res.log_variances, torch.where(present, s, 0.0))
    assert bool((res.log_variances > -2).all() and (res.log_variances < 4).all())
    assert torch.equal(res.present, present[..., 0])
    out, w = f.forward_with_weights(x, m)
    torch.testing.assert_close(out, res.prediction)
    assert w is not None and w.shape == (2, 8, 3)
    torch.testing.assert_close(w, weights.mean(-1))  # per-output weights differ; the summary is their mean
    assert not torch.allclose(weights[..., 0], weights[..., 1])


def test_uncertainty_shared_variance_is_one_weight_per_modality() -> None:
    f = UncertaintyLateFusion(DIMS, 4, shared_variance=True).eval()
    assert f.heads[0].net[-1].out_features == 4 + 1
    assert UncertaintyLateFusion(DIMS, 4).heads[0].net[-1].out_features == 4 + 4
    x, m = _inputs(t=8)
    res = f.predict_with_uncertainty(x, m)
    assert res.weights.shape == res.log_variances.shape == (2, 8, 3, 4)
    assert torch.equal(res.weights, res.weights[..., :1].expand_as(res.weights))
    assert torch.equal(res.variance, res.variance[..., :1].expand_as(res.variance))
    _, w = f.forward_with_weights(x, m)
    assert w is not None and torch.equal(w, res.weights[..., 0])
    present = _present(m)
    assert torch.all(w[~present] == 0)
    torch.testing.assert_close(w.sum(-1)[present.any(-1)], torch.ones(int(present.any(-1).sum())))


def test_uncertainty_log_variance_is_clamped() -> None:
    f, x = _linear_uncertainty([0.0, 0.0], [1e4, -1e4])
    m = {k: torch.ones(1, 3, dtype=torch.bool) for k in x}
    res = f.predict_with_uncertainty(x, m)
    torch.testing.assert_close(res.log_variances[0, :, :, 0], torch.tensor([[6.0, -6.0]] * 3))
    assert bool(res.variance.isfinite().all()) and bool(res.weights.isfinite().all())
    f, x = _linear_uncertainty([0.0], [0.1])
    res = f.predict_with_uncertainty(x, {"m0": torch.ones(1, 3, dtype=torch.bool)})
    torch.testing.assert_close(res.log_variances[0, 0, 0, 0], torch.tensor(0.1), atol=1e-4, rtol=0)  # ~identity


def test_uncertainty_everything_missing_has_finite_gradients() -> None:
    f = UncertaintyLateFusion(DIMS, 2)
    x, m = _inputs(t=4)
    x = {k: torch.full_like(v, float("nan")).requires_grad_(True) for k, v in x.items()}
    m = {k: torch.zeros_like(v) for k, v in m.items()}
    res = f.predict_with_uncertainty(x, m)
    assert torch.equal(res.prediction, torch.zeros(2, 4, 2))
    assert torch.all(torch.isinf(res.variance)) and torch.equal(res.weights, torch.zeros(2, 4, 3, 2))
    finite_var = torch.where(res.variance.isfinite(), res.variance, 0.0)
    (res.prediction.sum() + finite_var.sum()).backward()
    assert all(bool(p.grad.isfinite().all()) for p in f.parameters() if p.grad is not None)
    assert all(torch.equal(v.grad, torch.zeros_like(v)) for v in x.values())


def test_gaussian_nll_terms_match_torch() -> None:
    torch.manual_seed(0)
    mu, lv, y = torch.randn(2, 5, 3, 4), torch.randn(2, 5, 3, 4), torch.randn(2, 5, 4)
    present = torch.rand(2, 5, 3) > 0.3
    terms = gaussian_nll_terms(mu, lv, y, present)
    ref = torch.nn.functional.gaussian_nll_loss(mu, y.unsqueeze(2).expand_as(mu), lv.exp(), reduction="none")
    torch.testing.assert_close(terms[present], ref[present])
    assert torch.all(terms[~present] == 0)
    shared = gaussian_nll_terms(mu, lv[..., :1], y, present)  # one variance for all outputs
    torch.testing.assert_close(shared, gaussian_nll_terms(mu, lv[..., :1].expand_as(mu), y, present))


def test_gaussian_nll_terms_ignore_nan_targets_where_not_counted() -> None:
    mu = torch.randn(4, 2, 1, requires_grad=True)
    lv = torch.zeros(4, 2, 1, requires_grad=True)
    y = torch.tensor([[0.0], [float("nan")], [1.0], [float("nan")]])  # unlabelled steps hold NaN
    counted = torch.tensor([[True, True], [False, False], [True, False], [False, False]])
    terms = gaussian_nll_terms(mu, lv, y, counted)
    assert bool(terms.isfinite().all())
    terms.sum().backward()
    assert mu.grad is not None and lv.grad is not None
    assert bool(mu.grad.isfinite().all()) and bool(lv.grad.isfinite().all())
    assert torch.all(mu.grad[~counted] == 0)


def test_gaussian_nll_terms_calibrate_the_variances() -> None:
    """Trained on the per-modality NLL, each variance estimates that modality's squared error."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    y = torch.randn(64, 8, 1, generator=g)
    x = {"clean": y + 0.1 * torch.randn(64, 8, 1, generator=g), "noisy": y + torch.randn(64, 8, 1, generator=g)}
    m = {k: torch.ones(64, 8, dtype=torch.bool) for k in x}
    f = UncertaintyLateFusion({"clean": 1, "noisy": 1}, 1, head_hidden=None)
    opt = torch.optim.Adam(f.parameters(), lr=0.2)
    for _ in range(60):
        opt.zero_grad()
        res = f.predict_with_uncertainty(x, m)
        gaussian_nll_terms(res.modality_predictions, res.log_variances, y, res.present).mean().backward()
        opt.step()
    with torch.no_grad():
        res = f.predict_with_uncertainty(x, m)
    var = res.log_variances.exp().mean(dim=(0, 1, 3))  # [M]: clean, noisy
    # Best linear predictors: residual variance 0.01 / 1.01 for "clean" and 1 / 2 for "noisy".
    assert 0.005 < float(var[0]) < 0.02 and 0.35 < float(var[1]) < 0.8, var
    assert float(res.weights[..., 0, :].mean()) > 0.95


def test_gaussian_nll_terms_shape_errors() -> None:
    mu, lv, y, present = torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.zeros(2, 4), torch.ones(2, 3, dtype=bool)
    with pytest.raises(ValueError, match=r"'target' of gaussian_nll_terms.*\[2, 4\]. Got \[2, 3\]"):
        gaussian_nll_terms(mu, lv, torch.zeros(2, 3), present)
    with pytest.raises(ValueError, match=r"'present' mask of gaussian_nll_terms must be bool"):
        gaussian_nll_terms(mu, lv, y, torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"'log_variances' of gaussian_nll_terms.*\[2, 3, 4\] or \[2, 3, 1\]"):
        gaussian_nll_terms(mu, torch.zeros(2, 3, 2), y, present)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_log_var": 2.0, "max_log_var": 1.0}, "'min_log_var' parameter of UncertaintyLateFusion must be smaller"),
        ({"min_log_var": float("nan")}, "'min_log_var' parameter of UncertaintyLateFusion must be a finite number"),
        ({"max_log_var": float("inf")}, "'max_log_var' parameter of UncertaintyLateFusion must be a finite number"),
        ({"shared_variance": 1}, "'shared_variance' parameter of UncertaintyLateFusion must be a bool"),
        ({"head_hidden": -3}, "'head_hidden' parameter of UncertaintyLateFusion"),
        ({"dropout": -0.1}, "'dropout' parameter of UncertaintyLateFusion"),
    ],
)
def test_uncertainty_bad_kwargs(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        UncertaintyLateFusion(DIMS, 2, **kwargs)


def test_uncertainty_predict_validates_inputs() -> None:
    f = UncertaintyLateFusion(DIMS, 2)
    x, m = _inputs()
    with pytest.raises(ValueError, match=r"missing \['video'\]"):
        f.predict_with_uncertainty({k: v for k, v in x.items() if k != "video"}, m)
