"""Experiment tracking callbacks: what the Trainer logs, read back with TensorBoard's and MLflow's own readers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from experiment_support import mlflow_runs
from mmfuse.train import TrainConfig, Trainer
from mmfuse.train.tracking import MlflowTracker, TensorBoardTracker, TrackingConfig, close_all, flatten_params
from mmfuse.types import Batch

pytest.importorskip("tensorboard", reason="the tracking extra (tensorboard) is not installed")
pytest.importorskip("mlflow", reason="the tracking extra (mlflow) is not installed")

EPOCHS = 3


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(1, 2)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.lin(batch.inputs["x"][:, 0, :])  # [B, 1] -> [B, C]


def _fit(trackers: list) -> list[dict]:
    x = torch.tensor([[-1.0], [1.0], [-2.0], [2.0]]).reshape(4, 1, 1)
    ones = torch.ones(4, 1, dtype=torch.bool)
    data = [Batch({"x": x}, {"x": ones}, ones, torch.tensor([0, 1, 0, 1]))]
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=EPOCHS, lr=0.1, scheduler="none", patience=None, device="cpu")
    for tracker in trackers:
        tracker.log_params({"train": cfg.to_dict(), "fusion": "toy"})
    result = Trainer(cfg, callbacks=trackers).fit(_Net(), data, data)
    return result.history


def test_tensorboard_events_hold_every_epoch_and_the_final_metrics(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tracker = TensorBoardTracker(tmp_path / "tb")
    history = _fit([tracker])
    tracker.log_metrics({"accuracy": 0.75, "name": "not a number"})
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    tracker.log_artifacts(tmp_path / "model", "model")
    tracker.close()

    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"train_loss", "val_loss", "val_accuracy", "lr", "test_accuracy"} <= set(scalars)
    train_loss = events.Scalars("train_loss")
    assert [e.step for e in train_loss] == [1, 2, 3]
    assert [e.value for e in train_loss] == pytest.approx([row["train_loss"] for row in history], rel=1e-6)
    assert events.Scalars("test_accuracy")[0].value == pytest.approx(0.75)
    assert "test_name" not in scalars
    texts = events.Tags()["tensors"]
    assert "config/text_summary" in texts and "artifacts/model/text_summary" in texts
    config_text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert '"fusion": "toy"' in config_text


def test_mlflow_run_holds_params_epoch_metrics_test_metrics_and_artifacts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    tracking = TrackingConfig(["mlflow"], str(tmp_path), experiment="unit").prepare()
    uri = tracking.resolved_uri
    assert uri == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    (tracker,) = tracking.open("toy-seed0")
    assert isinstance(tracker, MlflowTracker)
    history = _fit([tracker])
    tracker.log_metrics({"accuracy": 0.5})
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "mlflow.db").write_text("never uploaded")
    tracker.log_artifacts(model, "model")
    close_all([tracker])

    runs = mlflow_runs(uri, "unit", monkeypatch)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name == "toy-seed0" and run.info.status == "FINISHED"
    assert run.data.params["fusion"] == "toy"
    assert run.data.params["train.lr"] == "0.1" and run.data.params["train.epochs"] == str(EPOCHS)
    assert run.data.metrics["test_accuracy"] == pytest.approx(0.5)
    client = MlflowClient(tracking_uri=uri)
    curve = client.get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in curve] == [1, 2, 3]
    assert [m.value for m in curve] == pytest.approx([row["val_loss"] for row in history], rel=1e-6)
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "model")]
    assert artifacts == ["model/config.json"]
    # the default store keeps its artifacts next to the database, not in the working directory
    assert (tmp_path / "mlartifacts").is_dir()


def test_a_failed_run_is_marked_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tracking = TrackingConfig(["mlflow"], str(tmp_path), experiment="failing").prepare()
    trackers = tracking.open("broken")
    close_all(trackers, failed=True)
    (run,) = mlflow_runs(tracking.resolved_uri, "failing", monkeypatch)
    assert run.info.status == "FAILED"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backends": ["wandb"]}, "must name only ['tensorboard', 'mlflow']. Got ['wandb']"),
        ({"backends": ["tensorboard"], "tracking_uri": "sqlite:///x.db"}, "it needs --log mlflow"),
    ],
)
def test_bad_tracking_options_are_refused_by_name(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match="TrackingConfig") as info:
        TrackingConfig(out_dir=".", **kwargs)
    assert message in str(info.value)


def test_tracking_config_round_trips_and_flattens_params() -> None:
    cfg = TrackingConfig("mlflow", "out", tracking_uri="sqlite:///a.db")
    assert cfg.backends == ("mlflow",)
    assert TrackingConfig.from_dict(cfg.to_dict()) == cfg
    assert flatten_params({"a": {"b": {"c": 1}}, "d": [1, 2]}) == {"a.b.c": 1, "d": "[1, 2]"}
