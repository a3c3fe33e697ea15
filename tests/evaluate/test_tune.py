"""mmfuse.evaluate.tune: validation-only search on Optuna (samplers, pruning, storage, resume, workers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from typer.testing import CliRunner

from experiment_support import read_csv, write_shifted_toy
from mmfuse.cli._app import app
from mmfuse.data import ModalitySpec, MultimodalDataset, SequenceRecord, TaskSpec, write_dataset
from mmfuse.errors import ConfigError, DataError
from mmfuse.evaluate.tune import TuneConfig, grid_points, tune
from mmfuse.types import LabelLevel, TaskType


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shifted_toy(tmp_path_factory.mktemp("tune") / "toy", name="toy-tune")


SPACE = {"train.lr": [1e-4, 0.05], "model.hidden": [8]}


def _config(toy: Path, out: Path, **kw: Any) -> TuneConfig:
    base: dict[str, Any] = {
        "dataset": str(toy),
        "fusions": ["concat"],
        "trials": 2,
        "seeds": 1,
        "epochs": 1,
        "out_dir": str(out),
        "search_space": SPACE,
        "pruner": "none",
        "device": "cpu",
    }
    return TuneConfig(**{**base, **kw})


def _rows(out: Path) -> list[dict[str, str]]:
    return read_csv(out / "trials.csv")


def test_grid_points_cover_the_space_once() -> None:
    space = {"train.lr": [0.1, 0.01, 0.001], "model.hidden": [8, 16], "model.dropout": [0.0, 0.5]}
    points = grid_points(space)
    assert len(points) == 12 and len({json.dumps(p, sort_keys=True) for p in points}) == 12


def test_tune_never_reads_the_test_split_and_covers_a_small_space(
    toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    original = MultimodalDataset.split

    def spy(self: MultimodalDataset, name: str) -> MultimodalDataset:
        opened.append(name)
        return original(self, name)

    monkeypatch.setattr(MultimodalDataset, "split", spy)
    out = tmp_path / "t"
    # the defaults (lr 1e-3, hidden 64: no preset for this data set) join the candidates: a 3 x 2 grid
    result = tune(_config(toy, out, trials=50, epochs=4))
    assert "test" not in opened and {"train", "val"} <= set(opened)
    rows = _rows(out)
    assert len(rows) == 6 and {r["state"] for r in rows} == {"COMPLETE"}  # the budget is capped at the grid
    assert (rows[0]["train.lr"], rows[0]["model.hidden"]) == ("0.001", "64")  # trial 0: the current settings
    assert len({(r["train.lr"], r["model.hidden"]) for r in rows}) == 6  # the whole grid, nothing twice
    scores = {(float(r["train.lr"]), int(r["model.hidden"])): float(r["val_nll_mean"]) for r in rows}
    # 4 epochs at lr 1e-4 barely move the model; 0.05 separates the classes: lower validation NLL
    assert scores[(0.05, 8)] < scores[(1e-4, 8)]
    chosen = result.best["concat"]
    assert chosen["criterion"] == pytest.approx(min(scores.values()), rel=1e-5)
    assert set(chosen) == {"model", "train", "criterion", "trial"} and set(chosen["model"]) == {"hidden"}
    best = json.loads((out / "best.json").read_text())  # a compare preset: the chosen trial's settings per fusion
    assert result.preset is not None and best == json.loads(json.dumps(result.preset.to_dict()))
    assert best["fusions"]["concat"] == {"model": chosen["model"], "train": {**chosen["train"], "epochs": 4}}
    assert best["source"]["chosen"] == {"concat": {"trial": chosen["trial"], "criterion": chosen["criterion"]}}
    meta = json.loads((out / "tune.json").read_text())
    assert meta["splits_read"] == ["train", "val"] and meta["criterion"] == "nll"
    assert meta["sampler"] == "tpe" and meta["studies"] == {"concat": "toy-tune:concat"} and meta["workers"] == 1
    assert meta["storage"] == f"sqlite:///{out.resolve() / 'tune.db'}" and meta["budget"] == {"concat": 6}


def test_pruning_prunes_a_hopeless_trial(toy: Path, tmp_path: Path) -> None:
    out = tmp_path / "p"
    # grid order: the defaults (lr 1e-3), 0.05, then 1e-5, which is worse than the median of the first two
    tune(_config(toy, out, trials=3, epochs=6, search_space={"train.lr": [0.05, 1e-5]}, pruner="median"))
    rows = _rows(out)
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE", "PRUNED"]
    pruned = rows[2]
    assert float(pruned["train.lr"]) == 1e-5 and pruned["val_nll_mean"] == ""
    assert 2 <= int(pruned["pruned_at_epoch"]) < 6  # step = epoch; n_warmup_steps=2: never at epoch 1


def test_existing_study_is_refused_and_resume_checks_its_settings(toy: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    space = {"train.lr": [1e-4, 0.05, 0.01]}  # 4 points with the default: a sampled search
    first = tune(_config(toy, out, trials=2, sampler="random", search_space=space))
    with pytest.raises(ConfigError, match=r"already holds .*Pass --resume"):
        tune(_config(toy, out, trials=2, sampler="random", search_space=space))
    with pytest.raises(ConfigError, match=r"study 'toy-tune:concat' already exists.*Pass --resume"):
        tune(_config(toy, tmp_path / "other", storage=f"sqlite:///{out / 'tune.db'}", search_space=space))
    with pytest.raises(ConfigError, match=r"settings differ in epochs, seeds \(epochs: stored 1, now 2; seeds"):
        tune(_config(toy, out, trials=3, seeds=2, epochs=2, resume=True, search_space=space))
    with pytest.raises(ConfigError, match=r"no study 'mine:concat'.*Run without --resume"):
        tune(_config(toy, out, trials=3, resume=True, study="mine", search_space=space))
    # a repeated configuration reuses the stored score: enqueue trial 0's settings again, then resume
    study = optuna.load_study(study_name="toy-tune:concat", storage=f"sqlite:///{out / 'tune.db'}")
    study.enqueue_trial(study.trials[0].params)
    again = tune(_config(toy, out, trials=3, sampler="random", resume=True, search_space=space))
    assert again.trials[:2] == first.trials
    repeat = again.trials[2]
    assert repeat["repeat_of"] == 0 and repeat["val_nll_mean"] == first.trials[0]["val_nll_mean"]
    assert repeat["train_seconds"] == first.trials[0]["train_seconds"]  # not retrained


def test_seeded_samplers_are_reproducible(toy: Path, tmp_path: Path) -> None:
    space = {"train.lr": [1e-4, 3e-4, 3e-3, 0.01, 0.05], "train.batch_size": [4, 8, 16]}
    for sampler in ("random", "tpe"):
        runs = [
            tune(
                _config(toy, tmp_path / f"{sampler}{i}", trials=4, sampler=sampler, sampler_seed=3, search_space=space)
            )
            for i in range(2)
        ]
        picks = [[(r["train.lr"], r["train.batch_size"]) for r in run.trials] for run in runs]
        assert picks[0] == picks[1] and len(picks[0]) == 4


def test_two_workers_share_one_sqlite_study(toy: Path, tmp_path: Path) -> None:
    out = tmp_path / "w"
    space = {"train.lr": [1e-4, 0.05], "train.batch_size": [4, 8]}  # 3 x 3 with the defaults
    tune(_config(toy, out, trials=9, workers=2, search_space=space))
    study = optuna.load_study(study_name="toy-tune:concat", storage=f"sqlite:///{out / 'tune.db'}")
    done = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(done) == 9 == len(study.trials)  # none lost, none extra
    assert len({t.number for t in done}) == 9
    assert len({tuple(sorted(t.params.items())) for t in done}) == 9  # the whole grid, nothing twice
    assert len(_rows(out)) == 9 and json.loads((out / "tune.json").read_text())["workers"] == 2


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # this test's own heartbeat storage
def test_a_killed_workers_trial_is_retried(toy: Path, tmp_path: Path) -> None:
    out = tmp_path / "k"
    space = {"train.lr": [1e-4, 0.05]}
    tune(_config(toy, out, trials=1, heartbeat_s=1, search_space=space))
    storage = optuna.storages.RDBStorage(f"sqlite:///{out / 'tune.db'}", heartbeat_interval=1)
    study = optuna.load_study(study_name="toy-tune:concat", storage=storage)
    dist = optuna.distributions.CategoricalDistribution([1e-4, 0.05, 0.001])
    # a worker that started trial 1 and died: RUNNING, its last heartbeat long ago
    trial_id = storage.create_new_trial(
        study._study_id,
        template_trial=optuna.trial.create_trial(
            state=optuna.trial.TrialState.RUNNING, params={"train.lr": 0.05}, distributions={"train.lr": dist}
        ),
    )
    storage.record_heartbeat(trial_id)
    result = tune(_config(toy, out, trials=2, heartbeat_s=1, resume=True, search_space=space))
    states = [r["state"] for r in result.trials]
    assert states == ["COMPLETE", "FAIL", "COMPLETE"]
    assert result.trials[2]["train.lr"] == 0.05  # the killed trial's settings, trained again


def test_config_errors_are_clear(toy: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"must be a registered metric name.*Got 'nope'"):
        TuneConfig(dataset=str(toy), criterion="nope")
    with pytest.raises(ValueError, match=r"'model\.<field>' or 'train\.<field>'"):
        TuneConfig(dataset="x", search_space={"lr": [1]})
    with pytest.raises(ValueError, match=r"'train\.lrr' of TuneConfig names no field of TrainConfig\. Valid: .*lr"):
        TuneConfig(dataset="x", search_space={"train.lrr": [1]})
    with pytest.raises(ValueError, match=r"must list numbers, strings, booleans or None\. Got \[1, 2\]"):
        TuneConfig(dataset="x", search_space={"train.lr": [[1, 2]]})
    with pytest.raises(ValueError, match=r"'sampler' parameter of TuneConfig must be one of tpe, random\. Got 'grid'"):
        TuneConfig(dataset="x", sampler="grid")
    with pytest.raises(ValueError, match=r"'pruner' parameter .* one of median, hyperband, none"):
        TuneConfig(dataset="x", pruner="asha")
    with pytest.raises(ValueError, match="'workers' parameter of TuneConfig must be a positive integer"):
        TuneConfig(dataset="x", workers=0)
    with pytest.raises(ValueError, match=r"storage.*'nope://u:\*\*\*@h/db', cannot be opened"):
        tune(_config(toy, tmp_path / "s", storage="nope://u:secret@h/db"))
    with pytest.raises(ValueError, match="'mae' does not apply to this classification data set"):
        tune(_config(toy, tmp_path / "x", criterion="mae"))
    assert not (tmp_path / "x" / "trials.csv").exists()  # refused before any trial


def test_metric_criterion_and_hyperband(toy: Path, tmp_path: Path) -> None:
    result = tune(_config(toy, tmp_path / "m", trials=2, epochs=2, criterion="accuracy", pruner="hyperband"))
    assert 0.0 <= result.best["concat"]["criterion"] <= 1.0
    assert json.loads((tmp_path / "m" / "tune.json").read_text())["lower_is_better"] is False


def test_tune_cli(toy: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    args = ["tune", "-d", str(toy), "-f", "concat", "-t", "1", "-s", "1", "-e", "1", "--out", str(out)]
    res = CliRunner().invoke(app, [*args, "--device", "cpu", "--sampler", "random", "--pruner", "none"])
    assert res.exit_code == 0, res.output
    assert (out / "best.json").is_file() and "chosen on validation nll" in res.output
    again = CliRunner().invoke(app, [*args, "--device", "cpu"])
    assert again.exit_code != 0 and "--resume" in again.output


def test_tune_needs_train_and_val_splits(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    records = [
        SequenceRecord(
            id=f"r{i}",
            group=f"g{i}",
            split=("train", "test")[i % 2],
            values={"a": rng.normal(size=(3, 2)).astype(np.float32)},
            masks={"a": np.ones(3, dtype=bool)},
            label=i % 2,
        )
        for i in range(8)
    ]
    path = tmp_path / "noval"
    write_dataset(
        path,
        records,
        name="toy-noval",
        modalities=[ModalitySpec("a", 2)],
        task=TaskSpec(TaskType.CLASSIFICATION, LabelLevel.SAMPLE, class_names=("n", "p")),
    )
    with pytest.raises(DataError, match=r"lacks the split\(s\) \['val'\]; tuning needs 'train' and 'val'"):
        tune(TuneConfig(dataset=str(path), trials=1, seeds=1, out_dir=str(tmp_path / "t"), device="cpu"))
