"""The one-cycle schedule: stepped per optimiser step over the whole run, and resumed exactly."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook
from train_toys import MeanNet, make_batches

from mmfuse.models import ModelConfig, build_model
from mmfuse.train import Callback, HistoryRecorder, TrainConfig, Trainer, build_scheduler

DEVICE = os.environ.get("MMFUSE_TEST_DEVICE", "cpu")


def _rates_per_step(cfg: TrainConfig, data: Any, model: nn.Module) -> list[float]:
    """The learning rate of group 0 at every optimiser step of a fit."""
    seen: list[float] = []

    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        seen.append(float(opt.param_groups[0]["lr"]))

    handle = register_optimizer_step_pre_hook(hook)
    try:
        Trainer(cfg).fit(model, data, data)
    finally:
        handle.remove()
    return seen


def _one_cycle(step: int, total: int, peak: float, pct: float) -> float:
    """OneCycleLR's cosine rate, written out: lr/25 -> lr over pct of the steps, then -> lr/25e4."""
    start, end = peak / 25, peak / 25 / 1e4
    rise_end = pct * total - 1
    if step <= rise_end:
        t = step / rise_end
        return start + (peak - start) * (1 - math.cos(math.pi * t)) / 2
    t = (step - rise_end) / (total - 1 - rise_end)
    return end + (peak - end) * (1 + math.cos(math.pi * t)) / 2


def test_onecycle_steps_once_per_optimizer_step_over_the_whole_run() -> None:
    data = make_batches(3, 4, 3, seed=1)  # 3 steps per epoch
    cfg = TrainConfig(epochs=4, lr=0.1, scheduler="onecycle", warmup_epochs=1, patience=None, device=DEVICE)
    torch.manual_seed(0)
    rates = _rates_per_step(cfg, data, MeanNet())
    total = 4 * 3
    assert len(rates) == total
    expected = [_one_cycle(i, total, 0.1, 1 / 4) for i in range(total)]
    assert rates == pytest.approx(expected, rel=1e-6)
    assert max(rates) == pytest.approx(0.1) and rates.index(max(rates)) == 2  # the peak ends the first epoch
    assert rates[-1] == pytest.approx(0.1 / 25e4)  # annealed to lr / (div_factor * final_div_factor)


def test_cosine_still_steps_once_per_epoch() -> None:
    data = make_batches(3, 4, 3, seed=2)
    cfg = TrainConfig(epochs=3, lr=0.1, scheduler="cosine", warmup_epochs=1, patience=None, device=DEVICE)
    torch.manual_seed(0)
    rates = _rates_per_step(cfg, data, MeanNet())
    assert rates == pytest.approx([0.05] * 3 + [0.1] * 3 + [0.05] * 3)


def test_onecycle_history_lr_is_the_rate_at_the_start_of_each_epoch() -> None:
    data = make_batches(2, 4, 3, seed=3)
    cfg = TrainConfig(epochs=3, lr=0.2, scheduler="onecycle", warmup_epochs=1, patience=None, device=DEVICE)
    torch.manual_seed(0)
    result = Trainer(cfg).fit(MeanNet(), data, data)
    lrs = [row["lr"] for row in result.history]
    assert lrs == pytest.approx([_one_cycle(i, 6, 0.2, 1 / 3) for i in (0, 2, 4)])


def test_onecycle_counts_the_batches_of_a_dataset(toy_dataset: Any) -> None:
    train = toy_dataset.split("train")  # 48 sequences, batch 10 -> 5 batches (the last one short)
    cfg = TrainConfig(epochs=2, batch_size=10, scheduler="onecycle", warmup_epochs=1, patience=None, device=DEVICE)
    torch.manual_seed(0)
    model = build_model(ModelConfig({"a": 3, "b": 2}, out_dim=2, hidden=8, encoder="conv"))
    rates = _rates_per_step(cfg, train, model)
    assert len(rates) == 10
    assert rates == pytest.approx([_one_cycle(i, 10, cfg.lr, 0.5) for i in range(10)], rel=1e-6)


def test_onecycle_needs_the_number_of_steps() -> None:
    opt = torch.optim.AdamW(nn.Linear(1, 1).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="'steps_per_epoch'"):
        build_scheduler(opt, TrainConfig(epochs=2, scheduler="onecycle"))


class _Interrupt(Callback):
    def on_epoch_end(self, epoch: int, logs: Any) -> None:
        if epoch == 2:
            raise KeyboardInterrupt


def _weights_equal(a: nn.Module, b: nn.Module, atol: float) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.allclose(sa[k].cpu(), sb[k].cpu(), atol=atol, rtol=0) for k in sa)


def test_onecycle_resume_matches_an_uninterrupted_run(toy_dataset: Any, tmp_path: Path) -> None:
    train, val = toy_dataset.split("train"), toy_dataset.split("val")
    cfg = TrainConfig(
        epochs=4,
        batch_size=8,
        lr=1e-2,
        scheduler="onecycle",
        warmup_epochs=1,
        monitor="loss",
        patience=None,
        restore_best=False,
        seed=5,
        device=DEVICE,
        deterministic=DEVICE != "cpu",
    )

    def model(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return build_model(ModelConfig({"a": 3, "b": 2}, out_dim=2, hidden=8, dropout=0.2, encoder="conv"))

    straight = model(1)
    full = Trainer(cfg).fit(straight, train, val, out_dir=tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, callbacks=[_Interrupt()]).fit(model(1), train, val, out_dir=tmp_path / "b")
    saved = json.loads((tmp_path / "b" / "last" / "scheduler.json").read_text())["structure"]
    assert saved["last_epoch"] == 2 * 6 and saved["total_steps"] == 4 * 6  # the step count is in the checkpoint

    resumed = model(99)
    rec = HistoryRecorder()
    again = Trainer(cfg, callbacks=[rec]).fit(resumed, train, val, out_dir=tmp_path / "b", resume=True)
    assert [logs["epoch"] for logs in rec.epochs] == [3, 4]
    assert _weights_equal(straight, resumed, atol=1e-6)
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in again.history] == [
        {k: v for k, v in r.items() if k not in drop} for r in full.history
    ]
    lrs = [row["lr"] for row in full.history]
    assert lrs[2] != lrs[3]  # the rate kept moving after the resume point


def test_onecycle_resumed_with_more_epochs_warns_and_keeps_the_final_rate(tmp_path: Path) -> None:
    data = make_batches(2, 4, 3, seed=4)
    cfg = TrainConfig(epochs=2, scheduler="onecycle", warmup_epochs=1, patience=None, device=DEVICE)
    torch.manual_seed(0)
    Trainer(cfg).fit(MeanNet(), data, data, out_dir=tmp_path)
    longer = TrainConfig(**{**cfg.to_dict(), "epochs": 3})
    with pytest.warns(UserWarning, match="epochs"):
        result = Trainer(longer).fit(MeanNet(), data, data, out_dir=tmp_path, resume=True)
    assert result.epochs_run == 3
    assert result.history[-1]["lr"] < cfg.lr * 1e-3  # stays at the annealed rate, no error past the last step
