"""``mmfuse train`` / train_model: one fusion into a normal model directory, in one process or under DDP."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mmfuse.cli._app import app
from mmfuse.data import load_dataset
from mmfuse.evaluate.compare import CompareConfig, compare
from mmfuse.evaluate.rundir import RunDir
from mmfuse.evaluate.train_run import train_model
from mmfuse.models import load_model
from mmfuse.preprocess import ModalityNormalizers
from mmfuse.stream import load_model_assets
from mmfuse.train import predict
from mmfuse.train.distributed import launch_local

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from ddp_jobs import train_model_job

from experiment_support import write_shifted_toy

runner = CliRunner()


def _check_model_dir(out: Path) -> None:
    """The directory is one that load_model, the normalisers' loader and serve's loader all accept."""
    info = json.loads((out / "config.json").read_text())
    assert info["dataset"] == "basic-motions" and info["stream"]["rate"] == 10.0
    model = load_model(out)
    norms = ModalityNormalizers.load(out)
    assert sorted(norms) == sorted(model.config.modality_dims)
    assets = load_model_assets(out)  # what `mmfuse serve` loads (it refuses a non-causal model)
    assert assets["stream_config"] is not None and assets["normalizers"] is not None
    test = load_dataset("basic-motions").split("test").with_transform(norms.transform_record)
    assert predict(model, test).probs.shape[0] == len(test)
    assert not (out / "last").exists()  # the resumable checkpoint goes once the run is finished


def test_cli_train_writes_a_servable_model_directory(tmp_path):
    out = tmp_path / "model"
    args = ["train", "--out", str(out), "--epochs", "1", "--hidden", "8", "--causal", "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Trained concat in 1 process(es)" in result.output
    _check_model_dir(out)
    again = runner.invoke(app, args)  # a model directory is not overwritten silently
    assert again.exit_code != 0 and "already holds a model" in again.output
    analyzed = runner.invoke(app, ["analyze", str(out), "--only", "calibration,complexity", "--device", "cpu"])
    assert analyzed.exit_code == 0, analyzed.output  # mmfuse analyze accepts the model directory too
    rows = (out / "final_results.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("concat,0,")  # one run: the model, with its test metrics
    assert "accuracy" in rows[0] and (out / "analysis" / "summary.md").is_file()
    assert "confusion_matrix" not in rows[0] and "per_class" not in rows[0]  # the file's tables are no columns
    assert not (out / "report.html").exists()  # a single model has no comparison report


def test_train_and_compare_write_the_same_test_metrics_file(tmp_path):
    """test_metrics.json means one thing: train's holds the keys compare's holds for the same task."""
    data = write_shifted_toy(tmp_path / "toy", name="toy", noise_modality=True)
    small = {"model_overrides": {"hidden": 8}, "device": "cpu", "epochs": 1}
    trained = train_model(data, tmp_path / "model", **small)
    run = compare(CompareConfig(dataset=str(data), fusions=["concat"], seeds=1, out_dir=str(tmp_path / "run"), **small))
    by_train = json.loads((tmp_path / "model" / RunDir.TEST_METRICS_JSON).read_text())
    by_compare = json.loads((RunDir(run.out_dir).model_dir("concat", 0) / RunDir.TEST_METRICS_JSON).read_text())
    assert sorted(by_train) == sorted(by_compare)
    assert {"accuracy", "confusion_matrix", "per_class", "class_names"} <= set(by_train)
    assert by_train["class_names"] == ["n", "p"] and len(by_train["confusion_matrix"]) == 2
    scalars = {k: v for k, v in by_train.items() if isinstance(v, int | float)}
    assert trained.test_metrics == pytest.approx(scalars, nan_ok=True)  # the result keeps the scalar view of the file


def test_train_model_refuses_unknown_fusion(tmp_path):
    with pytest.raises(ValueError, match="fusion"):
        train_model("basic-motions", tmp_path / "m", fusion="no-such-fusion", epochs=1)


@pytest.mark.slow  # two spawned processes import torch and train: ~15 s on 2 cores
def test_ddp_train_model_writes_the_same_model_directory(tmp_path):
    kw = {"epochs": 2, "causal": True, "device": "cpu", "model_overrides": {"hidden": 8, "dropout": 0.0}}
    two = launch_local(2, train_model_job, "basic-motions", str(tmp_path / "ddp"), **kw)
    assert two["world_size"] == 2
    _check_model_dir(tmp_path / "ddp")
    assert json.loads((tmp_path / "ddp" / "config.json").read_text())["world_size"] == 2
    one = train_model_job("basic-motions", str(tmp_path / "one"), **kw)
    for a, b in zip(one["history"], two["history"], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4, abs=1e-5)
    w1, w2 = load_model(tmp_path / "one").state_dict(), load_model(tmp_path / "ddp").state_dict()
    assert all(torch.allclose(w1[k], w2[k], rtol=1e-4, atol=1e-5) for k in w1)
