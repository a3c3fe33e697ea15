"""``mmfuse lr-find``: runs the range test on the TRAIN split and writes the curve, or fails with one clear line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mmfuse.cli._app import app

runner = CliRunner()


def _invoke(*args: str | Path) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def test_lr_find_writes_json_and_png(toy_dataset: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mmfuse.train.lr_finder as finder

    splits: list[Any] = []
    original = finder.BatchSource

    def spy(data: Any, *args: Any, **kwargs: Any) -> Any:
        splits.append(sorted({data[i].split for i in range(len(data))}))
        return original(data, *args, **kwargs)

    monkeypatch.setattr(finder, "BatchSource", spy)
    out = tmp_path / "lr"
    args = ("--dataset", toy_dataset.path, "--fusion", "concat", "--out", out, "--device", "cpu")
    result = _invoke("lr-find", *args, "--num-steps", "12", "--hidden", "8", "--end-lr", "10")
    assert result.exit_code == 0, result.output
    assert splits == [["train"]]  # only the training split is read
    doc = json.loads((out / "lr_find.json").read_text())
    assert doc["dataset"] == "toy" and doc["fusion"] == "concat" and doc["split"] == "train"
    assert 5 <= len(doc["lrs"]) <= 12 and len(doc["losses"]) == len(doc["lrs"])
    assert doc["model_config"]["hidden"] == 8 and doc["config"]["end_lr"] == 10.0
    assert (out / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    assert "suggested lr" in result.stdout and "lr_find.json" in result.stdout


def test_lr_find_unknown_fusion_is_one_clean_line(toy_dataset: Any, tmp_path: Path) -> None:
    result = _invoke("lr-find", "--dataset", toy_dataset.path, "--fusion", "nope", "--out", tmp_path)
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "'nope'" in lines[0] and "concat" in lines[0]
    assert not list(tmp_path.iterdir())


def test_lr_find_bad_dataset_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = _invoke("lr-find", "--dataset", tmp_path / "empty", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "meta.json" in result.stderr
