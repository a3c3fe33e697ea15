"""``analyze --executor``: every (analysis, model) pair as a task; the files equal a serial run's; failures named."""

from __future__ import annotations

import shutil
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import mmfuse.plugins as plugins
from experiment_support import analysis_outputs, read_csv
from mmfuse.cli._app import app
from mmfuse.data import ModalitySpec, SequenceRecord, TaskSpec, write_dataset
from mmfuse.evaluate.analysis import AnalysisConfig, analyze_run, base
from mmfuse.evaluate.compare import CompareConfig, compare
from mmfuse.evaluate.executors import LocalProcessExecutor, RayExecutor, RunFailed

pytest.importorskip("ray", reason="the 'ray' extra is not installed (pip install 'mmfuse[ray]')")

SETTINGS = AnalysisConfig(
    mc_passes=2,
    tta_passes=1,
    embedding_points=30,
    embedding_methods=("pca", "tsne"),
    latency_repeats=2,
    worst_cases=3,
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A compare run of 2 fusions x 2 seeds on 72 short sequences (one modality holds the label)."""
    rng = np.random.default_rng(0)
    records = []
    for k, split in enumerate(["train"] * 40 + ["val"] * 12 + ["test"] * 20):
        label, t = k % 2, int(rng.integers(3, 6))
        sig = rng.normal(size=(t, 2)).astype(np.float32) * 0.3 + (2.0 * label - 1.0)
        noise = rng.normal(size=(t, 3)).astype(np.float32)
        masks = {"sig": np.ones(t, bool), "noise": np.ones(t, bool)}
        records.append(SequenceRecord(f"s{k}", f"g{k}", split, {"sig": sig, "noise": noise}, masks, label))
    root = tmp_path_factory.mktemp("analysis-executors")
    data = write_dataset(
        root / "toy",
        records,
        name="toy",
        modalities=[ModalitySpec("sig", 2), ModalitySpec("noise", 3)],
        task=TaskSpec("classification", "sample", class_names=("neg", "pos")),
    )
    compare(
        CompareConfig(
            dataset=str(data),
            fusions=["concat", "weighted"],
            seeds=2,
            epochs=2,
            out_dir=str(root / "run"),
            device="cpu",
            model_overrides={"hidden": 8, "dropout": 0.1},
            train_overrides={"batch_size": 16, "lr": 1e-2},
        )
    )
    return root / "run"


def _copy(run_dir: Path, dest: Path) -> Path:
    return Path(shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("analysis", "final_results.csv")))


def test_ray_tasks_give_the_files_of_a_serial_run(run_dir: Path, tmp_path: Path, local_ray: None) -> None:
    serial = analyze_run(_copy(run_dir, tmp_path / "serial"), config=SETTINGS)
    on_ray = analyze_run(_copy(run_dir, tmp_path / "ray"), config=SETTINGS, executor=RayExecutor())
    assert len(serial.final_results) == 4 and "ablation.csv" in {f.name for f in on_ray.files}
    expected = analysis_outputs(tmp_path / "serial")
    assert len(expected["tables"]) >= 10 and expected["tables"]["complexity.csv"]
    assert analysis_outputs(tmp_path / "ray") == expected
    assert on_ray.notes == serial.notes
    assert set(on_ray.seconds) == {*serial.seconds, "tasks"}  # the tasks' wall time
    for name, row in zip(("concat", "concat", "weighted", "weighted"), on_ray.final_results, strict=True):
        assert row["fusion"] == name and 0.0 <= row["test_accuracy"] <= 1.0


def test_the_cli_runs_the_analysis_on_ray_and_refuses_an_address_without_it(
    run_dir: Path, tmp_path: Path, local_ray: None
) -> None:
    runner = CliRunner()
    run = _copy(run_dir, tmp_path / "cli")
    done = runner.invoke(
        app, ["analyze", str(run), "--only", "ablation,failures", "--executor", "ray", "--device", "cpu"]
    )
    assert done.exit_code == 0, done.output
    assert {"ablation.csv", "worst_cases.csv"} <= {p.name for p in (run / "analysis").iterdir()}
    refused = runner.invoke(app, ["analyze", str(run), "--ray-address", "auto", "--device", "cpu"])
    assert refused.exit_code == 2 and "'ray_address' parameter needs executor 'ray'" in refused.output
    unknown = runner.invoke(app, ["analyze", str(run), "--executor", "dask", "--device", "cpu"])
    assert unknown.exit_code == 2 and "must be one of ['local', 'ray']. Got 'dask'" in unknown.output


def test_the_experiment_file_of_analyze_has_the_executor_keys(run_dir: Path, tmp_path: Path) -> None:
    from mmfuse.cli._app import EXPERIMENT_SCHEMAS

    assert {"executor", "ray_address", "jobs"} <= set(EXPERIMENT_SCHEMAS["analyze"].model_fields)
    exp = tmp_path / "a.yaml"
    exp.write_text(f"run_dir: {run_dir}\nexecutor: local\nray_address: auto\ndevice: cpu\n", encoding="utf-8")
    refused = CliRunner().invoke(app, ["analyze", "--config", str(exp)])  # read from the file, then checked
    assert refused.exit_code == 2 and "'ray_address' parameter needs executor 'ray'" in refused.output


PLUGIN = '''
from mmfuse.evaluate.analysis import Analysis, Summary, register_analysis


@register_analysis("{name}")
class Picky(Analysis):
    """Counts the labelled rows of a model; refuses the 'weighted' fusion."""

    def run(self, ctx, model):
        if model.name == "weighted":
            raise ValueError("weighted models are not analysed here")
        ctx.note(f"counted {{model.name}} seed {{model.seed}}")
        return len(ctx.test(model).targets)

    def summarize(self, ctx, results):
        rows = [{{"fusion": m.name, "seed": m.seed, "rows": n}} for m, n in results]
        return Summary(None, tables={{"rows.csv": rows}})
'''


@pytest.fixture
def picky(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A plug-in analysis in a .py file (not importable by name), loaded as --plugin loads it; dropped afterwards."""
    stem = f"picky_plugin_{tmp_path.name.replace('-', '_')}"
    file = tmp_path / f"{stem}.py"
    file.write_text(textwrap.dedent(PLUGIN.format(name="picky")), encoding="utf-8")
    monkeypatch.setattr(base._REGISTRY, "_entries", dict(base._REGISTRY._entries))
    monkeypatch.setattr(plugins, "_loaded", set(plugins._loaded))
    plugins.load_plugins([str(file)])
    yield "picky"
    sys.modules.pop(stem, None)


@pytest.mark.parametrize("executor", ["ray", "local"])
def test_a_failed_task_names_its_analysis_and_model(
    executor: str, run_dir: Path, tmp_path: Path, picky: str, request: pytest.FixtureRequest
) -> None:
    """A plug-in analysis reaches the workers (imported there from its file); its failure stops the analysis."""
    if executor == "ray":
        request.getfixturevalue("local_ray")
        runner: Any = RayExecutor(max_retries=1)
        message = r"The picky analysis of weighted seed [01] failed after 1 retry: ValueError: weighted models are not"
    else:
        runner = LocalProcessExecutor(workers=1)
        message = r"The picky analysis of weighted seed [01] failed: ValueError: weighted models are not"
    run = _copy(run_dir, tmp_path / "run")
    only_concat = AnalysisConfig(analyses=(picky,), runs=("concat",), write_report=False)
    done = analyze_run(run, config=only_concat, executor=runner)
    assert read_csv(run / "analysis" / "rows.csv") == [
        {"fusion": "concat", "seed": "0", "rows": "20"},
        {"fusion": "concat", "seed": "1", "rows": "20"},
    ]
    assert done.notes == ["counted concat seed 0", "counted concat seed 1"]  # made in the workers, in serial order
    with pytest.raises(RunFailed, match=message):
        analyze_run(run, config=AnalysisConfig(analyses=(picky,), write_report=False), executor=runner)
