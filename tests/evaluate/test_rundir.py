"""mmfuse.evaluate.rundir.RunDir: the layout, validated reads, and one run per directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmfuse.errors import DataError
from mmfuse.evaluate.rundir import RunDir


def test_layout(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "r")
    assert run.run_json == tmp_path / "r" / "run.json"
    assert run.model_dir("unimodal-a", 2) == tmp_path / "r" / "models" / "unimodal-a-seed2"
    assert run.result_json("concat", 0).name == "result.json"
    assert {run.config_yaml.name, run.summary_md.name, run.report_html.name, run.analysis_dir.name} == {
        "config.yaml", "summary.md", "report.html", "analysis",
    }  # fmt: skip


def test_every_place_of_the_layout_is_a_documented_path_under_the_run(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "r")
    places = {
        "run_json": "run.json", "config_yaml": "config.yaml", "results_csv": "results.csv",
        "summary_csv": "summary.csv", "summary_md": "summary.md", "report_html": "report.html",
        "models_dir": "models", "analysis_dir": "analysis", "final_results_csv": "final_results.csv",
        "normalizers_dir": "normalizers", "predictions_dir": "predictions",
    }  # fmt: skip
    for attr, name in places.items():
        assert getattr(run, attr) == tmp_path / "r" / name
        doc = getattr(RunDir, attr).__doc__
        assert doc.startswith(f"``{name}``:") or doc.startswith(f"``{name}/``:"), (attr, doc)
    assert RunDir.models_dir.__doc__.startswith("``models/``:")


def test_runs_follow_run_json_order(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    for name in ("gated-seed1", "unimodal-a-b-seed0", "gated-seed0", "concat-seed0", "not-a-run"):
        (run.models_dir / name).mkdir(parents=True)
    run.write_meta({"fusions": ["gated", "concat", "unimodal-a-b"]})
    assert run.runs() == [("gated", 0), ("gated", 1), ("concat", 0), ("unimodal-a-b", 0)]


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "does not exist"), ("{", "not valid JSON"), ("[1]", "must hold a JSON object"), ("[" * 100000, "JSON")],
)
def test_read_meta_names_the_file(tmp_path: Path, content: str | None, message: str) -> None:
    run = RunDir(tmp_path)
    if content is not None:
        run.run_json.write_text(content)
    with pytest.raises(DataError, match=message):
        run.read_meta()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("a,b\n1,2\n", "must have the columns 'fusion' and 'seed'"),
        ("fusion,seed\n", "has a header but no rows"),
        ("fusion,seed,accuracy\nconcat,x,0.5\n", "must hold integers"),
        ("fusion,seed,accuracy\nconcat,1.5,0.5\n", "must hold integers"),
    ],
)
def test_read_results_validates(tmp_path: Path, content: str, message: str) -> None:
    run = RunDir(tmp_path)
    run.results_csv.write_text(content)
    with pytest.raises(DataError, match=message):
        run.read_results()


def test_read_results_keeps_fusion_names_verbatim(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.write_results([{"fusion": "NA", "seed": 0, "accuracy": 0.5}, {"fusion": "1", "seed": 1, "accuracy": 0.7}])
    frame = run.read_results()
    assert frame["fusion"].tolist() == ["NA", "1"] and frame["seed"].tolist() == [0, 1]


def test_read_result_refuses_a_moved_file(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.model_dir("concat", 0).mkdir(parents=True)
    run.write_result("concat", 0, {"fusion": "gated", "seed": 0, "accuracy": None})
    with pytest.raises(DataError, match="belongs to fusion 'gated'"):
        run.read_result("concat", 0)
    run.write_result("concat", 0, {"fusion": "concat", "seed": 0, "accuracy": None})
    assert run.read_result("concat", 0)["accuracy"] != run.read_result("concat", 0)["accuracy"]  # NaN


def test_prepare_refuses_an_existing_run_unless_told(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "r")
    run.prepare()  # missing: created
    run.write_meta({"fusions": ["concat"]})
    with pytest.raises(FileExistsError, match=r"already holds a run.*--resume.*--overwrite"):
        RunDir(run.path).prepare()
    RunDir(run.path).prepare(resume=True)  # kept as it is
    assert run.is_run()
    with pytest.raises(ValueError, match="Choose one"):
        RunDir(run.path).prepare(resume=True, overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        RunDir(tmp_path / "file").prepare()


def test_overwrite_keeps_the_old_run_until_commit_and_restores_it_on_rollback(tmp_path: Path) -> None:
    path = tmp_path / "r"
    RunDir(path).prepare().write_meta({"fusions": ["old"]})
    failed = RunDir(path).prepare(overwrite=True)
    assert not failed.is_run()  # the new run starts empty
    failed.write_meta({"fusions": ["new"]})
    failed.rollback()
    assert json.loads((path / "run.json").read_text())["fusions"] == ["old"]
    done = RunDir(path).prepare(overwrite=True)
    done.write_meta({"fusions": ["new"]})
    done.commit()
    assert json.loads((path / "run.json").read_text())["fusions"] == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["r"]  # nothing left beside it
