"""``compare --executor ray``: every fusion x seed run a Ray task, results identical to a serial run, failures named."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from experiment_support import read_csv, without_time
from mmfuse.evaluate.compare import CompareConfig, compare
from mmfuse.evaluate.executors import LocalProcessExecutor, RayExecutor, RunFailed, make_executor

ray = pytest.importorskip("ray", reason="the 'ray' extra is not installed (pip install 'mmfuse[ray]')")

SETTINGS: dict[str, Any] = {
    "fusions": ["concat", "weighted"],
    "seeds": 1,
    "epochs": 2,
    "model_overrides": {"hidden": 16},
    "train_overrides": {"lr": 0.03},
    "device": "cpu",
}


def _rows(out: Path) -> list[dict[str, str]]:
    return without_time(read_csv(out / "results.csv"))


def test_ray_runs_match_a_serial_run_and_resume_reuses_them(local_ray: None, tmp_path: Path) -> None:
    serial = compare(CompareConfig(out_dir=str(tmp_path / "serial"), **SETTINGS))
    on_ray = compare(CompareConfig(out_dir=str(tmp_path / "ray"), executor="ray", **SETTINGS))
    assert len(on_ray.rows) == 2
    assert _rows(tmp_path / "ray") == _rows(tmp_path / "serial")
    assert [r["fusion"] for r in on_ray.summary] == [r["fusion"] for r in serial.summary]
    # every run wrote its result.json as it finished: a resumed comparison reuses them all
    resumed = compare(CompareConfig(out_dir=str(tmp_path / "ray"), executor="ray", resume=True, **SETTINGS))
    assert without_time(resumed.rows) == without_time(on_ray.rows)


def test_a_failed_ray_task_is_retried_then_named(local_ray: None, monkeypatch: pytest.MonkeyPatch) -> None:
    done: list[int] = []
    cancelled: list[Any] = []
    monkeypatch.setattr(ray, "cancel", lambda ref, **kwargs: cancelled.append(ref))
    with pytest.raises(RunFailed, match=r"The run broken seed 3 failed after 1 retry: TypeError"):
        # int(dict) raises TypeError in the task, every time
        RayExecutor(max_retries=1).run([{"fusion": "broken", "seed": 3}], int, lambda i, row: done.append(i))
    assert done == []
    # The failed task has finished: it is not force-cancelled (doing so can abort the driver inside Ray).
    assert cancelled == []


def test_a_failed_local_run_is_named() -> None:
    with pytest.raises(RunFailed, match=r"The run broken seed 0 failed: TypeError"):
        LocalProcessExecutor(workers=1).run([{"fusion": "broken", "seed": 0}], int, lambda i, row: None)


def _mark_or_fail(spec: dict[str, Any]) -> dict[str, Any]:
    """A run for the local executor's worker process: seed 0 fails at once; the others wait for a 'go' file (so
    none finishes, and the pool hands out no further spec, before the failure has been handled), then leave a file.
    """
    folder = Path(spec["folder"])
    if spec["seed"] == 0:
        raise ValueError("boom")
    deadline = time.monotonic() + 30.0
    while not (folder / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    (folder / f"ran-{spec['seed']}").touch()
    return {}


def test_a_failed_local_run_cancels_the_queued_ones(tmp_path: Path) -> None:
    specs = [{"fusion": "f", "seed": s, "folder": str(tmp_path)} for s in range(8)]
    with pytest.raises(RunFailed, match=r"The run f seed 0 failed: ValueError: boom"):
        LocalProcessExecutor(workers=1).run(specs, _mark_or_fail, lambda i, row: None)
    (tmp_path / "go").touch()
    time.sleep(3.0)  # the specs already handed to the worker finish at once now; without cancelling, all 7 would
    ran = sorted(p.name for p in tmp_path.glob("ran-*"))
    # at most the one the worker was running and the two in the pool's call queue (max_workers + 1)
    assert len(ran) <= 3, ran


def test_executor_options_are_checked() -> None:
    with pytest.raises(ValueError, match=r"'executor' parameter must be one of \['local', 'ray'\]. Got 'dask'"):
        CompareConfig(executor="dask")
    with pytest.raises(ValueError, match="'ray_address' parameter needs executor 'ray'"):
        make_executor("local", address="auto")


def _sleep(spec: dict[str, Any]) -> dict[str, Any]:
    """A task that takes ``spec['seconds']``: long enough for the executor to call ``on_wait`` meanwhile."""
    time.sleep(spec["seconds"])
    return spec


@pytest.mark.parametrize("name", ["local", "ray"])
def test_on_wait_is_called_while_the_tasks_run(request: pytest.FixtureRequest, name: str) -> None:
    fn = _sleep  # spawned processes import this module; Ray's workers cannot, so Ray gets a copy by value
    if name == "ray":
        request.getfixturevalue("local_ray")

        def fn(spec: dict[str, Any]) -> dict[str, Any]:
            time.sleep(spec["seconds"])
            return spec

    events: list[str] = []
    make_executor(name, workers=1).run(
        [{"seconds": 2.5}], fn, lambda i, row: events.append(f"done {i}"), on_wait=lambda: events.append("wait")
    )
    # polled at most POLL_S (1 s) apart while the task sleeps, and once more after the task has been reported
    assert events.index("done 0") >= 2 and events[-1] == "wait", events
