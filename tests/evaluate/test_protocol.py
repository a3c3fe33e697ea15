"""mmfuse.evaluate.protocol: presets keyed by data-set identity, settings, the model of a row, normalisers, threads."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mmfuse.data import (
    ModalitySpec,
    SequenceRecord,
    TaskSpec,
    dataset_preset,
    load_dataset,
    open_dataset,
    write_dataset,
)
from mmfuse.evaluate.compare import CompareConfig, compare
from mmfuse.evaluate.protocol import (
    Preset,
    fit_normalizers,
    model_config_for,
    preset_for,
    resolve_fusions,
    settings_for,
    torch_threads,
    versions,
)
from mmfuse.types import LabelLevel, TaskType


def _records(n: int, *, regression: bool = False) -> list[SequenceRecord]:
    rng = np.random.default_rng(5)
    out = []
    for i in range(n):
        a = rng.normal(size=(6, 3)).astype(np.float32)
        label: Any = float(np.clip(2 * a[:, 0].mean(), -3, 3)) if regression else int(a[:, 0].mean() > 0)
        out.append(
            SequenceRecord(
                id=f"s{i}",
                group=f"g{i}",
                split=("train", "train", "val", "test")[i % 4],
                values={"a": a, "b": rng.normal(size=(6, 2)).astype(np.float32)},
                masks={"a": np.ones(6, bool), "b": np.ones(6, bool)},
                label=label,
                timestamps=np.arange(6, dtype=np.float64),
            )
        )
    return out


def _write(path: Path, name: str, *, regression: bool = False) -> Path:
    task = (
        TaskSpec(TaskType.REGRESSION, LabelLevel.SAMPLE)
        if regression
        else TaskSpec(TaskType.CLASSIFICATION, LabelLevel.SAMPLE, class_names=("neg", "pos"))
    )
    write_dataset(
        path, _records(24, regression=regression), name=name, modalities=[ModalitySpec("a", 3), ModalitySpec("b", 2)],
        task=task,
    )  # fmt: skip
    return path


def _cfg(dataset: Path | str, out: Path, **changes: Any) -> CompareConfig:
    kwargs: dict[str, Any] = {
        "dataset": str(dataset),
        "fusions": ["concat"],
        "seeds": 1,
        "epochs": 2,
        "out_dir": str(out),
        "model_overrides": {"hidden": 8},
        "train_overrides": {"lr": 0.03, "batch_size": 8},
        "device": "cpu",
    }
    kwargs.update(changes)
    return CompareConfig(**kwargs)


def test_the_built_in_data_set_gets_its_preset() -> None:
    preset = preset_for(load_dataset("basic-motions"))
    assert preset.name == "basic-motions"
    assert preset.to_dict() == dataset_preset("basic-motions")


def test_a_user_data_set_named_like_a_built_in_gets_the_defaults(tmp_path: Path) -> None:
    """A preset belongs to the data set its builder wrote, not to whatever folder carries the name."""
    impostor = open_dataset(_write(tmp_path / "mine", "basic-motions"))
    assert impostor.name == "basic-motions"
    assert preset_for(impostor) == Preset("defaults")
    result = compare(_cfg(tmp_path / "mine", tmp_path / "run"))
    meta = json.loads((result.out_dir / "run.json").read_text())
    assert meta["preset"] == "defaults"
    assert meta["train_config"].get("monitor") is None  # the built-in's monitor='loss' did not leak in


def test_settings_layer_preset_fusion_entry_and_overrides() -> None:
    entry = {"model": {"hidden": 32, "dropout": 0.1}, "train": {"lr": 0.1}}
    preset = Preset.from_dict("p", {**entry, "fusions": {"gated": {"model": {"dropout": 0.4}}}})
    model, train = settings_for(preset, "gated", model_overrides={"hidden": 8}, epochs=3, device="cpu")
    assert model == {"hidden": 8, "dropout": 0.4} and train == {"lr": 0.1, "epochs": 3, "device": "cpu"}
    assert settings_for(preset, "concat")[0] == {"hidden": 32, "dropout": 0.1}
    with pytest.raises(ValueError, match=r"unknown keys \['modle'\]"):
        Preset.from_dict("typo", {"modle": {}})


def test_model_config_for_rows() -> None:
    ds = load_dataset("basic-motions")
    full = model_config_for(ds, "gated", hidden=8)
    assert full.modality_dims == {"accelerometer": 3, "gyroscope": 3} and full.fusion == "gated"
    base = model_config_for(ds, "unimodal-gyroscope", hidden=8, modality_dropout=0.3)
    assert base.modality_dims == {"gyroscope": 3} and base.fusion == "concat" and base.modality_dropout == 0.0
    subset = model_config_for(ds, "concat", modalities=["gyroscope"])
    assert subset.modality_dims == {"gyroscope": 3}
    with pytest.raises(ValueError, match="Unknown modality 'audio'"):
        model_config_for(ds, "concat", modalities=["audio"])


@pytest.mark.parametrize("names", [[""], [","], [" , "], []])
def test_resolve_fusions_refuses_an_empty_selection(names: list[str]) -> None:
    with pytest.raises(ValueError, match="select no fusion"):
        resolve_fusions(names)


def test_fit_normalizers_on_the_training_view_only() -> None:
    train = load_dataset("basic-motions").split("train")
    norms = fit_normalizers(train)
    values, mask = train.stacked("gyroscope")
    assert np.allclose(norms["gyroscope"].mean_, values[mask].mean(axis=0), atol=1e-5)


def test_versions_and_threads() -> None:
    v = versions()
    assert v["torch"] == torch.__version__ and v["mmfuse"]
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), torch_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before  # restored even on an error
    with pytest.raises(ValueError, match="positive integer"):
        with torch_threads(0):
            pass


# ------------------------------------------------------------------------------- metrics chosen for a run
def test_compare_records_extra_registered_metrics(tmp_path: Path) -> None:
    data = _write(tmp_path / "toy", "toy-metrics")
    result = compare(_cfg(data, tmp_path / "run", metrics=["accuracy", "top3_accuracy", "ece", "nll"]))
    with (result.out_dir / "results.csv").open(encoding="utf-8") as fh:
        row = next(csv.DictReader(fh))
    assert {"accuracy", "top3_accuracy", "ece", "log_loss"} <= set(row)
    assert float(row["top3_accuracy"]) == 1.0  # two classes: every true class is in the top 3
    test_metrics = json.loads((result.out_dir / "models" / "concat-seed0" / "test_metrics.json").read_text())
    assert float(row["ece"]) == pytest.approx(test_metrics["ece"], rel=1e-5)  # the CSV keeps 6 digits
    assert result.main_metric == "accuracy"


def test_compare_regression_with_the_mosi_conventions(tmp_path: Path) -> None:
    data = _write(tmp_path / "toy", "toy-sentiment", regression=True)
    result = compare(
        _cfg(data, tmp_path / "run", fusions=["concat", "gated"], metrics=["mae", "ccc", "acc7", "acc2_non0"])
    )
    for name in ("mae", "ccc", "acc7", "acc2_non0"):
        assert f"{name}_mean" in result.summary[0]
    maes = [r["mae_mean"] for r in result.summary]
    assert maes == sorted(maes)  # ranked by the first metric, lower is better
    ranked = compare(
        _cfg(data, tmp_path / "run2", fusions=["concat", "gated"], metrics=["mae", "acc7"], main_metric="acc7")
    )
    accs = [r["acc7_mean"] for r in ranked.summary]
    assert ranked.main_metric == "acc7" and accs == sorted(accs, reverse=True)


def test_compare_refuses_metrics_that_do_not_apply(tmp_path: Path) -> None:
    data = _write(tmp_path / "toy", "toy-wrong-metric")
    with pytest.raises(ValueError, match=r"cannot be computed on this classification"):
        compare(_cfg(data, tmp_path / "run", metrics=["mae"]))
    with pytest.raises(ValueError, match="Unknown metric 'acurracy'"):
        _cfg(data, tmp_path / "run", metrics=["acurracy"])
    assert not (tmp_path / "run").exists()  # refused before anything was written
