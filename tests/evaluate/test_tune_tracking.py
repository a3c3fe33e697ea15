"""``mmfuse tune --log``: one tracker run per trained trial and a summary run, read back with the libraries' readers."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from experiment_support import mlflow_runs, read_csv, write_shifted_toy
from mmfuse.cli._app import app

pytest.importorskip("tensorboard", reason="the tracking extra (tensorboard) is not installed")
pytest.importorskip("mlflow", reason="the tracking extra (mlflow) is not installed")

EPOCHS = 2


@pytest.fixture(scope="module")
def tracked_search(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two trials of concat on a 32-record toy set, logged to TensorBoard and MLflow through the CLI."""
    root = tmp_path_factory.mktemp("tune-tracked")
    toy = write_shifted_toy(root / "toy", name="toy-tune")
    out = root / "search"
    args = ["tune", "--dataset", str(toy), "--fusion", "concat", "--trials", "2", "--seeds", "1"]
    args += ["--epochs", str(EPOCHS), "--pruner", "none", "--device", "cpu", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--log", "tensorboard", "--log", "mlflow"])
    assert result.exit_code == 0, result.output
    return out


def test_every_trial_is_an_mlflow_run_with_its_settings_curve_and_score(
    tracked_search: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{(tracked_search / 'mlflow.db').resolve()}"
    runs = {r.info.run_name: r for r in mlflow_runs(uri, "search", monkeypatch)}
    trials = sorted(n for n in runs if n.startswith("concat-trial"))
    assert trials == ["concat-trial0", "concat-trial1"] or len(trials) == 1  # a repeated configuration is reused
    first = read_csv(tracked_search / "trials.csv")[0]
    trial0 = runs["concat-trial0"]
    assert trial0.data.params["fusion"] == "concat" and trial0.data.params["train.epochs"] == str(EPOCHS)
    assert trial0.data.metrics["val_nll_mean"] == pytest.approx(float(first["val_nll_mean"]), abs=1e-6)
    assert not any(k.startswith("test_") for k in trial0.data.metrics)  # the test split stays unopened
    client = MlflowClient(tracking_uri=uri)
    assert [m.step for m in client.get_metric_history(trial0.info.run_id, "val_loss")] == list(range(1, EPOCHS + 1))
    summary = runs["summary"]
    files = {a.path for a in client.list_artifacts(summary.info.run_id, "tune")}
    assert files == {"tune/trials.csv", "tune/best.json", "tune/tune.json"}


def test_every_trial_has_a_tensorboard_folder(tracked_search: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tracked_search / "tensorboard" / "concat-trial0"))
    events.Reload()
    assert [e.step for e in events.Scalars("train_loss")] == list(range(1, EPOCHS + 1))
    assert "val_nll_mean" in events.Tags()["scalars"]
