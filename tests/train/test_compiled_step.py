"""TrainConfig(compile=True): the training step as compiled graphs, the same losses as eager."""

from __future__ import annotations

from typing import Any

import pytest

from mmfuse.models import ModelConfig, build_model
from mmfuse.train import TrainConfig, Trainer, seed_everything


@pytest.mark.slow  # inductor compiles the forward and backward graphs: ~10-30 s on 2 CPU cores
def test_compiled_training_step_matches_eager(toy_dataset: Any) -> None:
    train, val = toy_dataset.split("train"), toy_dataset.split("val")

    def fit(compiled: bool) -> list[dict[str, Any]]:
        seed_everything(0)
        model = build_model(ModelConfig({"a": 3, "b": 2}, 2, hidden=8, dropout=0.0, encoder="conv"))
        cfg = TrainConfig(epochs=2, batch_size=8, lr=1e-2, device="cpu", compile=compiled)
        return Trainer(cfg).fit(model, train, val).history

    eager, compiled = fit(False), fit(True)
    for a, b in zip(eager, compiled, strict=True):
        for key in ("train_loss", "val_loss", "val_accuracy"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key


def test_compile_must_be_a_flag() -> None:
    with pytest.raises(ValueError, match="compile"):
        TrainConfig(compile="yes")  # type: ignore[arg-type]
