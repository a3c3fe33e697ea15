"""``mmfuse compare --resume`` over a finished run directory whose files were tampered with.

One tiny run (concat, one seed, one epoch) is trained once per module; every case copies it, breaks one file
and resumes: the broken file is named, or (accepted cases) the run is reused as it was.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bad_input_table import ACCEPTED, Case, assert_names, clean_failure, invoke, params

from mmfuse.data import ModalitySpec, SequenceRecord, TaskSpec, write_dataset

SURFACE = "mmfuse compare --resume (a finished run directory)"

_ARGS = ("-f", "concat", "--seeds", "1", "--epochs", "1", "--hidden", "8")
_MODEL = Path("models") / "concat-seed0"


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("finished")
    rng = np.random.default_rng(0)
    records = [
        SequenceRecord(
            f"s{i}",
            f"g{i}",
            ("train", "val", "test")[i % 3],
            {"acc": rng.normal(size=(4, 2)).astype(np.float32)},
            {},
            i % 2,
        )
        for i in range(15)
    ]
    task = TaskSpec("classification", "sample", ("walk", "run"))
    ds = write_dataset(root / "ds", records, name="ds", modalities=[ModalitySpec("acc", 2)], task=task)
    result = invoke("compare", "--dataset", ds, *_ARGS, "--out", root / "run")
    assert result.exit_code == 0, result.output
    return ds, root / "run"


def _nest(rel: Path | str) -> Callable[[Path], None]:
    return lambda run: (run / rel).write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")


def _json_edit(rel: Path | str, fn: Callable[[Any], Any]) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        data = json.loads((run / rel).read_text(encoding="utf-8"))
        fn(data)
        (run / rel).write_text(json.dumps(data), encoding="utf-8")

    return edit


def _config_hidden(data: dict[str, Any]) -> None:
    data["model_config"]["hidden"] = 100_000


# (id, what, edit of the run directory, extra CLI args, expected, names)
_ROWS: list[tuple[str, str, Callable[[Path], None], tuple[str, ...], str, tuple[str, ...]]] = [
    (
        "run-json-nested",
        "run.json nested 100000 levels deep",
        _nest("run.json"),
        (),
        "exit 2",
        ("run.json", "nested too deeply"),
    ),
    (
        "result-json-nested",
        "a result.json nested 100000 levels deep",
        _nest(_MODEL / "result.json"),
        (),
        "exit 2",
        ("result.json", "not valid JSON"),
    ),
    (
        "config-json-nested",
        "a model's config.json nested 100000 levels deep",
        _nest(_MODEL / "config.json"),
        (),
        "exit 2",
        ("nested too deeply",),
    ),
    (
        "test-metrics-nested",
        "a test_metrics.json nested 100000 levels deep",
        _nest(_MODEL / "test_metrics.json"),
        (),
        "exit 2",
        ("test_metrics.json", "recursion"),
    ),
    (
        "config-json-hidden-100000",
        "a model's config.json edited to hidden 100000",
        _json_edit(_MODEL / "config.json", _config_hidden),
        (),
        "exit 2",
        ("config.json",),
    ),
    (
        "result-params-edited",
        "a result.json with another parameter count",
        _json_edit(_MODEL / "result.json", lambda d: d.update(params=12)),
        (),
        "exit 2",
        ("result.json", "12 trainable parameters", "edited"),
    ),
    (
        "result-seed-edited",
        "a result.json naming another seed",
        _json_edit(_MODEL / "result.json", lambda d: d.update(seed=4)),
        (),
        "exit 2",
        ("result.json",),
    ),
    (
        "result-metric-dropped",
        "a result.json without its accuracy",
        _json_edit(_MODEL / "result.json", lambda d: d.pop("accuracy")),
        (),
        "exit 2",
        ("result.json", "accuracy"),
    ),
    (
        "result-metric-text",
        "a result.json whose accuracy is a string",
        _json_edit(_MODEL / "result.json", lambda d: d.update(accuracy="high")),
        (),
        "exit 2",
        ("result.json", "accuracy"),
    ),
    (
        "test-metrics-edited",
        "test_metrics.json disagreeing with result.json",
        _json_edit(_MODEL / "test_metrics.json", lambda d: d.update(accuracy=0.123)),
        (),
        "exit 2",
        ("result.json", "test_metrics.json"),
    ),
    (
        "run-json-other-dataset",
        "run.json of another data set",
        _json_edit("run.json", lambda d: d["dataset"].update(name="other")),
        (),
        "exit 2",
        ("settings differ", "dataset: was 'other', now 'ds'"),
    ),
    (
        "run-json-a-list",
        "run.json holding a JSON list instead of an object",
        lambda run: (run / "run.json").write_text("[1, 2]", encoding="utf-8"),
        (),
        "exit 2",
        ("run.json", "JSON object", "list"),
    ),
    (
        "run-json-without-model-config",
        "run.json without its model_config",
        _json_edit("run.json", lambda d: d.pop("model_config")),
        (),
        "exit 2",
        ("Cannot resume", "run.json", "incomplete", "model_config"),
    ),
    (
        "resume-other-hidden",
        "--resume with another --hidden",
        lambda run: None,
        ("--hidden", "16"),
        "exit 2",
        ("model_config",),
    ),
    (
        "accepted-partial-file",
        "a temporary file of a killed atomic write in the model directory",
        lambda run: (run / _MODEL / ".history.json.ab12cd34.tmp").write_text("[{"),
        (),
        ACCEPTED,
        (),
    ),
]

CASES = [Case(SURFACE, cid, what, error, names, (edit, extra)) for cid, what, edit, extra, error, names in _ROWS]


@pytest.mark.parametrize("case", params(CASES))
def test_compare_resume(tmp_path: Path, case: Case, finished: tuple[Path, Path]) -> None:
    ds, source = finished
    run = tmp_path / "run"
    shutil.copytree(source, run)
    edit, extra = case.data
    edit(run)
    args = list(_ARGS)
    if extra:
        i = args.index(extra[0])
        args[i + 1] = extra[1]
    result = invoke("compare", "--dataset", ds, *args, "--out", run, "--resume")
    if case.error == ACCEPTED:
        assert result.exit_code == 0, result.output
        assert not list(run.rglob("*.tmp")), "a temporary file ended in the finished run"
        before = json.loads((source / _MODEL / "result.json").read_text())
        assert json.loads((run / _MODEL / "result.json").read_text()) == before
        return
    assert_names(clean_failure(result), *case.names)
