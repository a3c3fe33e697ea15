"""kill -9 of ``compare`` in the middle of a run, then ``--resume``: the same results as an uninterrupted run.

The killed process trains two tiny runs; it is killed once the second has written its first ``last/``
checkpoint, so the resume reuses one finished run (checked against the run) and continues the other.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from experiment_support import without_time
from mmfuse.evaluate.compare import CompareConfig, compare

SETTINGS: dict[str, Any] = {
    "fusions": ["concat", "weighted"],
    "seeds": 1,
    "epochs": 3,
    "model_overrides": {"hidden": 16},
    "train_overrides": {"lr": 0.03},
    "device": "cpu",
}

SCRIPT = """
import sys, time
from mmfuse.evaluate.compare import CompareConfig, compare
slow = lambda event: time.sleep(0.0 if event.done else 1.0)  # time to kill between epochs; results unchanged
compare(CompareConfig(out_dir=sys.argv[1], **{settings!r}), progress=slow)
"""


@pytest.mark.slow  # about 10 s: a second interpreter imports torch
def test_kill_9_mid_run_then_resume_gives_the_uninterrupted_results(tmp_path: Path) -> None:
    out = tmp_path / "killed"
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(settings=SETTINGS), encoding="utf-8")
    proc = subprocess.Popen([sys.executable, str(script), str(out)], env={**os.environ, "PYTHONHASHSEED": "0"})
    checkpoint = out / "models" / "weighted-seed0" / "last" / "trainer_state.json"
    deadline = time.monotonic() + 120
    while not checkpoint.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    alive = proc.poll() is None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert alive and checkpoint.is_file(), "the run finished or never reached the second run's checkpoint"
    assert not (out / "models" / "weighted-seed0" / "result.json").exists()

    # a kill inside atomic_write leaves its temporary file beside the target: the resume deletes it
    partial = out / "models" / "weighted-seed0" / ".history.json.k1ll3d_9.tmp"
    partial.write_text('[{"epoch": 0', encoding="utf-8")

    with pytest.raises(FileExistsError, match="--resume"):
        compare(CompareConfig(out_dir=str(out), **SETTINGS))
    resumed = compare(CompareConfig(out_dir=str(out), resume=True, **SETTINGS))
    fresh = compare(CompareConfig(out_dir=str(tmp_path / "fresh"), **SETTINGS))
    assert without_time(resumed.rows) == without_time(fresh.rows)
    assert not (out / "models" / "weighted-seed0" / "last").exists()
    assert not partial.exists()
    assert sorted(p.name for p in out.rglob("*.tmp")) == [], "a temporary file ended in the finished run"
