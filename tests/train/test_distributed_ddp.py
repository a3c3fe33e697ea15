"""DDP is a strategy of the one Trainer: two gloo processes follow one process on the same recipe."""

from __future__ import annotations

import pytest
from ddp_jobs import fit_basic_motions

from mmfuse.train.distributed import launch_local
from mmfuse.train.strategy import resolve_strategy


@pytest.mark.slow  # two spawned processes import torch and train: ~15 s on 2 cores
def test_two_gloo_processes_match_one_process(tmp_path):
    one = fit_basic_motions("single")
    two = launch_local(2, fit_basic_motions, out_dir=str(tmp_path / "ddp"))
    assert (one["world_size"], one["strategy"]) == (1, "single")
    assert (two["world_size"], two["strategy"]) == (2, "ddp")
    # Same optimiser, cosine schedule with warm-up, clipping and early stopping: the same trajectory up to the
    # floating-point order in which the gradients of the two halves are summed.
    assert len(two["history"]) == len(one["history"]) == 3
    for a, b in zip(one["history"], two["history"], strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
    assert two["best_epoch"] == one["best_epoch"]
    assert two["weights"] == pytest.approx(one["weights"], rel=1e-4, abs=1e-5)
    assert one["history"][-1]["train_loss"] < one["history"][0]["train_loss"]  # it learns
    # Only the main process wrote, and what it wrote is the normal checkpoint layout.
    assert (tmp_path / "ddp" / "history.json").is_file() and (tmp_path / "ddp" / "last").is_dir()


def test_strategy_names():
    assert resolve_strategy("auto").name == "single"  # no process group here
    with pytest.raises(ValueError, match="'strategy' parameter of Trainer must be one of"):
        resolve_strategy("horovod")
    with pytest.raises(RuntimeError, match=r"needs an initialised torch\.distributed process group"):
        resolve_strategy("ddp")


def test_launch_local_refuses_bad_arguments():
    with pytest.raises(ValueError, match="'world_size' parameter of launch_local"):
        launch_local(0, fit_basic_motions)
    with pytest.raises(ValueError, match="'fn' parameter of launch_local"):
        launch_local(1, lambda: None)
