"""``mmfuse compare --log tensorboard,mlflow``: every run and the summary, read back with the trackers' own readers."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from experiment_support import mlflow_runs, read_csv
from mmfuse.cli._app import EXPERIMENT_SCHEMAS, app

pytest.importorskip("tensorboard", reason="the tracking extra (tensorboard) is not installed")
pytest.importorskip("mlflow", reason="the tracking extra (mlflow) is not installed")

FUSIONS = ["concat", "weighted"]
EPOCHS = 2


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two fusions x one seed, tracked by both backends; ``--log`` comes from the experiment file."""
    root = tmp_path_factory.mktemp("tracked")
    out = root / "run"
    experiment = root / "exp.yaml"
    experiment.write_text(
        f"fusion: [{', '.join(FUSIONS)}]\nseeds: 1\nepochs: {EPOCHS}\nhidden: 8\ndevice: cpu\n"
        f"out: {out}\nlog: [tensorboard, mlflow]\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["compare", "--config", str(experiment)])
    assert result.exit_code == 0, result.output
    return out


def test_log_and_tracking_uri_are_experiment_file_keys() -> None:
    for command in ("compare", "tune"):
        assert {"log", "tracking_uri"} <= set(EXPERIMENT_SCHEMAS[command].model_fields)


def test_tensorboard_has_one_event_folder_per_run_with_epoch_curves(tracked_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folders = sorted(p.name for p in (tracked_run / "tensorboard").iterdir())
    assert folders == ["concat-seed0", "summary", "weighted-seed0"]
    events = EventAccumulator(str(tracked_run / "tensorboard" / "concat-seed0"))
    events.Reload()
    assert [e.step for e in events.Scalars("val_loss")] == list(range(1, EPOCHS + 1))
    assert "test_accuracy" in events.Tags()["scalars"]


def test_mlflow_has_every_run_with_params_curves_test_metrics_models_and_the_report(
    tracked_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{(tracked_run / 'mlflow.db').resolve()}"
    runs = {r.info.run_name: r for r in mlflow_runs(uri, "run", monkeypatch)}
    assert sorted(runs) == ["concat-seed0", "summary", "weighted-seed0"]
    assert all(r.info.status == "FINISHED" for r in runs.values())
    client = MlflowClient(tracking_uri=uri)
    concat = runs["concat-seed0"]
    assert concat.data.params["fusion"] == "concat" and concat.data.params["model.hidden"] == "8"
    assert concat.data.params["train.epochs"] == str(EPOCHS)
    assert len(client.get_metric_history(concat.info.run_id, "train_loss")) == EPOCHS
    accuracy = float(read_csv(tracked_run / "results.csv")[0]["accuracy"])
    assert concat.data.metrics["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    models = {a.path for a in client.list_artifacts(concat.info.run_id, "model")}
    assert {"model/model.safetensors", "model/config.json", "model/history.json"} <= models
    summary = runs["summary"]
    assert set(summary.data.metrics) == {f"accuracy_mean/{f}" for f in FUSIONS}
    report = {a.path for a in client.list_artifacts(summary.info.run_id, "report")}
    assert {"report/report.html", "report/summary.csv", "report/results.csv"} <= report
