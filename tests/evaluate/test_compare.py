"""Tests for mmfuse.evaluate.compare: the run directory, determinism, resume, errors, native and regression data.

Every training here is tiny (hidden 8, two epochs), and one compare run on basic-motions is shared by most
assertions, so the module stays within a few seconds of training on two cores.
"""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from experiment_support import read_csv, without_time
from mmfuse.data import (
    ModalitySpec,
    SequenceRecord,
    TaskSpec,
    dataset_preset,
    list_datasets,
    load_dataset,
    open_dataset,
    write_dataset,
)
from mmfuse.errors import DataError, MmfuseWarning
from mmfuse.evaluate.compare import CompareConfig, CompareProgress, CompareResult, compare
from mmfuse.evaluate.rundir import RunDir
from mmfuse.fusion import list_fusions
from mmfuse.models import load_model, read_model_info
from mmfuse.preprocess import ModalityNormalizers, ZScoreNormalizer
from mmfuse.train import Trainer, evaluate_model
from mmfuse.types import LabelLevel, TaskType

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

EPOCHS = 2
FUSIONS = ["concat", "weighted"]
SEEDS = 2
TINY = {"hidden": 16}
FAST = {"lr": 0.03}  # two epochs at this rate already separate the fusions, so the summary order is tested
CLASSIFICATION_COLUMNS = [
    "fusion",
    "seed",
    "params",
    "train_seconds",
    "best_epoch",
    "accuracy",
    "f1_weighted",
    "f1_macro",
]
VALIDATION_COLUMNS = ["val_accuracy", "val_f1_weighted", "val_f1_macro", "val_loss"]
RUN_FILES = [
    "model.safetensors",
    "config.json",
    "normalizers.json",
    "normalizers.safetensors",
    "history.json",
    "test_metrics.json",
    "result.json",
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _config(out_dir: Path, **changes: Any) -> CompareConfig:
    kwargs: dict[str, Any] = {
        "fusions": list(FUSIONS),
        "seeds": SEEDS,
        "epochs": EPOCHS,
        "out_dir": str(out_dir),
        "model_overrides": dict(TINY),
        "train_overrides": dict(FAST),
        "device": "cpu",
        "command": "mmfuse compare --from-tests",
    }
    kwargs.update(changes)
    return CompareConfig(**kwargs)


@pytest.fixture(scope="module")
def basic_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[CompareResult, list[CompareProgress]]:
    """Two fusions x two seeds on the offline default, with every progress event recorded."""
    events: list[CompareProgress] = []
    out = tmp_path_factory.mktemp("compare") / "run"
    result = compare(_config(out), progress=events.append)
    return result, events


@pytest.fixture(scope="module")
def kept_run(tmp_path_factory: pytest.TempPathFactory) -> CompareResult:
    """concat, seed 0 again, with the same settings as ``basic_run`` but keeping the last/ checkpoint."""
    out = tmp_path_factory.mktemp("compare-kept") / "run"
    return compare(_config(out, fusions=["concat"], seeds=1, keep_checkpoints=True))


# ----------------------------------------------------------------------------------------------------------
# the run directory


def test_results_csv_has_one_row_per_fusion_and_seed(basic_run: tuple[CompareResult, list[CompareProgress]]) -> None:
    result, _ = basic_run
    rows = read_csv(result.out_dir / "results.csv")
    assert [(r["fusion"], int(r["seed"])) for r in rows] == [(f, s) for f in FUSIONS for s in range(SEEDS)]
    assert set(CLASSIFICATION_COLUMNS) <= set(rows[0])
    assert all(set(VALIDATION_COLUMNS) <= set(row) for row in rows)  # whatever each run monitored
    for row, returned in zip(rows, result.rows, strict=True):
        assert int(row["params"]) == returned["params"] > 0
        assert float(row["train_seconds"]) > 0
        assert 1 <= int(row["best_epoch"]) <= EPOCHS
        for metric in ("accuracy", "f1_weighted", "f1_macro"):
            assert 0.0 <= float(row[metric]) <= 1.0
            assert float(row[metric]) == pytest.approx(returned[metric], rel=1e-5)
    # the same architecture around each fusion: params differ only by fusion, never by seed
    by_fusion = {f: {r["params"] for r in rows if r["fusion"] == f} for f in FUSIONS}
    assert all(len(p) == 1 for p in by_fusion.values())


def test_summary_is_mean_and_std_per_fusion_best_first(basic_run: tuple[CompareResult, list[CompareProgress]]) -> None:
    result, _ = basic_run
    summary = read_csv(result.out_dir / "summary.csv")
    assert result.main_metric == "accuracy"
    assert sorted(r["fusion"] for r in summary) == sorted(FUSIONS)
    means = [float(r["accuracy_mean"]) for r in summary]
    assert means == sorted(means, reverse=True)
    assert len(set(means)) == len(means), "the fusions tie: this run cannot tell whether the summary is sorted"
    assert result.best["fusion"] == summary[0]["fusion"]
    for row in summary:
        accs = np.array([r["accuracy"] for r in result.rows if r["fusion"] == row["fusion"]])
        assert int(row["n_seeds"]) == SEEDS
        assert float(row["accuracy_mean"]) == pytest.approx(accs.mean(), abs=1e-5)
        assert float(row["accuracy_std"]) == pytest.approx(accs.std(ddof=1), abs=1e-5)
        for column in ("params_mean", "train_seconds_mean", "f1_weighted_mean", "f1_macro_std"):
            assert column in row
    md = (result.out_dir / "summary.md").read_text(encoding="utf-8")
    assert all(f in md for f in FUSIONS)


def test_summary_has_an_interval_per_fusion_and_saved_predictions(
    basic_run: tuple[CompareResult, list[CompareProgress]],
) -> None:
    result, _ = basic_run
    run = RunDir(result.out_dir)
    test_size = json.loads(run.run_json.read_text(encoding="utf-8"))["dataset"]["sizes"]["test"]
    for row in read_csv(run.summary_csv):
        assert float(row["ci_low"]) <= float(row["accuracy_mean"]) <= float(row["ci_high"])
        # no unimodal baseline in this run: the test columns are empty, not 0
        assert row["p_vs_best_unimodal"] == "" and row["vs_best_unimodal"] == ""
    for r in result.rows:
        test = run.read_predictions(r["fusion"], r["seed"], "test")
        assert len(test) == test_size and test.probs is not None and test.probs.shape == (test_size, 4)
        assert float((test.y_pred == test.y_true).mean()) == pytest.approx(r["accuracy"], abs=1e-6)
        assert len(run.read_predictions(r["fusion"], r["seed"], "val")) > 0


def test_report_html_is_self_contained(basic_run: tuple[CompareResult, list[CompareProgress]]) -> None:
    result, _ = basic_run
    html = (result.out_dir / "report.html").read_text(encoding="utf-8")
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    assert images, "the report embeds no PNG figure"
    assert all(base64.b64decode(img).startswith(PNG_SIGNATURE) for img in images)
    # nothing fetched from elsewhere: every src/href is inline data or an in-page/relative link
    for ref in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert not re.match(r"(https?:)?//", ref), ref


def test_run_json_records_the_run(basic_run: tuple[CompareResult, list[CompareProgress]]) -> None:
    result, _ = basic_run
    meta = json.loads((result.out_dir / "run.json").read_text(encoding="utf-8"))
    ds = load_dataset("basic-motions")
    assert meta["dataset"]["name"] == "basic-motions"
    assert meta["dataset"]["task"] == {
        "type": "classification",
        "level": "sample",
        "class_names": list(ds.task.class_names),
    }
    assert meta["dataset"]["sizes"] == {s: len(ds.split(s)) for s in ("train", "val", "test")}
    assert set(meta["dataset"]["modalities"]) == set(ds.modalities)
    assert meta["fusions"] == FUSIONS and meta["seeds"] == list(range(SEEDS))
    assert meta["command"] == "mmfuse compare --from-tests"
    assert {"mmfuse", "torch", "numpy", "python", "platform"} <= set(meta["versions"])
    assert meta["started"] and meta["finished"] and meta["finished"] >= meta["started"]
    # the preset, with the overrides applied over it
    assert meta["train_config"]["epochs"] == EPOCHS
    assert meta["train_config"]["lr"] == FAST["lr"]
    assert meta["train_config"]["batch_size"] == dataset_preset("basic-motions")["train"]["batch_size"]
    assert meta["preset"] == "basic-motions"  # which preset the run used
    assert meta["metrics"] == ["accuracy", "f1_weighted", "f1_macro"] and meta["main_metric"] == "accuracy"
    assert meta["model_config"]["hidden"] == TINY["hidden"]


def test_every_run_has_its_model_folder(basic_run: tuple[CompareResult, list[CompareProgress]]) -> None:
    result, _ = basic_run
    dirs = sorted(p.name for p in (result.out_dir / "models").iterdir())
    assert dirs == sorted(f"{f}-seed{s}" for f in FUSIONS for s in range(SEEDS))
    for row in result.rows:
        run_dir = result.out_dir / "models" / f"{row['fusion']}-seed{row['seed']}"
        for name in RUN_FILES:
            assert (run_dir / name).is_file(), f"{run_dir / name} is missing"
        assert not (run_dir / "last").exists(), "last/ must be removed unless keep_checkpoints=True"
        history = json.loads((run_dir / "history.json").read_text(encoding="utf-8"))
        assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
        assert {"train_loss", "val_loss", "val_accuracy", "lr"} <= set(history[0])
        assert json.loads((run_dir / "result.json").read_text(encoding="utf-8")) == pytest.approx(row)
        tm = json.loads((run_dir / "test_metrics.json").read_text(encoding="utf-8"))
        assert tm["accuracy"] == pytest.approx(row["accuracy"])
        assert np.array(tm["confusion_matrix"]).sum() == tm["n"] == len(load_dataset("basic-motions").split("test"))
        info = read_model_info(run_dir)
        assert info["model_config"]["fusion"] == row["fusion"]
        assert info["train_config"]["seed"] == row["seed"]
        assert info["dataset"] == "basic-motions"


def test_progress_reports_every_epoch_and_run(basic_run: tuple[CompareResult, list[CompareProgress]]) -> None:
    _, events = basic_run
    total = len(FUSIONS) * SEEDS
    done = [e for e in events if e.done]
    epochs = [e for e in events if not e.done]
    assert [(e.fusion, e.seed, e.run_index) for e in done] == [
        (f, s, i * SEEDS + s + 1) for i, f in enumerate(FUSIONS) for s in range(SEEDS)
    ]
    assert all(e.total_runs == total for e in events)
    assert len(epochs) == total * EPOCHS and all(e.epochs == EPOCHS for e in epochs)


def test_saved_model_reproduces_the_test_accuracy(basic_run: tuple[CompareResult, list[CompareProgress]]) -> None:
    result, _ = basic_run
    ds = load_dataset("basic-motions")
    csv_rows = read_csv(result.out_dir / "results.csv")
    for row, csv_row in zip(result.rows, csv_rows, strict=True):
        run_dir = result.out_dir / "models" / f"{row['fusion']}-seed{row['seed']}"
        model = load_model(run_dir)
        normalizers = ModalityNormalizers.load(run_dir)
        test = ds.split("test").with_transform(normalizers.transform_record)
        metrics = evaluate_model(model, test, ds.task)
        assert metrics["accuracy"] == pytest.approx(row["accuracy"], abs=1e-9)
        assert metrics["f1_macro"] == pytest.approx(row["f1_macro"], abs=1e-9)
        assert metrics["accuracy"] == pytest.approx(float(csv_row["accuracy"]), rel=1e-5)


def test_the_normalisers_are_fitted_on_the_training_split(
    basic_run: tuple[CompareResult, list[CompareProgress]],
) -> None:
    result, _ = basic_run
    normalizers = ModalityNormalizers.load(result.out_dir / "models" / "concat-seed0")
    train = load_dataset("basic-motions").split("train")
    for modality, normalizer in normalizers.items():
        assert isinstance(normalizer, ZScoreNormalizer)  # basic-motions streams are continuous
        values, mask = train.stacked(modality)
        expected = values[mask].astype(np.float64).mean(axis=0)
        np.testing.assert_allclose(normalizer.mean_, expected, rtol=1e-5, atol=1e-6)


def test_keep_checkpoints_keeps_last(kept_run: CompareResult) -> None:
    last = kept_run.out_dir / "models" / "concat-seed0" / "last"
    assert last.is_dir() and any(last.iterdir())


# ----------------------------------------------------------------------------------------------------------
# determinism and resume


def test_same_seed_gives_the_same_row(
    basic_run: tuple[CompareResult, list[CompareProgress]], kept_run: CompareResult
) -> None:
    first = [r for r in basic_run[0].rows if r["fusion"] == "concat" and r["seed"] == 0]
    assert without_time(kept_run.rows) == without_time(first)


def test_resume_reuses_finished_runs(
    basic_run: tuple[CompareResult, list[CompareProgress]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, _ = basic_run
    out = tmp_path / "run"
    shutil.copytree(result.out_dir, out)
    done_files = sorted((out / "models").glob("*/result.json"))
    assert len(done_files) == len(result.rows)
    before = {p: p.stat().st_mtime_ns for p in done_files}
    weights = {p: p.stat().st_mtime_ns for p in (out / "models").glob("*/model.safetensors")}

    def no_training(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("resume=True retrained a finished run")

    monkeypatch.setattr(Trainer, "fit", no_training)
    resumed = compare(_config(out, resume=True))
    assert resumed.rows == result.rows  # train_seconds included: the finished rows are read back
    assert {p: p.stat().st_mtime_ns for p in done_files} == before
    assert {p: p.stat().st_mtime_ns for p in weights} == weights
    assert (out / "results.csv").read_text() == (result.out_dir / "results.csv").read_text()
    assert [r["fusion"] for r in resumed.summary] == [r["fusion"] for r in result.summary]


def _check_validation_columns(run: RunDir, row: dict[str, Any]) -> None:
    """val_<metric> is scored on the kept model's saved validation predictions; val_loss is the history's value at
    the selected epoch."""
    saved = run.read_predictions(row["fusion"], row["seed"], "val")
    assert row["val_accuracy"] == pytest.approx(float(np.mean(saved.y_true == saved.y_pred)))
    history = json.loads((run.model_dir(row["fusion"], row["seed"]) / "history.json").read_text(encoding="utf-8"))
    assert row["val_loss"] == next(h["val_loss"] for h in history if h["epoch"] == row["best_epoch"])


def test_every_row_has_the_same_validation_columns_whatever_it_monitored(tmp_path: Path) -> None:
    preset = dataset_preset("basic-motions")
    mixed = {"name": "mixed", **preset, "fusions": {"weighted": {"train": {"monitor": "accuracy"}}}}
    result = compare(_config(tmp_path / "run", seeds=1, preset=mixed))
    run = RunDir(result.out_dir)
    for row in result.rows:
        assert [k for k in row if k.startswith("val_")] == VALIDATION_COLUMNS
        _check_validation_columns(run, row)
    history = json.loads((run.model_dir("weighted", 0) / "history.json").read_text(encoding="utf-8"))
    weighted = next(r for r in result.rows if r["fusion"] == "weighted")
    selected = next(h for h in history if h["epoch"] == weighted["best_epoch"])
    assert weighted["val_accuracy"] == pytest.approx(selected["val_accuracy"])  # what its monitor selected on
    assert read_csv(result.out_dir / "results.csv")[0].keys() >= set(VALIDATION_COLUMNS)


def test_resume_completes_a_row_of_an_older_run_without_the_validation_columns(
    basic_run: tuple[CompareResult, list[CompareProgress]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run finished before every row carried the validation columns recorded val_<monitor> only."""
    result, _ = basic_run
    out = tmp_path / "run"
    shutil.copytree(result.out_dir, out)
    old = out / "models" / "concat-seed0" / "result.json"
    row = json.loads(old.read_text(encoding="utf-8"))
    old.write_text(json.dumps({k: v for k, v in row.items() if not k.startswith("val_")} | {"val_loss": 0.5}))
    monkeypatch.setattr(Trainer, "fit", lambda *a, **k: pytest.fail("resume=True retrained a finished run"))
    resumed = compare(_config(out, resume=True))
    assert resumed.rows == result.rows  # computed from the saved validation predictions and history.json
    assert json.loads(old.read_text(encoding="utf-8")) == row
    assert (out / "results.csv").read_text() == (result.out_dir / "results.csv").read_text()
    for done in resumed.rows:
        _check_validation_columns(RunDir(out), done)


def test_resume_reruns_only_the_unfinished_run(
    basic_run: tuple[CompareResult, list[CompareProgress]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, _ = basic_run
    out = tmp_path / "run"
    shutil.copytree(result.out_dir, out)
    (out / "models" / "weighted-seed1" / "result.json").unlink()
    fitted: list[Path] = []
    real_fit = Trainer.fit

    def counting_fit(self: Trainer, *args: Any, **kwargs: Any) -> Any:
        fitted.append(Path(kwargs["out_dir"]))
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", counting_fit)
    resumed = compare(_config(out, resume=True))
    assert [p.name for p in fitted] == ["weighted-seed1"]
    assert without_time(resumed.rows) == without_time(result.rows)
    assert (out / "models" / "weighted-seed1" / "result.json").is_file()


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"seed": 0}'])
def test_resume_refuses_a_corrupt_result_json(
    basic_run: tuple[CompareResult, list[CompareProgress]], tmp_path: Path, content: str
) -> None:
    result, _ = basic_run
    out = tmp_path / "run"
    shutil.copytree(result.out_dir, out)
    bad = out / "models" / "concat-seed1" / "result.json"
    bad.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(str(bad))):
        compare(_config(out, resume=True))


def _tree(path: Path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_mtime_ns for p in sorted(path.rglob("*")) if p.is_file()}


def _rewrite_json(path: Path, change: Any) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def _set(data: dict[str, Any], key: str, value: Any) -> None:
    data[key] = value


TAMPERED_RESULTS = {
    "metric edited": ("result.json", lambda d: _set(d, "accuracy", 0.999)),
    "metric not a number": ("result.json", lambda d: _set(d, "accuracy", "high")),
    "metric infinite": ("result.json", lambda d: _set(d, "f1_macro", float("inf"))),
    "metric missing": ("result.json", lambda d: d.pop("f1_weighted")),
    "params edited": ("result.json", lambda d: _set(d, "params", d["params"] + 1)),
    "model of other settings": ("config.json", lambda d: d["model_config"].update(hidden=32)),
    "model of another seed": ("config.json", lambda d: d["train_config"].update(seed=7)),
    "model of another data set": ("config.json", lambda d: _set(d, "dataset", "other")),
}


@pytest.mark.parametrize("case", sorted(TAMPERED_RESULTS))
def test_resume_refuses_a_tampered_or_inconsistent_run(
    basic_run: tuple[CompareResult, list[CompareProgress]], tmp_path: Path, case: str
) -> None:
    result, _ = basic_run
    out = tmp_path / "run"
    shutil.copytree(result.out_dir, out)
    name, change = TAMPERED_RESULTS[case]
    run_dir = out / "models" / "weighted-seed0"
    _rewrite_json(run_dir / name, change)
    with pytest.raises(DataError, match=re.escape(str(run_dir / "result.json"))):
        compare(_config(out, resume=True))


def test_resume_refuses_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a run directory"):
        compare(_config(out, resume=True))
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


# ----------------------------------------------------------------------------------------------------------
# one run directory holds one run


def test_an_existing_run_directory_is_refused_without_resume_or_overwrite(
    basic_run: tuple[CompareResult, list[CompareProgress]], tmp_path: Path
) -> None:
    result, _ = basic_run
    out = tmp_path / "run"
    shutil.copytree(result.out_dir, out)
    before = _tree(out)
    with pytest.raises(FileExistsError, match=r"already holds a run.*--resume.*--overwrite"):
        compare(_config(out, fusions=["concat"], seeds=1))
    assert _tree(out) == before


def test_resume_and_overwrite_exclude_each_other(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'resume' and 'overwrite'"):
        _config(tmp_path, resume=True, overwrite=True)


def _old_run_with_analysis(result: CompareResult, out: Path) -> None:
    shutil.copytree(result.out_dir, out)
    (out / "analysis").mkdir()
    (out / "analysis" / "summary.md").write_text("old analysis")
    (out / "final_results.csv").write_text("fusion,seed\nweighted,0\n")


def test_overwrite_replaces_the_whole_directory(
    basic_run: tuple[CompareResult, list[CompareProgress]], tmp_path: Path
) -> None:
    result, _ = basic_run
    out = tmp_path / "run"
    _old_run_with_analysis(result, out)
    new = compare(_config(out, fusions=["concat"], seeds=1, overwrite=True))
    assert sorted(p.name for p in (out / "models").iterdir()) == ["concat-seed0"]
    assert not (out / "analysis").exists() and not (out / "final_results.csv").exists()
    assert [r["fusion"] for r in read_csv(out / "results.csv")] == ["concat"]
    assert json.loads((out / "run.json").read_text())["fusions"] == ["concat"]
    assert not re.search(r">\s*weighted\s*<", (out / "report.html").read_text(encoding="utf-8"))
    assert [p.name for p in tmp_path.iterdir()] == ["run"], "the old run was not deleted"
    assert without_time(new.rows) == without_time([r for r in result.rows if (r["fusion"], r["seed"]) == ("concat", 0)])


@pytest.mark.parametrize(
    "bad", [{"fusions": ["nope"]}, {"max_params": 10}, {"dataset": "no-such-data"}, {"metrics": ["mae"]}]
)
def test_overwrite_with_invalid_settings_keeps_the_old_run(
    basic_run: tuple[CompareResult, list[CompareProgress]], tmp_path: Path, bad: dict[str, Any]
) -> None:
    result, _ = basic_run
    out = tmp_path / "run"
    _old_run_with_analysis(result, out)
    before = _tree(out)
    with pytest.raises(ValueError):
        compare(_config(out, overwrite=True, **bad))
    assert _tree(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_a_failed_overwrite_puts_the_old_run_back(
    basic_run: tuple[CompareResult, list[CompareProgress]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, _ = basic_run
    out = tmp_path / "run"
    _old_run_with_analysis(result, out)
    before = _tree(out)

    def failing_fit(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Trainer, "fit", failing_fit)
    with pytest.raises(RuntimeError, match="disk on fire"):
        compare(_config(out, fusions=["concat"], seeds=1, overwrite=True))
    assert _tree(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


# ----------------------------------------------------------------------------------------------------------
# errors


def test_unknown_fusion_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nope") as info:
        compare(_config(tmp_path / "run", fusions=["concat", "nope"]))
    assert all(name in str(info.value) for name in list_fusions())
    assert not (tmp_path / "run").exists(), "nothing is written before the fusions are checked"


def test_unknown_dataset_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no-such-data") as info:
        compare(_config(tmp_path / "run", dataset="no-such-data"))
    assert all(name in str(info.value) for name in list_datasets())
    assert "basic-motions" in str(info.value) and "mosi-utterance" in str(info.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("seeds", [0, -1, True, 1.5])
def test_seeds_must_be_a_positive_integer(tmp_path: Path, seeds: Any) -> None:
    with pytest.raises(ValueError, match="'seeds'"):
        _config(tmp_path, seeds=seeds)


def test_epochs_and_fusions_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'epochs'"):
        _config(tmp_path, epochs=0)
    with pytest.raises(ValueError, match="'fusions'"):
        _config(tmp_path, fusions=[])


def test_max_params_too_small_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"max_params budget of 10\b") as info:
        compare(_config(tmp_path / "run", fusions=["concat"], seeds=1, max_params=10))
    assert "hidden" in str(info.value)  # it says what to lower
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_resume_refuses_changed_settings(
    basic_run: tuple[CompareResult, list[CompareProgress]], tmp_path: Path
) -> None:
    result, _ = basic_run
    out = tmp_path / "run"
    shutil.copytree(result.out_dir, out)
    bigger = {**TINY, "hidden": TINY["hidden"] * 2}
    with pytest.raises(DataError, match=r"settings differ.*model_config") as info:
        compare(_config(out, resume=True, model_overrides=bigger))
    assert str(out) in str(info.value)


# ----------------------------------------------------------------------------------------------------------
# native data sets: step-level labels with a modality missing, and regression


def _toy_records(n: int, *, regression: bool) -> list[SequenceRecord]:
    rng = np.random.default_rng(7)
    records = []
    for i in range(n):
        t = 4 + i % 5
        a = rng.normal(size=(t, 3)).astype(np.float32)
        b = rng.normal(size=(t, 2)).astype(np.float32)
        b_mask = np.ones(t, dtype=bool)
        if i % 3 == 0:  # b absent for the whole recording
            b[:] = 0.0
            b_mask[:] = False
        elif i % 3 == 1:  # b absent at the first step
            b[0] = 0.0
            b_mask[0] = False
        label: Any = float(a[:, 0].mean()) if regression else (a[:, 0] > 0).astype(np.int64)
        records.append(
            SequenceRecord(
                id=f"rec{i:02d}",
                group=f"g{i}",
                split=("train", "train", "val", "test")[i % 4],
                values={"a": a, "b": b},
                masks={"a": np.ones(t, dtype=bool), "b": b_mask},
                label=label,
            )
        )
    return records


@pytest.fixture(scope="module")
def step_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("native") / "toy-steps"
    write_dataset(
        path,
        _toy_records(24, regression=False),
        name="toy-steps",
        modalities=[ModalitySpec("a", 3), ModalitySpec("b", 2)],
        task=TaskSpec(TaskType.CLASSIFICATION, LabelLevel.STEP, class_names=("low", "high")),
    )
    return path


@pytest.fixture(scope="module")
def regression_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("native") / "toy-regression"
    write_dataset(
        path,
        _toy_records(24, regression=True),
        name="toy-regression",
        modalities=[ModalitySpec("a", 3), ModalitySpec("b", 2)],
        task=TaskSpec(TaskType.REGRESSION, LabelLevel.SAMPLE),
    )
    return path


def test_native_step_level_dataset_folder(step_dataset: Path, tmp_path: Path) -> None:
    result = compare(_config(tmp_path / "run", dataset=str(step_dataset), fusions=["concat", "gated"], seeds=1))
    ds = open_dataset(step_dataset)
    test = ds.split("test")
    assert [(r["fusion"], r["seed"]) for r in result.rows] == [("concat", 0), ("gated", 0)]
    meta = json.loads((result.out_dir / "run.json").read_text(encoding="utf-8"))
    assert meta["dataset"]["name"] == "toy-steps" and meta["dataset"]["task"]["level"] == "step"
    assert meta["dataset"]["sizes"] == {"train": 12, "val": 6, "test": 6}
    for row in result.rows:
        assert 0.0 <= row["accuracy"] <= 1.0 and not math.isnan(row["f1_macro"])
        tm = json.loads((result.out_dir / "models" / f"{row['fusion']}-seed0" / "test_metrics.json").read_text())
        # step-level metrics count every real test step, once
        assert tm["n"] == int(test.lengths.sum())
        assert tm["class_names"] == ["low", "high"]


def test_native_regression_dataset(regression_dataset: Path, tmp_path: Path) -> None:
    result = compare(_config(tmp_path / "run", dataset=str(regression_dataset), fusions=["concat", "gated"], seeds=1))
    assert result.main_metric == "mae"
    rows = read_csv(result.out_dir / "results.csv")
    assert {"mae", "rmse", "pearson"} <= set(rows[0]) and "accuracy" not in rows[0]
    for row in result.rows:
        assert 0.0 <= row["mae"] <= row["rmse"]  # RMSE is never below MAE
        assert math.isnan(row["pearson"]) or -1.0 <= row["pearson"] <= 1.0
        assert "val_mae" in row  # the regression monitor
    maes = [r["mae_mean"] for r in result.summary]
    assert maes == sorted(maes), "regression summary must be sorted lowest MAE first"
    html = (result.out_dir / "report.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in html


# ----------------------------------------------------------------------------------------------------------
# modality subsets and degenerate inputs


def test_modalities_subset_is_used_and_recorded(step_dataset: Path, tmp_path: Path) -> None:
    cfg = _config(
        tmp_path / "run", dataset=str(step_dataset), fusions=["concat", "unimodal"], seeds=1, modalities=["a"]
    )
    with pytest.warns(MmfuseWarning, match="one modality"):
        result = compare(cfg)
    assert [r["fusion"] for r in result.rows] == ["concat", "unimodal-a"]  # 'unimodal': the subset's baselines
    for fusion in ("concat", "unimodal-a"):
        info = read_model_info(result.out_dir / "models" / f"{fusion}-seed0")
        assert info["model_config"]["modality_dims"] == {"a": 3}
    meta = json.loads((result.out_dir / "run.json").read_text(encoding="utf-8"))
    assert meta["modalities"] == ["a"] and set(meta["dataset"]["modalities"]) == {"a", "b"}
    assert any("one modality" in w for w in meta["warnings"])
    html = (result.out_dir / "report.html").read_text(encoding="utf-8")
    assert "a subset of the data set" in html and "one modality" in html
    with pytest.raises(DataError, match="modalities"):  # resuming with other modalities is another run
        compare(_config(tmp_path / "run", dataset=str(step_dataset), fusions=["concat"], seeds=1, resume=True))


def test_unknown_modalities_are_listed(step_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\['zz', 'yy'\].*Its modalities: a, b"):
        compare(_config(tmp_path / "run", dataset=str(step_dataset), modalities=["a", "zz", "yy"]))
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="'modalities'"):
        _config(tmp_path / "run", modalities=[])


def test_all_modalities_give_no_single_modality_warning(step_dataset: Path, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", MmfuseWarning)
        result = compare(_config(tmp_path / "run", dataset=str(step_dataset), fusions=["concat"], seeds=1))
    meta = json.loads((result.out_dir / "run.json").read_text(encoding="utf-8"))
    assert meta["modalities"] == ["a", "b"] and meta["warnings"] == []


@pytest.fixture(scope="module")
def tiny_test_split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sample-level classes; train 8, val 3, test 1 (one class absent from test)."""
    rng = np.random.default_rng(3)
    records = []
    for i in range(12):
        t = 4
        records.append(
            SequenceRecord(
                id=f"s{i:02d}",
                group=f"g{i}",
                split="train" if i < 8 else ("val" if i < 11 else "test"),
                values={
                    "a": rng.normal(size=(t, 2)).astype(np.float32),
                    "b": rng.normal(size=(t, 2)).astype(np.float32),
                },
                masks={"a": np.ones(t, dtype=bool), "b": np.ones(t, dtype=bool)},
                label=i % 2,
            )
        )
    path = tmp_path_factory.mktemp("native") / "tiny-test"
    write_dataset(
        path,
        records,
        name="tiny-test",
        modalities=[ModalitySpec("a", 2), ModalitySpec("b", 2)],
        task=TaskSpec(TaskType.CLASSIFICATION, LabelLevel.SAMPLE, class_names=("no", "yes")),
    )
    return path


def test_degenerate_splits_are_warned_and_recorded(tiny_test_split: Path, tmp_path: Path) -> None:
    with pytest.warns(MmfuseWarning) as caught:
        result = compare(_config(tmp_path / "run", dataset=str(tiny_test_split), fusions=["concat"], seeds=1))
    texts = [str(w.message) for w in caught if issubclass(w.category, MmfuseWarning)]
    assert any("'test' split" in t and "1 item(s)" in t for t in texts), texts
    assert any("'val' split" in t and "3 item(s)" in t for t in texts), texts
    assert any("'test' split" in t and "class(es)" in t and "'no': 0" in t for t in texts), texts
    meta = json.loads((result.out_dir / "run.json").read_text(encoding="utf-8"))
    assert meta["warnings"] == texts
    md = (result.out_dir / "summary.md").read_text(encoding="utf-8")
    assert "1 item(s)" in md


# ----------------------------------------------------------------------------------------------------------
# real data


@pytest.mark.data
def test_mosi_utterance_with_the_real_preset(tmp_path: Path) -> None:
    if not (SHARED_DATA / "mosi-utterance").is_dir():
        pytest.skip(f"the CMU-MOSI utterance data is not at {SHARED_DATA / 'mosi-utterance'}")
    result = compare(
        CompareConfig(
            dataset="mosi-utterance",
            data_dir=str(SHARED_DATA),
            fusions=["concat"],
            seeds=1,
            out_dir=str(tmp_path / "mosi"),
            device="cpu",
        )
    )
    (row,) = result.rows
    assert row["accuracy"] >= 0.77, row
    ds = load_dataset("mosi-utterance", data_dir=SHARED_DATA)
    val, test, train = (set(ds.split(s).groups) for s in ("val", "test", "train"))
    assert val and test and not (val & test) and not (train & test) and not (train & val)
    meta = json.loads((result.out_dir / "run.json").read_text(encoding="utf-8"))
    assert meta["dataset"]["sizes"] == {s: len(ds.split(s)) for s in ("train", "val", "test")}
    assert meta["model_config"] == dataset_preset("mosi-utterance")["model"]
