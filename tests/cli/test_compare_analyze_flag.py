"""`mmfuse compare --analyze` runs the analysis suite on the fresh run directory, on the compare's executor."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import mmfuse.evaluate.compare as compare_module
from experiment_support import analysis_outputs, write_shifted_toy
from mmfuse.cli._app import app
from mmfuse.evaluate.analysis import AnalysisConfig, analyze_run


@pytest.mark.slow
def test_compare_with_analyze_writes_the_analysis(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["compare", "-f", "concat", "-s", "1", "-e", "1", "--hidden", "8", "--device", "cpu", "--out", str(out)]
    res = CliRunner().invoke(app, [*args, "--analyze"])
    assert res.exit_code == 0, res.output
    assert "Analysis:" in res.output
    assert (out / "final_results.csv").is_file()
    assert (out / "analysis").is_dir() and any((out / "analysis").glob("*.png"))
    meta = json.loads((out / "run.json").read_text())
    assert Path(meta["dataset"]["path"]).is_dir()  # recorded, so analyze can find a native folder again
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "ablation" in html.lower() and "calibration" in html.lower()


class _InProcess:
    """An executor that runs every task in this process, in order, and counts the tasks it was given."""

    name = "local"

    def __init__(self) -> None:
        self.specs: list[dict[str, Any]] = []

    def run(
        self, specs: Sequence[dict[str, Any]], fn: Any, on_done: Any, describe: Any = None, on_wait: Any = None
    ) -> None:
        self.specs.extend(specs)
        for index, spec in enumerate(specs):
            on_done(index, fn(dict(spec)))


@pytest.mark.slow  # the whole analysis suite twice (the CLI's and a serial one): about 20 s on 2 cores
def test_compare_hands_its_executor_to_the_analysis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`compare --jobs 2 --analyze`: the runs and then the analysis tasks go to the executor of the compare's
    settings (made by one rule), and the analysis files equal a serial analysis's."""
    made: list[tuple[Any, ...]] = []
    executors: list[_InProcess] = []

    def fake(name: str, *, workers: int, num_threads: int | None, address: str | None) -> _InProcess:
        made.append((name, workers, num_threads, address))
        executors.append(_InProcess())
        return executors[-1]

    monkeypatch.setattr(compare_module, "executor_or_none", fake)
    data = write_shifted_toy(tmp_path / "toy", name="toy")
    out = tmp_path / "run"
    args = ["compare", "-d", str(data), "-f", "concat", "-s", "2", "-e", "1", "--hidden", "8", "--device", "cpu"]
    res = CliRunner().invoke(app, [*args, "--jobs", "2", "--out", str(out), "--analyze"])
    assert res.exit_code == 0, res.output
    assert made == [("local", 2, 1, None)] * 2  # the runs' executor, then the analysis's: the same settings
    runs, analysis = executors
    assert [(s["fusion"], s["seed"]) for s in runs.specs] == [("concat", 0), ("concat", 1)]
    assert len(analysis.specs) >= 2 * 8  # every analysis of each of the two models is a task

    serial = Path(shutil.copytree(out, tmp_path / "serial", ignore=shutil.ignore_patterns("analysis", "final_*")))
    analyze_run(serial, config=AnalysisConfig(device="cpu"))
    assert analysis_outputs(out) == analysis_outputs(serial)
