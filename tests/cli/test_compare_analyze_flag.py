"""`mmfuse compare --analyze` runs the analysis suite on the fresh run directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmfuse.cli._app import app


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
