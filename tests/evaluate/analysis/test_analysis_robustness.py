"""Robustness scores and perturbations with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmfuse.evaluate.analysis import add_noise, drop_steps, effective_robustness, feature_std, relative_robustness
from mmfuse.types import Batch


def _batch() -> Batch:
    pad = torch.tensor([[True, True, True, False], [True, True, False, False]])
    mask_a = torch.tensor([[True, False, True, False], [True, True, False, False]])
    x = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    x = torch.where(mask_a.unsqueeze(-1), x, torch.zeros_like(x))
    return Batch({"a": x, "b": torch.ones(2, 4, 2)}, {"a": mask_a, "b": pad.clone()}, pad, torch.tensor([0, 1]))


def test_relative_and_effective_robustness_by_hand() -> None:
    assert relative_robustness([0, 1, 2], [0.8, 0.8, 0.8]) == pytest.approx(0.8)
    assert relative_robustness([0, 1, 3], [1.0, 0.5, 0.5]) == pytest.approx((0.75 + 1.0) / 3)
    # the model drops 0.1 per unit, the reference 0.3 per unit: mean gap over [0, 1] is 0.1
    assert effective_robustness([0, 1], [0.9, 0.8], [0.7, 0.4]) == pytest.approx(0.1)
    # lower-is-better metric (MAE): rising less than the reference is positive
    assert effective_robustness([0, 1], [1.0, 1.2], [1.0, 2.0], higher_is_better=False) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="strictly increasing"):
        relative_robustness([0, 0], [1, 1])


def test_noise_touches_only_present_steps_of_the_chosen_modality() -> None:
    b = _batch()
    g = torch.Generator().manual_seed(0)
    out = add_noise(b, ["a"], 1.0, {"a": torch.ones(3), "b": torch.ones(2)}, g)
    present = b.masks["a"] & b.padding_mask
    assert torch.equal(out.inputs["a"][~present], b.inputs["a"][~present])
    assert (out.inputs["a"][present] != b.inputs["a"][present]).all()
    assert torch.equal(out.inputs["b"], b.inputs["b"])
    same = add_noise(b, ["a", "b"], 0.0, {"a": torch.ones(3), "b": torch.ones(2)}, g)
    assert torch.equal(same.inputs["a"], b.inputs["a"])
    with pytest.raises(ValueError, match="level"):
        add_noise(b, ["a"], -1.0, {"a": torch.ones(3)}, g)


def test_noise_scales_with_the_feature_std() -> None:
    n = 4000
    x = torch.randn(1, n, 2) * torch.tensor([1.0, 10.0])
    ones = torch.ones(1, n, dtype=torch.bool)
    b = Batch({"a": x}, {"a": ones}, ones)
    std = feature_std(b, "a")
    np.testing.assert_allclose(std.numpy(), [1.0, 10.0], rtol=0.06)
    out = add_noise(b, ["a"], 0.5, {"a": std}, torch.Generator().manual_seed(1))
    np.testing.assert_allclose((out.inputs["a"] - x)[0].std(0).numpy(), [0.5, 5.0], rtol=0.06)


def test_drop_steps_rates() -> None:
    b = _batch()
    g = torch.Generator().manual_seed(0)
    all_gone = drop_steps(b, ["a"], 1.0, g)
    assert not all_gone.masks["a"].any() and (all_gone.inputs["a"] == 0).all()
    assert torch.equal(all_gone.masks["b"], b.masks["b"])
    kept = drop_steps(b, ["a", "b"], 0.0, g)
    assert torch.equal(kept.masks["a"], b.masks["a"]) and torch.equal(kept.inputs["a"], b.inputs["a"])
    with pytest.raises(ValueError, match="rate"):
        drop_steps(b, ["a"], 1.5, g)
