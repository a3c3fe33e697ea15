"""One contract over the analysis registry: every registered analysis runs on a tiny run directory and returns
well-formed rows, figures, final-results columns and prose; an analysis registered by the user runs through
``analyze_run`` and the CLI like a built-in one."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from typer.testing import CliRunner

from experiment_support import read_csv
from mmfuse.cli._app import app
from mmfuse.data import ModalitySpec, SequenceRecord, TaskSpec, write_dataset
from mmfuse.evaluate.analysis import (
    Analysis,
    AnalysisConfig,
    AnalysisContext,
    LoadedModel,
    Section,
    Summary,
    analyze_run,
    base,
    get_analysis,
    list_analyses,
    register_analysis,
)
from mmfuse.evaluate.compare import CompareConfig, compare
from mmfuse.evaluate.figures import colour

pytestmark = pytest.mark.contract

_SMALL = {
    "mc_passes": 2,
    "tta_passes": 1,
    "embedding_points": 12,
    "embedding_methods": ("pca",),
    "latency_repeats": 1,
    "worst_cases": 3,
    "noise_levels": (0.0, 1.0),
    "missing_rates": (0.0, 0.5),
}
_SCALARS = (str, int, float, bool, type(None), np.integer, np.floating, np.bool_)


def _records(task: str) -> list[SequenceRecord]:
    """24 short sequences; the label is readable from modality 'a' (per step for the step-level task)."""
    rng = np.random.default_rng(3)
    records = []
    for i in range(24):
        t = 3 + i % 3
        a = rng.normal(size=(t, 2)).astype(np.float32)
        b = rng.normal(size=(t, 2)).astype(np.float32)
        label: Any = (a[:, 0] > 0).astype(np.int64) if task == "step" else float(a[:, 0].mean())
        split = ("train", "train", "val", "test")[i % 4]
        masks = {"a": np.ones(t, dtype=bool), "b": np.arange(t) > 0}  # 'b' misses its first step
        records.append(SequenceRecord(f"r{i:02d}", f"g{i}", split, {"a": a, "b": b}, masks, label))
    return records


def _tiny_run(root: Path, task: str) -> tuple[Path, Path]:
    """A compare run of two fusions (one seed, one epoch): step-level classification, or sample regression."""
    spec = (
        TaskSpec("classification", "step", class_names=("low", "high"))
        if task == "step"
        else TaskSpec("regression", "sample")
    )
    data = write_dataset(
        root / f"data-{task}",
        _records(task),
        name=f"toy-{task}",
        modalities=[ModalitySpec("a", 2), ModalitySpec("b", 2)],
        task=spec,
    )
    out = root / f"run-{task}"
    compare(
        CompareConfig(
            dataset=str(data),
            fusions=["concat", "weighted"],
            seeds=1,
            epochs=1,
            out_dir=str(out),
            device="cpu",
            model_overrides={"hidden": 8},
            train_overrides={"batch_size": 8},
        )
    )
    return out, data


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("analysis-contract")
    return {task: _tiny_run(root, task) for task in ("step", "regression")}


@pytest.fixture(scope="module")
def contexts(runs: dict[str, tuple[Path, Path]]) -> dict[str, AnalysisContext]:
    out = {}
    for task, (run, data) in runs.items():
        out[task] = AnalysisContext.open(run, AnalysisConfig(dataset=str(data), **_SMALL))
    return out


def _check_summary(analysis: Analysis[Any, Any], ctx: AnalysisContext, summary: Summary) -> None:
    name = analysis.name
    assert isinstance(summary, Summary), f"{name}.summarize must return a Summary"
    runs = {(m.name, m.seed) for m in ctx.models}
    for file, rows in summary.tables.items():
        assert Path(file).name == file and file.endswith(".csv"), f"{name}: table file {file!r}"
        for row in rows:
            assert row.get("fusion") in ctx.names, f"{name}: a row of {file} names no run of the directory"
            for column, value in row.items():
                assert isinstance(column, str) and isinstance(value, _SCALARS), f"{name}: {file}[{column!r}]={value!r}"
    for file, fig in summary.figures.items():
        assert Path(file).name == file and file.endswith(".png"), f"{name}: figure file {file!r}"
        assert isinstance(fig, Figure) and fig.axes, f"{name}: {file} must be a drawn matplotlib Figure"
    for key, columns in summary.final.items():
        assert key in runs, f"{name}: final-results columns for {key}, not a run of the directory"
        assert all(isinstance(c, str) and isinstance(v, _SCALARS) for c, v in columns.items()), name
    sec = summary.section
    assert isinstance(sec, Section) and sec.title == analysis.title, f"{name}: a section titled {analysis.title!r}"
    assert sec.paragraphs and all(isinstance(p, str) and p.strip() for p in sec.paragraphs), f"{name}: no prose"
    assert "nan" not in " ".join(sec.paragraphs).lower().split(), f"{name}: NaN in the prose"
    assert {f.file for f in sec.figures} == set(summary.figures), f"{name}: every figure shown once, none missing"
    for table in sec.tables:
        assert table.rows, f"{name}: empty table {table.caption!r}"
        assert all(len(r) == len(table.header) for r in table.rows), f"{name}: ragged table {table.caption!r}"
    assert all(isinstance(n, str) and n for n in sec.notes)
    md = "\n".join(sec.markdown())
    assert md.startswith(f"### {analysis.title}")
    json.dumps(sec.as_json(f"analysis-{name}"))  # what sections.json stores


@pytest.mark.parametrize("task", ["step", "regression"])
@pytest.mark.parametrize("name", list_analyses())
def test_every_registered_analysis_keeps_the_contract(name: str, task: str, contexts: dict[str, Any]) -> None:
    ctx = contexts[task]
    cls = get_analysis(name)
    assert cls.name == name and cls.title, f"{name}: a registered name and a title"
    assert dataclasses.is_dataclass(cls.config_type) and set(cls.needs) <= {"calibration_split"}
    analysis = cls(AnalysisConfig(**_SMALL).config_for(cls))
    analysis.prepare(ctx)
    notes_before = len(ctx.notes)
    results = [(m, analysis.run(ctx, m)) for m in ctx.models]
    summary = analysis.summarize(ctx, results)
    _check_summary(analysis, ctx, summary)
    assert all(isinstance(n, str) for n in ctx.notes[notes_before:])
    for fig in summary.figures.values():  # drawn with the figure kit's palette
        for ax in fig.axes:
            for line in ax.get_lines():
                assert line.get_color() in {colour(i) for i in range(16)} | {"#9ca3af"}, f"{name}: off-palette line"


def test_robustness_panels_share_one_y_axis(contexts: dict[str, AnalysisContext]) -> None:
    ctx = contexts["regression"]
    cls = get_analysis("robustness")
    analysis = cls(AnalysisConfig(**_SMALL).config_for(cls))
    summary = analysis.summarize(ctx, [(m, analysis.run(ctx, m)) for m in ctx.models])
    limits = {ax.get_ylim() for fig in summary.figures.values() for ax in fig.axes if ax.get_visible()}
    assert len(limits) == 1  # every panel of both figures: noise must not look like signal
    low, high = limits.pop()
    assert low >= 0.0 and math.isfinite(high)  # MAE is bounded below by 0
    plotted = np.concatenate(
        [line.get_ydata() for fig in summary.figures.values() for ax in fig.axes for line in ax.lines]
    )
    assert low <= plotted.min() and plotted.max() <= high  # nothing drawn off the shared axis


# ----------------------------------------------------------------------------------------- a user's analysis
@dataclass
class RowCountConfig:
    column: str = "rows"


class RowCount(Analysis[RowCountConfig, int]):
    """A user's analysis: how many labelled test rows each model was scored on."""

    title = "Row count"
    config_type = RowCountConfig

    def run(self, ctx: AnalysisContext, model: LoadedModel) -> int:
        return len(ctx.clean(model))

    def summarize(self, ctx: AnalysisContext, results: Sequence[tuple[LoadedModel, int]]) -> Summary:
        sec = Section(self.title, [f"Labelled {ctx.settings.split} rows per run."])
        sec.table("Rows per run.", ["fusion", "seed", "rows"], [[m.name, m.seed, n] for m, n in results])
        fig = Figure(figsize=(3, 2))
        fig.add_subplot().bar(range(len(results)), [n for _, n in results], color=colour(0))
        sec.figure("row_count.png", "Rows per run")
        return Summary(
            sec,
            {"row_count.csv": [{"fusion": m.name, "seed": m.seed, self.config.column: n} for m, n in results]},
            {"row_count.png": fig},
            {(m.name, m.seed): {"n_rows": n} for m, n in results},
        )


class BadOutput(RowCount):
    def summarize(self, ctx: AnalysisContext, results: Sequence[tuple[LoadedModel, int]]) -> Summary:
        return Summary(Section("Bad", ["Writes outside analysis/."]), {"../escape.csv": []})


@pytest.fixture
def user_analyses(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(base._REGISTRY, "_entries", dict(base._REGISTRY._entries))  # dropped after the test
    register_analysis("row-count")(RowCount)
    register_analysis("bad-output")(BadOutput)
    yield


@pytest.mark.usefixtures("user_analyses")
def test_a_user_registered_analysis_runs_through_analyze_run_and_the_cli(
    runs: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    source, data = runs["step"]
    run = Path(shutil.copytree(source, tmp_path / "run"))
    assert "row-count" in AnalysisConfig().analyses  # picked up by default, after the built-in ones
    config = AnalysisConfig(
        analyses=("ablation", "row-count"), options={"row-count": RowCountConfig(column="n")}, dataset=str(data)
    )
    result = analyze_run(run, config=config)
    rows = read_csv(run / "analysis" / "row_count.csv")
    assert [r["fusion"] for r in rows] == ["concat", "weighted"] and all(int(r["n"]) > 0 for r in rows)
    assert [str(r["n_rows"]) for r in result.final_results] == [r["n"] for r in rows]
    final = read_csv(run / "final_results.csv")
    assert {"ablation_a", "n_rows"} <= set(final[0])
    sections = json.loads((run / "analysis" / "sections.json").read_text())["sections"]
    assert [s["id"] for s in sections] == ["analysis-ablation", "analysis-row-count"]
    assert 'id="analysis-row-count"' in (run / "report.html").read_text()
    assert "### Row count" in (run / "summary.md").read_text()
    assert result.seconds["row-count"] >= 0

    res = CliRunner().invoke(app, ["analyze", str(run), "--only", "row-count", "--dataset", str(data)])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["analyze", str(run), "--only", "row-cuont", "--dataset", str(data)])
    assert res.exit_code == 2 and "Unknown analysis 'row-cuont'" in res.output and "row-count" in res.output

    with pytest.raises(ValueError, match=r"bad-output analysis named an output '\.\./escape\.csv'"):
        analyze_run(run, config=AnalysisConfig(analyses=("bad-output",), dataset=str(data), write_report=False))
    with pytest.raises(TypeError, match=r"options\['row-count'\] must be a RowCountConfig"):
        AnalysisConfig(options={"row-count": {"column": "n"}}).config_for(RowCount)
    with pytest.raises(ValueError, match=r"Unknown analysis 'nope'.*row-count"):
        AnalysisConfig(options={"nope": RowCountConfig()})


class _ShowsAMissingFigure(RowCount):
    def summarize(self, ctx: AnalysisContext, results: Sequence[tuple[LoadedModel, int]]) -> Summary:
        summary = super().summarize(ctx, results)
        summary.figures.clear()  # the section still shows row_count.png
        return summary


class _RowsOfNoRun(RowCount):
    def summarize(self, ctx: AnalysisContext, results: Sequence[tuple[LoadedModel, int]]) -> Summary:
        summary = super().summarize(ctx, results)
        summary.final[("ghost", 9)] = {"n_rows": 1}
        return summary


@pytest.mark.parametrize("broken", [_ShowsAMissingFigure, _RowsOfNoRun])
def test_the_contract_catches_broken_summaries(broken: type[RowCount], contexts: dict[str, AnalysisContext]) -> None:
    ctx = contexts["regression"]
    analysis = broken(RowCountConfig())
    summary = analysis.summarize(ctx, [(m, analysis.run(ctx, m)) for m in ctx.models])
    with pytest.raises(AssertionError):
        _check_summary(analysis, ctx, summary)


def test_mc_dropout_draws_are_seeded(contexts: dict[str, AnalysisContext]) -> None:
    ctx = contexts["step"]
    cls = get_analysis("uncertainty")
    analysis = cls(AnalysisConfig(**_SMALL).config_for(cls))
    model = ctx.models[0]
    assert any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.model.modules())  # else the test is moot
    first = analysis.run(ctx, model)["mc_dropout"]
    torch.rand(7)  # whatever ran before must not change the draws
    second = analysis.run(ctx, model)["mc_dropout"]
    assert first["mean_entropy"] == second["mean_entropy"] and np.array_equal(first["rc"]["risk"], second["rc"]["risk"])
    assert first["mean_mutual_information"] > 0  # the passes do differ from each other
