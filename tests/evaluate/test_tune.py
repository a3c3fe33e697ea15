"""mmfuse.evaluate.tune: validation-only random search."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mmfuse.cli._app import app
from mmfuse.data import ModalitySpec, MultimodalDataset, SequenceRecord, TaskSpec, write_dataset
from mmfuse.errors import DataError
from mmfuse.evaluate.tune import TuneConfig, sample_trials, tune
from mmfuse.types import LabelLevel, TaskType


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    records = []
    for i in range(32):
        label = i % 2
        records.append(
            SequenceRecord(
                id=f"r{i:02d}",
                group=f"g{i}",
                split=("train", "train", "val", "test")[(i // 2) % 4],
                values={"a": (rng.normal(size=(4, 3)) + 2 * label - 1).astype(np.float32)},
                masks={"a": np.ones(4, dtype=bool)},
                label=label,
            )
        )
    path = tmp_path_factory.mktemp("tune") / "toy"
    write_dataset(
        path,
        records,
        name="toy-tune",
        modalities=[ModalitySpec("a", 3)],
        task=TaskSpec(TaskType.CLASSIFICATION, LabelLevel.SAMPLE, class_names=("n", "p")),
    )
    return path


SPACE = {"train.lr": [1e-4, 0.05], "model.hidden": [8]}


def test_sample_trials_are_distinct_seeded_and_start_with_the_preset() -> None:
    space = {"train.lr": [0.1, 0.01, 0.001], "model.hidden": [8, 16], "model.dropout": [0.0, 0.5]}
    a = sample_trials(space, 6, seed=1, first={"train.lr": 0.5})
    assert a == sample_trials(space, 6, seed=1, first={"train.lr": 0.5})
    assert a[0] == {"train.lr": 0.5}
    assert len({json.dumps(t, sort_keys=True) for t in a}) == 6
    assert len(sample_trials(space, 50, seed=0)) == 12  # the whole space, no repeats


def test_tune_never_reads_the_test_split_and_picks_the_best_validation_score(
    toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    original = MultimodalDataset.split

    def spy(self: MultimodalDataset, name: str) -> MultimodalDataset:
        opened.append(name)
        return original(self, name)

    monkeypatch.setattr(MultimodalDataset, "split", spy)
    result = tune(
        TuneConfig(
            dataset=str(toy),
            fusions=["concat"],
            trials=3,
            seeds=1,
            epochs=4,
            out_dir=str(tmp_path / "t"),
            search_space=SPACE,
            device="cpu",
        )
    )
    assert "test" not in opened and {"train", "val"} <= set(opened)
    rows = list(csv.DictReader((tmp_path / "t" / "trials.csv").open()))
    # trial 0 is the current settings (no preset for this data set: the defaults), then the space's two points
    assert len(rows) == 3 and rows[0]["train.lr"] == ""
    scores = {float(r["train.lr"]): float(r["val_nll_mean"]) for r in rows[1:]}
    # 4 epochs at lr 1e-4 barely move the model; 0.05 separates the classes: lower validation NLL wins
    assert scores[0.05] < scores[1e-4]
    assert result.best["concat"]["train"] == {"lr": 0.05}
    best = json.loads((tmp_path / "t" / "best.json").read_text())
    assert best["concat"]["model"] == {"hidden": 8}
    meta = json.loads((tmp_path / "t" / "tune.json").read_text())
    assert meta["splits_read"] == ["train", "val"] and meta["criterion"] == "nll"


def test_tune_with_a_metric_criterion_and_errors(toy: Path, tmp_path: Path) -> None:
    result = tune(
        TuneConfig(
            dataset=str(toy),
            fusions=["concat"],
            trials=1,
            seeds=1,
            epochs=2,
            out_dir=str(tmp_path / "m"),
            criterion="accuracy",
            search_space=SPACE,
            device="cpu",
        )
    )
    assert 0.0 <= result.best["concat"]["criterion"] <= 1.0
    with pytest.raises(ValueError, match=r"must be a registered metric name.*Got 'nope'"):
        TuneConfig(dataset=str(toy), criterion="nope")
    with pytest.raises(ValueError, match="'mae' does not apply to this classification data set"):
        tune(
            TuneConfig(
                dataset=str(toy),
                fusions=["concat"],
                trials=1,
                seeds=1,
                epochs=1,
                out_dir=str(tmp_path / "x"),
                criterion="mae",
                search_space=SPACE,
                device="cpu",
            )
        )
    assert not (tmp_path / "x" / "trials.csv").exists()  # refused before any trial
    with pytest.raises(ValueError, match=r"'model\.<field>' or 'train\.<field>'"):
        TuneConfig(dataset="x", search_space={"lr": [1]})


def test_tune_cli(toy: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    res = CliRunner().invoke(
        app,
        ["tune", "-d", str(toy), "-f", "concat", "-t", "1", "-s", "1", "-e", "1", "--out", str(out), "--device", "cpu"],
    )
    assert res.exit_code == 0, res.output
    assert (out / "best.json").is_file() and "chosen on validation nll" in res.output


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
