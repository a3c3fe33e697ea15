"""DDP: two gloo processes on CPU reach the metrics of one process (same global batch, same seeds)."""

from __future__ import annotations

import pytest

from mmfuse.train.distributed import launch_local


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    kw = {"epochs": 2, "batch_size": 8, "lr": 3e-3, "seed": 0, "device": "cpu"}
    cfg = {"fusion": "concat", "hidden": 8, "dropout": 0.0, "encoder": "gru"}
    one = launch_local(1, "basic-motions", cfg, **kw)
    two = launch_local(2, "basic-motions", cfg, out_dir=tmp_path / "ddp", **kw)
    assert one.world_size == 1 and two.world_size == 2
    # Tolerance: the same trajectory up to float summation order (gradients averaged in a different order).
    assert two.train_loss == pytest.approx(one.train_loss, rel=1e-4, abs=1e-5)
    assert two.metrics["loss"] == pytest.approx(one.metrics["loss"], rel=1e-4, abs=1e-5)
    assert two.metrics["accuracy"] == pytest.approx(one.metrics["accuracy"], abs=1e-9)
    assert one.train_loss[-1] < one.train_loss[0]  # it learns
    assert (tmp_path / "ddp" / "weights.safetensors").is_file() and (tmp_path / "ddp" / "ddp.json").is_file()


def test_batch_size_must_divide_by_world_size():
    import torch

    from mmfuse.data import load_dataset
    from mmfuse.train.distributed import fit_ddp

    ds = load_dataset("basic-motions").split("train")
    with pytest.raises(ValueError, match="'epochs' parameter of fit_ddp"):
        fit_ddp(torch.nn.Linear(1, 1), ds, epochs=0)
    with pytest.raises(ValueError, match="'batch_size' parameter of fit_ddp"):
        fit_ddp(torch.nn.Linear(1, 1), ds, batch_size=0)
