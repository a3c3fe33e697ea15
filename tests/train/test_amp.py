"""Mixed precision: bf16 autocast on CPU, fp16 with a gradient scaler on CUDA, float32 losses, scaler checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from train_toys import MeanNet, make_batches

from mmfuse.train import Callback, HistoryRecorder, TrainConfig, Trainer, resolve_amp
from mmfuse.train.losses import loss_and_count

FAST = {"scheduler": "none", "patience": None, "restore_best": False}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class DtypeProbe(MeanNet):
    """MeanNet that records the dtype of its hidden activations in training forwards."""

    def __init__(self) -> None:
        super().__init__(dropout=0.0)
        self.dtypes: list[torch.dtype] = []

    def forward(self, batch: Any) -> torch.Tensor:
        out = super().forward(batch)
        if self.training:
            self.dtypes.append(self.proj(batch.inputs["a"].new_zeros(1, 5)).dtype)
        return out


def test_resolve_amp() -> None:
    assert resolve_amp("auto", "cpu") == "off"
    assert resolve_amp("off", "cpu") == "off"
    assert resolve_amp("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match=r"'amp'.*'fp16'.*CUDA"):
        resolve_amp("fp16", "cpu")
    with pytest.raises(ValueError, match="'amp'"):
        resolve_amp("fp8", "cpu")


def test_bf16_on_cpu_autocasts_and_trains_to_a_lower_loss() -> None:
    train = make_batches(4, 8, 4, seed=1)
    val = make_batches(1, 16, 4, seed=2)
    torch.manual_seed(0)
    model = DtypeProbe()
    cfg = TrainConfig(epochs=12, lr=1e-2, amp="bf16", device="cpu", monitor="loss", **FAST)
    result = Trainer(cfg).fit(model, train, val)
    assert result.precision == "bf16"
    assert set(model.dtypes) == {torch.bfloat16}  # the forward really ran under bfloat16 autocast
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay float32
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert result.history[-1]["val_loss"] < 0.5 * result.history[0]["val_loss"]


def test_off_runs_in_float32() -> None:
    data = make_batches(1, 4, 3, seed=3)
    model = DtypeProbe()
    result = Trainer(TrainConfig(epochs=1, amp="off", device="cpu", **FAST)).fit(model, data, data)
    assert result.precision == "off" and set(model.dtypes) == {torch.float32}
    auto = Trainer(TrainConfig(epochs=1, amp="auto", device="cpu", **FAST)).fit(DtypeProbe(), data, data)
    assert auto.precision == "off"  # auto is off on a CPU


def test_loss_is_computed_in_float32_under_bf16() -> None:
    seen: list[torch.dtype] = []
    import mmfuse.train.trainer as trainer_module

    def spy(outputs: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        seen.append(outputs.dtype)
        return loss_and_count(outputs, *args, **kwargs)

    data = make_batches(2, 4, 3, seed=4)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer_module, "loss_and_count", spy)
        Trainer(TrainConfig(epochs=1, amp="bf16", device="cpu", **FAST)).fit(MeanNet(), data)
    assert seen == [torch.float32, torch.float32]


def test_fp16_on_cpu_is_a_clear_error() -> None:
    data = make_batches(1, 4, 3, seed=5)
    model = MeanNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"'amp' parameter of TrainConfig is 'fp16'.*CUDA.*bf16"):
        Trainer(TrainConfig(epochs=1, amp="fp16", device="cpu")).fit(model, data, data)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # refused before training


def test_no_scaler_files_without_fp16(tmp_path: Path) -> None:
    data = make_batches(1, 4, 3, seed=6)
    Trainer(TrainConfig(epochs=1, amp="bf16", device="cpu", **FAST)).fit(MeanNet(), data, data, out_dir=tmp_path)
    assert not (tmp_path / "last" / "scaler.json").exists()
    assert json.loads((tmp_path / "trainer_state.json").read_text())["precision"] == "bf16"


class _Interrupt(Callback):
    def on_epoch_end(self, epoch: int, logs: Any) -> None:
        if epoch == 2:
            raise KeyboardInterrupt


@pytest.mark.gpu
@needs_cuda
def test_fp16_on_cuda_uses_a_scaler_and_resumes_it(tmp_path: Path) -> None:
    train = make_batches(4, 8, 4, seed=7)
    val = make_batches(1, 16, 4, seed=8)
    cfg = TrainConfig(epochs=4, lr=1e-2, amp="fp16", device="cuda", monitor="loss", deterministic=True, **FAST)

    def model() -> nn.Module:
        torch.manual_seed(0)
        return DtypeProbe()

    straight = model()
    full = Trainer(cfg).fit(straight, train, val, out_dir=tmp_path / "a")
    assert full.precision == "fp16" and set(straight.dtypes) == {torch.float16}
    losses = [row["train_loss"] for row in full.history]
    assert losses[-1] < losses[0]
    scaler = json.loads((tmp_path / "a" / "last" / "scaler.json").read_text())["structure"]
    assert scaler["scale"] > 0 and "_growth_tracker" in scaler

    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, callbacks=[_Interrupt()]).fit(model(), train, val, out_dir=tmp_path / "b")
    resumed = model()
    rec = HistoryRecorder()
    again = Trainer(cfg, callbacks=[rec]).fit(resumed, train, val, out_dir=tmp_path / "b", resume=True)
    assert [logs["epoch"] for logs in rec.epochs] == [3, 4]
    sa, sb = straight.state_dict(), resumed.state_dict()
    assert all(torch.allclose(sa[k], sb[k], atol=1e-5, rtol=0) for k in sa)
    assert [r["train_loss"] for r in again.history] == pytest.approx(losses, rel=1e-5)


@pytest.mark.gpu
@needs_cuda
def test_auto_on_cuda_picks_bf16_or_fp16() -> None:
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    assert resolve_amp("auto", "cuda") == expected
    data = make_batches(2, 4, 3, seed=9)
    result = Trainer(TrainConfig(epochs=1, device="cuda", **FAST)).fit(MeanNet(), data, data)
    assert result.precision == expected
