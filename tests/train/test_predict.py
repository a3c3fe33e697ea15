from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
import torch
from train_toys import MeanNet, make_batch, make_batches

from mmfuse.train import evaluate_model, predict, resolve_device, seed_everything
from mmfuse.train.seeding import capture_rng_state, restore_rng_state


def test_sample_level_classification_predictions() -> None:
    torch.manual_seed(0)
    model = MeanNet()
    batches = make_batches(2, 3, 4, seed=1)
    p = predict(model, batches)
    assert p.task == "classification" and p.level == "sample" and p.step_index is None
    assert p.ids == ["s0", "s1", "s2", "s3", "s4", "s5"] and p.sample_index.tolist() == list(range(6))
    assert p.probs is not None and p.probs.shape == (6, 2)
    np.testing.assert_allclose(p.probs.sum(1), 1.0, rtol=1e-6)
    assert np.array_equal(p.y_pred, p.probs.argmax(1))
    assert np.array_equal(p.y_true, torch.cat([b.targets for b in batches]).numpy())
    # predict leaves the train/eval mode as it found it
    model.eval()
    predict(model, batches)
    assert not model.training
    model.train()
    predict(model, batches)
    assert model.training


def test_step_level_regression_squeezes_single_output() -> None:
    batch = make_batch(3, 4, seed=2, lengths=[4, 1, 3], step_labels=True, regression=True)
    p = predict(MeanNet(out_dim=1, step=True), [batch])
    assert p.level == "step" and p.y_pred.shape == (8,) and p.y_true is not None and p.y_true.shape == (8,)
    assert p.probs is None and p.y_pred.dtype == np.float32
    assert p.step_index is not None and p.step_index.tolist() == [0, 1, 2, 3, 0, 0, 1, 2]


def test_predict_without_targets_needs_a_task() -> None:
    batch = dataclasses.replace(make_batch(2, 3, seed=3), targets=None, ids=[])
    with pytest.raises(ValueError, match="task="):
        predict(MeanNet(), [batch])
    p = predict(MeanNet(), [batch], task="classification")
    assert p.y_true is None and p.ids == ["0", "1"] and p.y_pred.shape == (2,)


def test_evaluate_model_with_class_names() -> None:
    torch.manual_seed(0)
    batches = make_batches(2, 4, 3, seed=4)
    metrics = evaluate_model(MeanNet(), batches, "classification", class_names=["neg", "pos"])
    p = predict(MeanNet(), batches)
    assert metrics["class_names"] == ["neg", "pos"]
    assert 0.0 <= metrics["accuracy"] <= 1.0 and "confusion_matrix" in metrics
    assert p.y_true is not None and sum(map(sum, metrics["confusion_matrix"])) == len(p.y_true)
    reg = evaluate_model(MeanNet(out_dim=1), make_batches(1, 6, 3, seed=5, regression=True), "regression")
    assert {"mae", "rmse", "pearson"} <= set(reg)


def test_seed_everything_and_rng_snapshots() -> None:
    seed_everything(11)
    first = (random.random(), np.random.rand(), torch.rand(1).item())  # noqa: NPY002
    seed_everything(11)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first  # noqa: NPY002
    snapshot = capture_rng_state()
    draws = (random.random(), np.random.rand(), torch.rand(1).item())  # noqa: NPY002
    restore_rng_state(*snapshot)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == draws  # noqa: NPY002
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in {"cpu", "cuda"}
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            resolve_device("cuda")
