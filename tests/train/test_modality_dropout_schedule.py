"""The trainer ramps a model's modality-dropout rate to its target and records it per epoch."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from train_toys import MeanNet, make_batches

from mmfuse.errors import MmfuseWarning
from mmfuse.models import ModelConfig, build_model
from mmfuse.train import TrainConfig, Trainer

FAST = {"scheduler": "none", "patience": None, "device": "cpu"}


class DropoutStub(MeanNet):
    """MeanNet with the modality-dropout hooks of MultimodalModel; logs the rate seen by every training forward."""

    def __init__(self, target: float) -> None:
        super().__init__()
        self._target = target
        self.rate = target
        self.seen: list[float] = []

    @property
    def modality_dropout_target(self) -> float:
        return self._target

    def set_modality_dropout(self, p: float) -> None:
        self.rate = float(p)

    def forward(self, batch: Any) -> torch.Tensor:
        if self.training:
            self.seen.append(self.rate)
        return super().forward(batch)


@pytest.mark.parametrize(
    ("schedule", "warmup", "expected"),
    [
        ("linear", 4, [0.0, 0.1, 0.2, 0.3, 0.4, 0.4]),
        ("cosine", 2, [0.0, 0.2, 0.4, 0.4, 0.4, 0.4]),
        ("constant", 3, [0.4] * 6),
        ("linear", 0, [0.4] * 6),
    ],
)
def test_rate_follows_the_ramp_and_is_recorded(schedule: str, warmup: int, expected: list[float]) -> None:
    data = make_batches(2, 4, 3, seed=1)
    model = DropoutStub(0.4)
    cfg = TrainConfig(epochs=6, modality_dropout_schedule=schedule, modality_dropout_warmup_epochs=warmup, **FAST)
    result = Trainer(cfg).fit(model, data, data)
    assert [row["modality_dropout"] for row in result.history] == pytest.approx(expected)
    assert model.seen == pytest.approx([r for r in expected for _ in range(2)])  # 2 batches per epoch
    assert model.rate == 0.4  # back at the target after the fit


def test_rate_is_restored_when_the_fit_fails() -> None:
    data = make_batches(1, 4, 3, seed=2)
    model = DropoutStub(0.3)
    cfg = TrainConfig(epochs=3, monitor="pearson", modality_dropout_schedule="linear", modality_dropout_warmup_epochs=2)
    with pytest.raises(ValueError, match="pearson"):  # unknown monitor: fails after the first epoch
        Trainer(cfg).fit(model, data, data)
    assert model.seen == [0.0] and model.rate == 0.3


def test_a_model_without_the_hook_trains_and_warns_only_when_a_ramp_is_asked_for() -> None:
    data = make_batches(1, 4, 3, seed=3)
    with pytest.warns(MmfuseWarning, match="set_modality_dropout"):
        result = Trainer(
            TrainConfig(epochs=1, modality_dropout_schedule="linear", modality_dropout_warmup_epochs=2, **FAST)
        ).fit(MeanNet(), data, data)
    assert "modality_dropout" not in result.history[0]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = Trainer(TrainConfig(epochs=1, **FAST)).fit(MeanNet(), data, data)
    assert "modality_dropout" not in result.history[0]


def test_multimodal_model_rate_is_ramped() -> None:
    data = make_batches(2, 4, 3, seed=4)
    torch.manual_seed(0)
    model = build_model(ModelConfig({"a": 3, "b": 2}, out_dim=2, hidden=8, encoder="conv", modality_dropout=0.5))
    if not hasattr(model, "set_modality_dropout"):
        pytest.skip("MultimodalModel has no set_modality_dropout in this checkout")
    cfg = TrainConfig(epochs=3, modality_dropout_schedule="linear", modality_dropout_warmup_epochs=2, **FAST)
    result = Trainer(cfg).fit(model, data, data)
    assert [row["modality_dropout"] for row in result.history] == pytest.approx([0.0, 0.25, 0.5])
    assert model.modality_dropout_target == 0.5
