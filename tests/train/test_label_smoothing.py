"""Label smoothing reaches the trainer's classification losses and is refused for regression."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from train_toys import MeanNet, make_batches

from mmfuse.train import TrainConfig, Trainer

FAST = {"scheduler": "none", "patience": None, "device": "cpu", "restore_best": False, "monitor": "loss"}


def test_training_and_validation_losses_use_label_smoothing() -> None:
    train = make_batches(1, 8, 3, seed=1)
    val = make_batches(1, 8, 3, seed=2)
    torch.manual_seed(0)
    model = MeanNet(dropout=0.0)
    losses: list[float] = []

    class Grab:
        def on_batch_end(self, batch: int, logs: dict[str, float]) -> None:
            losses.append(logs["loss"])

    torch.manual_seed(0)
    start = MeanNet(dropout=0.0)
    start.load_state_dict(model.state_dict())
    result = Trainer(TrainConfig(epochs=1, lr=1e-3, label_smoothing=0.3, **FAST), callbacks=[Grab()]).fit(
        model, train, val
    )
    start.eval()
    with torch.no_grad():  # the training loss is that of the starting weights on the training batch
        expected_train = F.cross_entropy(start(train[0]), train[0].targets, label_smoothing=0.3)
        plain_train = F.cross_entropy(start(train[0]), train[0].targets)
    assert losses[0] == pytest.approx(float(expected_train), rel=1e-5)
    assert abs(losses[0] - float(plain_train)) > 1e-3
    model.eval()
    with torch.no_grad():  # validation uses the weights after the epoch, with the same smoothing
        expected_val = F.cross_entropy(model(val[0]), val[0].targets, label_smoothing=0.3)
    assert result.history[0]["val_loss"] == pytest.approx(float(expected_val), rel=1e-5)


def test_regression_refuses_label_smoothing() -> None:
    data = make_batches(1, 4, 3, seed=3, regression=True)
    with pytest.raises(ValueError, match=r"'label_smoothing'.*classification only.*0\.1"):
        Trainer(TrainConfig(epochs=1, label_smoothing=0.1, **FAST)).fit(MeanNet(out_dim=1), data, data)
