"""``tune --executor ray``: the search's workers as Ray tasks on one storage; one worker equals a local search."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from experiment_support import read_csv, without_time, write_shifted_toy
from mmfuse.evaluate.executors import RunFailed
from mmfuse.evaluate.tune import TuneConfig, tune

ray = pytest.importorskip("ray", reason="the 'ray' extra is not installed (pip install 'mmfuse[ray]')")


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shifted_toy(tmp_path_factory.mktemp("tune-ray") / "toy", name="toy-tune")


def _config(toy: Path, out: Path, **kw: Any) -> TuneConfig:
    base: dict[str, Any] = {
        "dataset": str(toy),
        "fusions": ["concat"],
        "trials": 3,
        "seeds": 1,
        "epochs": 1,
        "out_dir": str(out),
        "search_space": {"train.lr": [1e-4, 0.01, 0.05], "model.hidden": [8]},
        "sampler": "random",
        "pruner": "none",
        "device": "cpu",
    }
    return TuneConfig(**{**base, **kw})


def _trials(out: Path) -> list[dict[str, str]]:
    return without_time(read_csv(out / "trials.csv"))


def _json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_one_ray_worker_gives_the_local_search(local_ray: None, toy: Path, tmp_path: Path) -> None:
    local = tune(_config(toy, tmp_path / "local"))
    on_ray = tune(_config(toy, tmp_path / "ray", executor="ray"))
    assert _trials(tmp_path / "ray") == _trials(tmp_path / "local")
    assert on_ray.best == local.best
    assert _json(tmp_path / "ray" / "best.json") == _json(tmp_path / "local" / "best.json")
    meta_ray, meta_local = (_json(tmp_path / run / "tune.json") for run in ("ray", "local"))
    for meta in (meta_ray, meta_local):  # the folder's own storage path and the finishing time differ by design
        del meta["storage"], meta["finished"]
    assert meta_ray == meta_local


def test_two_ray_workers_share_the_budget(local_ray: None, toy: Path, tmp_path: Path) -> None:
    tune(_config(toy, tmp_path / "two", executor="ray", workers=2))
    rows = _trials(tmp_path / "two")
    assert sorted(int(r["trial"]) for r in rows) == [0, 1, 2]  # the budget exactly, none lost or duplicated
    assert {r["state"] for r in rows} == {"COMPLETE"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="fails every trial by asking for a CUDA device there is none of")
def test_a_failing_ray_worker_is_retried_once_then_named(local_ray: None, toy: Path, tmp_path: Path) -> None:
    # the executor's one retry rule: the worker raised, was run once more, and raised again
    with pytest.raises(
        RunFailed, match=r"tune worker 0 of fusion 'concat' \(study 'toy-tune:concat'\) failed after 1 retry"
    ):
        tune(_config(toy, tmp_path / "fail", executor="ray", device="cuda"))
    assert [r["state"] for r in _trials(tmp_path / "fail")] == ["FAIL", "FAIL"]  # one failed trial per attempt


def test_a_bad_executor_is_refused(toy: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'executor' parameter must be one of \['local', 'ray'\]"):
        _config(toy, tmp_path / "x", executor="slurm")
