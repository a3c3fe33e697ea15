from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from train_toys import make_batch

from mmfuse.train import compute_loss, select_rows


def _step_batch():
    return make_batch(3, 5, seed=1, lengths=[5, 3, 1], step_labels=True)


def test_step_level_cross_entropy_ignores_padded_steps() -> None:
    batch = _step_batch()
    logits = torch.randn(3, 5, 2)
    base = compute_loss(logits, batch, "classification")

    pad = ~batch.padding_mask  # [B, T]
    # Whatever the targets say at padded steps ...
    targets = batch.targets.clone()
    targets[pad] = 1
    same_targets = compute_loss(logits, dataclasses.replace(batch, targets=targets), "classification")
    # ... and whatever the model outputs there (even NaN), the loss does not move.
    noisy = torch.where(pad[..., None], torch.full_like(logits, float("nan")), logits)
    same_logits = compute_loss(noisy, batch, "classification")
    assert torch.allclose(base, same_targets) and torch.allclose(base, same_logits)

    real = batch.padding_mask
    expected = F.cross_entropy(logits[real], batch.targets[real])
    assert torch.allclose(base, expected)


def test_padded_steps_get_exactly_zero_gradient() -> None:
    batch = _step_batch()
    logits = torch.randn(3, 5, 2, requires_grad=True)
    compute_loss(logits, batch, "classification").backward()
    assert logits.grad is not None
    assert torch.all(logits.grad[~batch.padding_mask] == 0)
    assert torch.any(logits.grad[batch.padding_mask] != 0)


def test_ignore_index_inside_real_steps_is_skipped() -> None:
    batch = make_batch(2, 4, seed=2, step_labels=True)
    targets = batch.targets.clone()
    targets[0, 1] = -100
    logits = torch.randn(2, 4, 2)
    got = compute_loss(logits, dataclasses.replace(batch, targets=targets), "classification")
    keep = targets != -100
    assert torch.allclose(got, F.cross_entropy(logits[keep], targets[keep]))


def test_step_level_regression_is_masked_mse() -> None:
    batch = make_batch(3, 5, seed=3, lengths=[5, 2, 4], step_labels=True, regression=True)
    preds = torch.randn(3, 5, 1)
    base = compute_loss(preds, batch, "regression")
    targets = batch.targets.clone()
    targets[~batch.padding_mask] = 1e6
    assert torch.allclose(base, compute_loss(preds, dataclasses.replace(batch, targets=targets), "regression"))
    real = batch.padding_mask
    assert torch.allclose(base, F.mse_loss(preds[..., 0][real], batch.targets[real]))


def test_sample_level_loss_and_class_weights() -> None:
    batch = make_batch(6, 3, seed=4)
    logits = torch.randn(6, 2)
    assert torch.allclose(compute_loss(logits, batch, "classification"), F.cross_entropy(logits, batch.targets))
    w = torch.tensor([0.2, 3.0])
    assert torch.allclose(
        compute_loss(logits, batch, "classification", class_weights=w),
        F.cross_entropy(logits, batch.targets, weight=w),
    )


def test_label_smoothing_is_passed_on() -> None:
    batch = make_batch(6, 3, seed=6)
    logits = torch.randn(6, 2)
    got = compute_loss(logits, batch, "classification", label_smoothing=0.2)
    assert torch.allclose(got, F.cross_entropy(logits, batch.targets, label_smoothing=0.2))
    assert not torch.allclose(got, compute_loss(logits, batch, "classification"))


def test_ambiguous_regression_output_needs_a_level() -> None:
    batch = make_batch(2, 4, seed=7, lengths=[4, 2], step_labels=True, regression=True)
    preds = torch.randn(2, 4)
    with pytest.raises(ValueError, match="level="):
        compute_loss(preds, batch, "regression")
    real = batch.padding_mask
    got = compute_loss(preds, batch, "regression", level="step")
    assert torch.allclose(got, F.mse_loss(preds[real], batch.targets[real]))


def test_shape_mismatch_is_reported() -> None:
    batch = make_batch(2, 4, seed=5)
    with pytest.raises(ValueError, match="logits"):
        compute_loss(torch.randn(2, 4, 2, 1), batch, "classification", level="sample")
    with pytest.raises(ValueError, match="batch size"):
        compute_loss(torch.randn(3, 2), batch, "classification")


def test_select_rows_reports_positions() -> None:
    batch = _step_batch()
    rows = select_rows(torch.randn(3, 5, 2), batch, "classification")
    assert rows.step is not None
    assert rows.sample.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 2]
    assert rows.step.tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 0]


def test_an_unknown_loss_option_is_refused_with_the_valid_ones() -> None:
    batch = make_batch(2, 4, seed=2, step_labels=True)
    logits = torch.zeros(2, 4, 3)
    with pytest.raises(TypeError, match=r"Unknown loss option\(s\) \['smoothing'\].*label_smoothing"):
        compute_loss(logits, batch, "classification", smoothing=0.1)  # type: ignore[call-arg]
