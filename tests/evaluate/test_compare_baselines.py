"""compare: unimodal baselines, 'all', parallel jobs, per-fusion presets and context sizes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from experiment_support import read_csv, without_time
from mmfuse.data import ModalitySpec, SequenceRecord, TaskSpec, write_dataset
from mmfuse.errors import DataError
from mmfuse.evaluate.compare import CompareConfig, compare, resolve_fusions
from mmfuse.evaluate.protocol import Preset
from mmfuse.fusion import list_fusions
from mmfuse.models import read_model_info
from mmfuse.types import LabelLevel, TaskType


def _records(n: int, *, context: bool = False) -> list[SequenceRecord]:
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        t = 5
        label = i % 2
        a = rng.normal(size=(t, 3)).astype(np.float32) + (2.0 * label - 1.0)  # 'a' carries the label
        b = rng.normal(size=(t, 2)).astype(np.float32)  # 'b' is noise
        out.append(
            SequenceRecord(
                id=f"r{i:02d}",
                group=f"g{i}",
                split=("train", "train", "val", "test")[(i // 2) % 4],
                values={"a": a, "b": b},
                masks={"a": np.ones(t, dtype=bool), "b": np.ones(t, dtype=bool)},
                label=label,
                context={"domain": ("vlog", "interview")[i % 2]} if context else {},
            )
        )
    return out


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("toy") / "toy"
    write_dataset(
        path,
        _records(32),
        name="toy-baselines",
        modalities=[ModalitySpec("a", 3), ModalitySpec("b", 2)],
        task=TaskSpec(TaskType.CLASSIFICATION, LabelLevel.SAMPLE, class_names=("neg", "pos")),
    )
    return path


def _cfg(dataset: Path, out: Path, **changes: Any) -> CompareConfig:
    kwargs: dict[str, Any] = {
        "dataset": str(dataset),
        "fusions": ["concat", "unimodal"],
        "seeds": 1,
        "epochs": 3,
        "out_dir": str(out),
        "model_overrides": {"hidden": 8},
        "train_overrides": {"lr": 0.03, "batch_size": 8},
        "device": "cpu",
    }
    kwargs.update(changes)
    return CompareConfig(**kwargs)


def test_resolve_all_adds_one_baseline_per_modality() -> None:
    names = resolve_fusions(["all"], modalities=["b", "a"])
    assert names == [*list_fusions(), "unimodal-a", "unimodal-b"]
    assert resolve_fusions(["unimodal", "concat"], modalities=["a"]) == ["unimodal-a", "concat"]
    with pytest.raises(ValueError, match=r"unimodal-c.*unimodal-a, unimodal-b"):
        resolve_fusions(["unimodal-c"], modalities=["a", "b"])
    with pytest.raises(ValueError, match="Unknown fusion 'nope'"):
        resolve_fusions(["nope"])


def test_unimodal_baselines_use_only_their_modality(toy: Path, tmp_path: Path) -> None:
    result = compare(_cfg(toy, tmp_path / "run"))
    assert [r["fusion"] for r in result.rows] == ["concat", "unimodal-a", "unimodal-b"]
    for modality in ("a", "b"):
        info = read_model_info(tmp_path / "run" / "models" / f"unimodal-{modality}-seed0")
        assert list(info["model_config"]["modality_dims"]) == [modality]
    by_name = {r["fusion"]: r for r in result.rows}
    # 'a' carries the label, 'b' is noise: the baselines say which modality the fusion relies on
    assert by_name["unimodal-a"]["accuracy"] > by_name["unimodal-b"]["accuracy"]
    assert by_name["unimodal-a"]["params"] < by_name["concat"]["params"]


def test_the_summary_tests_each_row_against_the_best_unimodal_baseline(toy: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    compare(_cfg(toy, out, seeds=2))
    meta = json.loads((out / "run.json").read_text(encoding="utf-8"))
    reference = meta["significance"]["reference"]
    assert reference in ("unimodal-a", "unimodal-b") and meta["significance"]["reference_chosen_on"] == "val"
    summary = {r["fusion"]: r for r in read_csv(out / "summary.csv")}
    assert summary[reference]["vs_best_unimodal"] == "reference" and summary[reference]["p_vs_best_unimodal"] == ""
    for name, row in summary.items():
        assert float(row["ci_low"]) <= float(row["accuracy_mean"]) <= float(row["ci_high"])
        if name != reference:
            assert row["vs_best_unimodal"] in ("better", "not different", "worse")
            assert 0.0 < float(row["p_vs_best_unimodal"]) <= 1.0
    assert "vs best unimodal" in (out / "summary.md").read_text(encoding="utf-8")
    # A run directory from before predictions were saved: --resume predicts them with the saved models.
    shutil.rmtree(out / "predictions")
    compare(_cfg(toy, out, seeds=2, resume=True))
    assert {r["fusion"]: r for r in read_csv(out / "summary.csv")} == summary
    # A tampered predictions file is named, not silently reused.
    path = out / "predictions" / "test" / "concat-seed1.safetensors"
    path.write_bytes(b"{}")
    with pytest.raises(DataError, match=r"concat-seed1\.safetensors"):
        compare(_cfg(toy, out, seeds=2, resume=True))


def test_parallel_jobs_give_the_same_rows(toy: Path, tmp_path: Path) -> None:
    serial = compare(_cfg(toy, tmp_path / "serial", fusions=["concat", "gated"], seeds=2))
    parallel = compare(_cfg(toy, tmp_path / "parallel", fusions=["concat", "gated"], seeds=2, jobs=2))

    assert without_time(parallel.rows) == without_time(serial.rows)
    assert (tmp_path / "parallel" / "report.html").is_file()


def test_per_fusion_preset_entries_apply_to_their_fusion_only(toy: Path, tmp_path: Path) -> None:
    preset = Preset.from_dict(
        "toy-baselines", {"model": {"dropout": 0.1}, "train": {}, "fusions": {"gated": {"model": {"dropout": 0.4}}}}
    )
    compare(_cfg(toy, tmp_path / "run", fusions=["concat", "gated"], preset=preset))
    models = tmp_path / "run" / "models"
    assert read_model_info(models / "concat-seed0")["model_config"]["dropout"] == 0.1
    assert read_model_info(models / "gated-seed0")["model_config"]["dropout"] == 0.4
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["per_fusion"]["gated"]["model_config"]["dropout"] == 0.4


def test_context_is_embedded_when_the_data_set_has_it(tmp_path: Path) -> None:
    path = tmp_path / "ctx"
    write_dataset(
        path,
        _records(16, context=True),
        name="toy-context",
        modalities=[ModalitySpec("a", 3), ModalitySpec("b", 2)],
        task=TaskSpec(TaskType.CLASSIFICATION, LabelLevel.SAMPLE, class_names=("neg", "pos")),
    )
    compare(_cfg(path, tmp_path / "run", fusions=["gated"]))
    info = read_model_info(tmp_path / "run" / "models" / "gated-seed0")
    assert info["model_config"]["context_sizes"] == {"domain": 2}


@pytest.mark.parametrize("jobs", [0, -1, 1.5, True])
def test_jobs_must_be_a_positive_integer(jobs: Any) -> None:
    with pytest.raises(ValueError, match=r"The 'jobs' parameter of CompareConfig must be a positive integer"):
        CompareConfig(jobs=jobs)
