"""The learning-rate range test: a sensible suggestion on a toy problem, and the model left as it was."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from train_toys import MeanNet, make_batches

from mmfuse.train import LRFinderResult, TrainConfig, Trainer, find_lr, suggest_lr
from mmfuse.types import Batch

CFG = TrainConfig(device="cpu", grad_clip=None, weight_decay=0.0)


def _linear_data(n: int = 6, b: int = 64, seed: int = 0) -> list[Batch]:
    """``y = x @ w + small noise`` with ``x`` in 4 dimensions: a convex problem whose scale is known."""
    g = torch.Generator().manual_seed(seed)
    w = torch.tensor([1.5, -2.0, 0.5, 1.0])
    out = []
    for _ in range(n):
        x = torch.randn(b, 1, 4, generator=g)  # [B, T=1, 4]
        y = x[:, 0, :] @ w + 0.05 * torch.randn(b, generator=g)  # [B]
        ones = torch.ones(b, 1, dtype=torch.bool)
        out.append(Batch({"x": x}, {"x": ones}, ones, y))
    return out


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.lin(batch.inputs["x"][:, 0, :])[:, 0]  # [B]


def _loss_after(lr: float, data: list[Batch], epochs: int = 4) -> tuple[float, float]:
    """Validation loss before and after ``epochs`` of training at a constant ``lr``."""
    torch.manual_seed(0)
    cfg = TrainConfig(
        epochs=epochs,
        lr=lr,
        scheduler="none",
        patience=None,
        restore_best=False,
        monitor="loss",
        device="cpu",
        grad_clip=None,
        weight_decay=0.0,
    )
    torch.manual_seed(0)
    model = Linear()
    with torch.no_grad():
        start = float(torch.stack([(model(b) - b.targets).pow(2).mean() for b in data]).mean())
    result = Trainer(cfg).fit(model, data, data)
    return start, result.history[-1]["val_loss"]


def test_suggestion_lies_between_useless_and_diverging_rates() -> None:
    data = _linear_data()
    torch.manual_seed(0)
    result = find_lr(Linear(), data, config=CFG, start_lr=1e-6, end_lr=100.0, num_steps=60)
    assert result.diverged and len(result.lrs) < 60  # the loss blew up before the end of the range
    assert result.suggestion is not None
    # 1e-5 does nothing in 24 steps; the rate where the test stopped makes the loss worse than at the start
    start, after = _loss_after(1e-5, data)
    assert after > 0.99 * start
    start, after = _loss_after(result.lrs[-1], data)
    assert after > start
    assert 1e-5 < result.suggestion < result.lrs[-1]
    assert 1e-2 <= result.suggestion <= 3.0  # Adam on a unit-scale linear problem
    start, after = _loss_after(result.suggestion, data)
    assert after < 0.05 * start  # and it trains well
    # the rates ramp exponentially from start_lr
    ratios = np.diff(np.log(result.lrs))
    assert result.lrs[0] == pytest.approx(1e-6) and np.allclose(ratios, math.log(1e8) / 59)


def test_model_rng_and_flags_are_restored() -> None:
    torch.manual_seed(0)
    model = MeanNet()
    model.eval()
    model.proj.bias.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    random.seed(11)
    np.random.seed(11)  # noqa: NPY002
    torch.manual_seed(11)
    expected = (random.random(), np.random.rand(), torch.rand(1))  # noqa: NPY002
    random.seed(11)
    np.random.seed(11)  # noqa: NPY002
    torch.manual_seed(11)
    data = make_batches(3, 8, 4, seed=1)
    result = find_lr(model, data, config=TrainConfig(device="cpu", seed=3), num_steps=20, end_lr=10.0)
    assert len(result.lrs) >= 5
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert not model.training and not model.proj.bias.requires_grad and model.proj.weight.requires_grad
    got = (random.random(), np.random.rand(), torch.rand(1))  # noqa: NPY002
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_freeze_is_honoured_and_restored() -> None:
    torch.manual_seed(0)
    model = MeanNet()
    calls: list[bool] = []
    original = model.forward

    def forward(batch: Any) -> torch.Tensor:
        calls.append(model.proj.weight.requires_grad)
        return original(batch)

    model.forward = forward  # type: ignore[method-assign]
    find_lr(model, make_batches(2, 4, 3, seed=2), config=TrainConfig(device="cpu", freeze=["proj"]), num_steps=5)
    assert calls and not any(calls)  # frozen during the test
    assert model.proj.weight.requires_grad  # and trainable again afterwards


def test_result_to_dict_and_plot(tmp_path: Path) -> None:
    torch.manual_seed(0)
    result = find_lr(Linear(), _linear_data(n=2, b=16), config=CFG, num_steps=10, start_lr=1e-3, end_lr=1.0)
    doc = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert doc["lrs"] == result.lrs and doc["losses"] == result.losses and len(doc["raw_losses"]) == len(doc["lrs"])
    assert doc["config"]["num_steps"] == 10 and doc["suggestion"] == result.suggestion
    path = result.plot(tmp_path / "sub" / "lr.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["lr.png"]  # no temporary file left
    empty = LRFinderResult([], [], [], None, True)
    assert empty.lowest_loss_lr is None and empty.plot(tmp_path / "empty.png").is_file()


def test_smoothing_is_a_bias_corrected_moving_average() -> None:
    torch.manual_seed(0)
    result = find_lr(Linear(), _linear_data(n=3, b=16), config=CFG, num_steps=12, smooth=0.3, end_lr=1e-2)
    raw = np.asarray(result.raw_losses)
    avg, expected = 0.0, []
    for i, value in enumerate(raw):
        avg = 0.7 * avg + 0.3 * value
        expected.append(avg / (1 - 0.7 ** (i + 1)))
    assert result.losses == pytest.approx(expected, rel=1e-9)
    assert result.losses[0] == pytest.approx(raw[0])
    none = find_lr(Linear(), _linear_data(n=3, b=16), config=CFG, num_steps=6, smooth=1.0, end_lr=1e-2)
    assert none.losses == pytest.approx(none.raw_losses)


def test_suggest_lr_rule() -> None:
    lrs = np.logspace(-5, 0, 11)
    losses = [1.0, 1.0, 1.0, 0.99, 0.95, 0.8, 0.5, 0.35, 0.3, 0.6, 3.0]
    assert suggest_lr(lrs, losses) == pytest.approx(lrs[6])  # steepest fall, before the minimum
    assert suggest_lr(lrs, list(range(11))) is None  # never falls
    assert suggest_lr(lrs[:2], [1.0, 0.5]) is None  # too few points
    with pytest.raises(ValueError, match="equal length"):
        suggest_lr(lrs, [1.0])


def test_suggest_lr_is_not_the_cliff() -> None:
    # A gentle fall, then a cliff into the lowest loss and divergence: the one-sided slope into the lowest point
    # is the steepest, but training at (or just below) that rate is what the range test warns against.
    lrs = np.logspace(-5, 0, 11)
    losses = [1.0, 1.0, 0.98, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.2, 5.0]
    lowest = lrs[9]
    suggestion = suggest_lr(lrs, losses)
    assert suggestion is not None
    assert suggestion == pytest.approx(lowest / 10)  # steepest before the minimum is lrs[8]: capped at a tenth
    assert LRFinderResult(list(lrs), losses, losses, suggestion, True).lowest_loss_lr == pytest.approx(lowest)
    # a steep fall well before the minimum is kept as it is
    early = [1.0, 1.0, 1.0, 0.95, 0.5, 0.42, 0.4, 0.39, 0.38, 0.37, 5.0]
    assert suggest_lr(lrs, early) == pytest.approx(lrs[4])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"start_lr": 0.0}, "'start_lr'"),
        ({"end_lr": float("nan")}, "'end_lr'"),
        ({"start_lr": 1.0, "end_lr": 0.5}, "'end_lr'.*greater"),
        ({"num_steps": 3}, "'num_steps'"),
        ({"smooth": 1.5}, "'smooth'"),
        ({"diverge_factor": 1.0}, "'diverge_factor'"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        find_lr(MeanNet(), make_batches(1, 4, 3, seed=3), config=CFG, **kwargs)


def test_bad_data() -> None:
    with pytest.raises(TypeError, match="one-shot"):
        find_lr(MeanNet(), iter(make_batches(1, 4, 3, seed=4)), config=CFG)
    with pytest.raises(ValueError, match="empty"):
        find_lr(MeanNet(), [], config=CFG)
    with pytest.raises(ValueError, match="'label_smoothing'"):
        find_lr(
            MeanNet(out_dim=1),
            make_batches(1, 4, 3, seed=5, regression=True),
            config=TrainConfig(device="cpu", label_smoothing=0.1),
        )
