"""Tests for the ``mmfuse`` command line (mmfuse.cli._app), run in-process with typer's CliRunner."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner, Result

from mmfuse import __version__
from mmfuse.cli._app import app
from mmfuse.data import list_datasets, open_dataset
from mmfuse.fusion import list_fusions

runner = CliRunner()


def _invoke(*args: str | Path) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def _error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def _assert_clean_failure(result: Result) -> str:
    """Exit code 2, exactly one ``error:`` line on stderr, no traceback; returns that line."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = _error_lines(result)
    assert len(lines) == 1, result.stderr
    return lines[0]


def _write_csv(path: Path, times: np.ndarray, values: np.ndarray) -> None:
    header = ["timestamp"] + [f"x{j}" for j in range(values.shape[1])]
    rows = [header] + [[repr(float(t)), *(repr(float(v)) for v in row)] for t, row in zip(times, values, strict=True)]
    path.write_text("\n".join(",".join(r) for r in rows) + "\n", encoding="utf-8")


def _recordings(root: Path, names: tuple[str, ...] = ("r1", "r2")) -> Path:
    """A source folder of two recordings, each with a 10 Hz accelerometer and a 4 Hz gyroscope CSV."""
    src = root / "src"
    rng = np.random.default_rng(0)
    for k, name in enumerate(names):
        rec = src / name
        rec.mkdir(parents=True)
        t_acc = np.arange(0.0, 3.0 + k, 0.1)
        _write_csv(rec / "acc.csv", t_acc, rng.normal(size=(t_acc.size, 2)))
        t_gyro = np.arange(0.0, 3.0 + k, 0.25)
        _write_csv(rec / "gyro.csv", t_gyro, rng.normal(size=(t_gyro.size, 1)))
    (src / "labels.csv").write_text(
        "recording,label\n" + "".join(f"{n},{lab}\n" for n, lab in zip(names, ("walk", "run"), strict=False)),
        encoding="utf-8",
    )
    return src


# ----------------------------------------------------------------------------------------------------------
# listing commands


def test_version() -> None:
    result = _invoke("version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"mmfuse {__version__}"


def test_no_arguments_shows_help() -> None:
    result = _invoke()
    assert "compare" in result.output and "align" in result.output


def test_fusions_lists_every_registered_fusion() -> None:
    result = _invoke("fusions")
    assert result.exit_code == 0, result.output
    first_cells = {line.split("│")[1].strip() for line in result.stdout.splitlines() if line.startswith("│")}
    assert {"concat", "gated", "weighted", "cross_attention"} <= first_cells
    assert set(list_fusions()) <= first_cells


def test_datasets_lists_the_built_ins() -> None:
    result = _invoke("datasets")
    assert result.exit_code == 0, result.output
    first_cells = {line.split("│")[1].strip() for line in result.stdout.splitlines() if line.startswith("│")}
    assert {"basic-motions", "mosi-utterance"} <= first_cells
    assert set(list_datasets()) <= first_cells


# ----------------------------------------------------------------------------------------------------------
# compare and report


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, Path]:
    out = tmp_path_factory.mktemp("cli-compare") / "run"
    result = _invoke("compare", "-f", "concat", "-s", "1", "-e", "2", "--out", out, "--hidden", "8", "--device", "cpu")
    return result, out


def test_compare_writes_the_run_directory(cli_run: tuple[Result, Path]) -> None:
    result, out = cli_run
    assert result.exit_code == 0, result.output
    for name in ("results.csv", "summary.csv", "summary.md", "report.html", "run.json"):
        assert (out / name).is_file(), name
    for name in ("model.safetensors", "config.json", "normalizers.json", "history.json", "test_metrics.json"):
        assert (out / "models" / "concat-seed0" / name).is_file(), name
    with (out / "results.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["fusion"], r["seed"]) for r in rows] == [("concat", "0")]
    meta = json.loads((out / "run.json").read_text())
    assert meta["model_config"]["hidden"] == 8 and meta["train_config"]["epochs"] == 2
    assert meta["fusions"] == ["concat"] and meta["seeds"] == [0]
    assert meta["command"].startswith("mmfuse")
    history = json.loads((out / "models" / "concat-seed0" / "history.json").read_text())
    assert len(history) == 2
    # the results table is printed, with the row's accuracy
    assert "concat" in result.stdout and "accuracy" in result.stdout
    assert f"{float(rows[0]['accuracy']):.4f}" in result.stdout


def test_compare_prints_one_line_per_finished_run_when_not_on_a_terminal(cli_run: tuple[Result, Path]) -> None:
    result, out = cli_run
    with (out / "results.csv").open(newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    lines = [line for line in result.stderr.splitlines() if line.startswith("run ")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"run 1/1 done: concat seed 0  accuracy={float(row['accuracy']):.4f}  (train ")
    assert "elapsed 0:00:" in lines[0]


def test_compare_unknown_fusion(tmp_path: Path) -> None:
    result = _invoke("compare", "-f", "nope", "-s", "1", "--out", tmp_path / "run")
    line = _assert_clean_failure(result)
    assert "'nope'" in line
    assert all(name in line for name in list_fusions()), line


def test_compare_unknown_dataset(tmp_path: Path) -> None:
    result = _invoke("compare", "-d", "nope", "-f", "concat", "-s", "1", "--out", tmp_path / "run")
    line = _assert_clean_failure(result)
    assert "'nope'" in line and "basic-motions" in line and "mosi-utterance" in line


def test_compare_refuses_zero_seeds(tmp_path: Path) -> None:
    result = _invoke("compare", "-f", "concat", "-s", "0", "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert "--seeds" in result.output
    assert not (tmp_path / "run").exists()


def test_compare_max_params_too_small(tmp_path: Path) -> None:
    result = _invoke("compare", "-f", "concat", "-s", "1", "-e", "1", "--max-params", "10", "--out", tmp_path / "r")
    line = _assert_clean_failure(result)
    assert "max_params" in line


def test_compare_into_an_existing_run_needs_resume_or_overwrite(cli_run: tuple[Result, Path], tmp_path: Path) -> None:
    _, first = cli_run
    out = tmp_path / "run"
    shutil.copytree(first, out)
    (out / "analysis").mkdir()
    args = ["compare", "-f", "concat", "-s", "1", "-e", "1", "--hidden", "8", "--device", "cpu", "--out", out]
    line = _assert_clean_failure(_invoke(*args))
    assert str(out) in line and "--resume" in line and "--overwrite" in line
    assert (out / "analysis").is_dir()
    line = _assert_clean_failure(_invoke(*args, "--resume", "--overwrite"))
    assert "resume" in line and "overwrite" in line
    replaced = _invoke(*args, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert not (out / "analysis").exists()
    assert json.loads((out / "run.json").read_text())["train_config"]["epochs"] == 1


@pytest.mark.parametrize("option", [("--fusion", ""), ("--fusion", ","), ("--fusion", " , "), ("--dataset", "")])
def test_compare_empty_names_are_refused_before_anything_is_written(option: tuple[str, str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    line = _assert_clean_failure(_invoke("compare", *option, "-s", "1", "--out", out))
    assert ("fusion" if option[0] == "--fusion" else "data") in line.lower()
    assert not out.exists(), "a refused compare left files behind"


def test_compare_modalities_subset_warns_on_one_modality(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["compare", "-f", "concat", "-m", "gyroscope", "-s", "1", "-e", "1", "--hidden", "8", "--device", "cpu"]
    result = _invoke(*args, "--out", out)
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and "one modality ('gyroscope')" in result.stderr
    assert json.loads((out / "run.json").read_text())["modalities"] == ["gyroscope"]
    line = _assert_clean_failure(_invoke("compare", "-m", "gyroscope,nope", "-s", "1", "--out", tmp_path / "bad"))
    assert "['nope']" in line and "accelerometer, gyroscope" in line
    assert not (tmp_path / "bad").exists()


def test_report_rerenders_the_html(cli_run: tuple[Result, Path]) -> None:
    _, out = cli_run
    (out / "report.html").unlink()
    (out / "summary.md").unlink()
    result = _invoke("report", out)
    assert result.exit_code == 0, result.output
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in html and "concat" in html
    assert (out / "summary.md").is_file()


def test_report_on_an_empty_folder_names_run_json(tmp_path: Path) -> None:
    line = _assert_clean_failure(_invoke("report", tmp_path))
    assert "run.json" in line


def test_report_on_a_missing_folder(tmp_path: Path) -> None:
    line = _assert_clean_failure(_invoke("report", tmp_path / "absent"))
    assert "absent" in line


# ----------------------------------------------------------------------------------------------------------
# align


def test_align_writes_a_dataset_and_the_validation_report(tmp_path: Path) -> None:
    src = _recordings(tmp_path)
    dst = tmp_path / "dst"
    result = _invoke("align", src, "--out", dst, "--rate", "10", "--name", "my-sensors")
    assert result.exit_code == 0, result.output
    # a summary, one row per stream (not per recording), and where the whole report is
    assert "2 recording(s) aligned" in result.stdout
    rows = [line.strip("│┃ ").split()[0] for line in result.stdout.splitlines() if line.startswith(("│ acc", "│ gyro"))]
    assert rows == ["acc", "gyro"], result.stdout
    assert "| r1 " not in result.stdout and str(dst / "validation.md") in result.stdout.replace("\n", "")
    assert open_dataset(dst).name == "my-sensors"
    saved = json.loads((dst / "validation.json").read_text(encoding="utf-8"))
    assert sorted(saved["recordings"]) == ["r1", "r2"] and saved["errors"] == []
    assert set(saved["summary"]) == {"acc", "gyro"} and saved["summary"]["gyro"]["present_in"] == 2
    ds = open_dataset(dst)
    assert sorted(ds.ids) == ["r1", "r2"] and sorted(ds.modalities) == ["acc", "gyro"]
    assert ds.task.class_names == ("run", "walk")
    assert str(dst) in result.stdout.replace("\n", "")


def test_align_summarises_many_warnings_and_prints_each_once(tmp_path: Path) -> None:
    names = tuple(f"r{i:02d}" for i in range(12))
    src = _recordings(tmp_path, names)
    for n in names[2:]:  # ten recordings lack the gyroscope: ten "absent" warnings
        (src / n / "gyro.csv").unlink()
    (src / "labels.csv").write_text(
        "recording,label\n" + "".join(f"{n},{'ab'[i % 2]}\n" for i, n in enumerate(names)), encoding="utf-8"
    )
    result = _invoke("align", src, "--out", tmp_path / "dst", "--rate", "10")
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "dst" / "validation.json").read_text(encoding="utf-8"))
    assert len(saved["warnings"]) == 12 and sum("'gyro' is absent" in w for w in saved["warnings"]) == 10
    lines = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert lines[:5] == [f"warning: {w}" for w in saved["warnings"][:5]], result.stderr  # the first five, once each
    assert lines[5:] == [f"warning: … and 7 more; all 12 are in {tmp_path / 'dst' / 'validation.md'}"]


def test_align_without_a_timeline_says_what_is_needed(tmp_path: Path) -> None:
    line = _assert_clean_failure(_invoke("align", _recordings(tmp_path), "--out", tmp_path / "dst"))
    assert "rate" in line and "reference" in line


def test_align_names_a_corrupt_csv(tmp_path: Path) -> None:
    src = _recordings(tmp_path)
    bad = src / "r2" / "gyro.csv"
    bad.write_text("timestamp,x0\n0.0,1.0\nnot-a-time,oops\n", encoding="utf-8")
    line = _assert_clean_failure(_invoke("align", src, "--out", tmp_path / "dst", "--rate", "10"))
    assert "gyro.csv" in line
    assert not (tmp_path / "dst" / "meta.json").exists()


def test_align_error_keeps_brackets_in_paths(tmp_path: Path) -> None:
    # rich would read "[take1]" as a markup tag and drop it from the message
    src = _recordings(tmp_path, names=("[take1]", "r2"))
    (src / "[take1]" / "acc.csv").write_text("timestamp,x0\nbad,1\n", encoding="utf-8")
    line = _assert_clean_failure(_invoke("align", src, "--out", tmp_path / "dst", "--rate", "10"))
    assert "[take1]" in line and "acc.csv" in line


def test_align_then_compare_end_to_end(tmp_path: Path) -> None:
    """Raw CSV streams at two rates, with a gap and one recording lacking a modality, through align and compare."""
    src = tmp_path / "src"
    rng = np.random.default_rng(1)
    names = [f"rec{i:02d}" for i in range(24)]
    labels = ["up" if i % 2 else "down" for i in range(24)]
    for i, (name, label) in enumerate(zip(names, labels, strict=True)):
        rec = src / name
        rec.mkdir(parents=True)
        sign = 1.0 if label == "up" else -1.0
        t_acc = np.arange(0.0, 4.0, 0.05)  # 20 Hz; the label is in the sign of the drift
        acc = sign * np.linspace(0, 2, t_acc.size)[:, None] + rng.normal(scale=0.3, size=(t_acc.size, 2))
        if i == 3:
            keep = (t_acc < 1.0) | (t_acc > 2.5)  # a 1.5 s gap in one recording
            t_acc, acc = t_acc[keep], acc[keep]
        _write_csv(rec / "acc.csv", t_acc, acc)
        if i != 5:  # recording 5 has no gyro file: kept, with gyro masked
            t_gyro = np.arange(0.0, 4.0, 0.2)  # 5 Hz noise
            _write_csv(rec / "gyro.csv", t_gyro, rng.normal(size=(t_gyro.size, 1)))
    (src / "labels.csv").write_text(
        "recording,label\n" + "".join(f"{n},{lab}\n" for n, lab in zip(names, labels, strict=True)), encoding="utf-8"
    )
    dataset = tmp_path / "dataset"
    aligned = _invoke("align", src, "--out", dataset, "--rate", "10")
    assert aligned.exit_code == 0, aligned.output
    ds = open_dataset(dataset)
    assert len(ds) == 24 and set(ds.split_names) == {"train", "val", "test"}
    rec5 = ds[ds.ids.index("rec05")]
    assert not rec5.masks["gyro"].any() and rec5.masks["acc"].all()
    rec3 = ds[ds.ids.index("rec03")]
    assert 0 < rec3.masks["acc"].sum() < len(rec3)  # the gap is missing, not filled

    out = tmp_path / "run"
    compared = _invoke("compare", "--dataset", dataset, "-f", "concat", "-s", "1", "-e", "15", "--out", out)
    assert compared.exit_code == 0, compared.output
    rows = list(csv.DictReader((out / "results.csv").open(encoding="utf-8")))
    assert len(rows) == 1 and float(rows[0]["accuracy"]) >= 0.75  # the drift's sign is easy to learn
    assert (out / "report.html").stat().st_size > 10_000


def test_align_average_option(tmp_path: Path) -> None:
    src = _recordings(tmp_path)
    result = _invoke("align", src, "--out", tmp_path / "dst", "--rate", "2", "--average", "acc")
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "dst" / "meta.json").read_text(encoding="utf-8"))
    assert meta["extra_meta"]["align"]["average"] == ["acc"]
    bad = _invoke("align", src, "--out", tmp_path / "bad", "--rate", "2", "--average", "sound")
    assert _assert_clean_failure(bad).startswith("error: The 'average' parameter of align_folder names unknown")
    bad = _invoke("align", src, "--out", tmp_path / "bad", "--reference", "acc", "--average", "all")
    assert "only on a grid" in _assert_clean_failure(bad)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ((), {"lr": 0.003, "batch_size": 8, "hidden": 32}),  # the basic-motions preset
        (("--lr", "0.0123", "--batch-size", "5", "--hidden", "8"), {"lr": 0.0123, "batch_size": 5, "hidden": 8}),
        (("--lr", "0.0123"), {"lr": 0.0123, "batch_size": 8, "hidden": 32}),  # one given: the others stay the preset's
    ],
)
def test_train_overrides_only_the_options_given(tmp_path: Path, given: tuple[str, ...], expected: dict) -> None:
    out = tmp_path / "model"
    result = _invoke("train", "--out", out, "--epochs", "1", "--device", "cpu", *given)
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    got = {"lr": config["train_config"]["lr"], "batch_size": config["train_config"]["batch_size"]}
    assert got | {"hidden": config["model_config"]["hidden"]} == expected
