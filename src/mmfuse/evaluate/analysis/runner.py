"""``analyze_run``: every selected analysis over every saved model of a ``mmfuse compare`` run directory.

The runner only orders the work: it opens the shared :class:`~mmfuse.evaluate.analysis.context.AnalysisContext`,
runs each analysis on each model and summarises it, then writes what the summaries hold: CSV tables and PNG
figures in ``RUN_DIR/analysis/``, ``sections.json`` and ``summary.md`` for the report, ``final_results.csv`` (one
row per run with every metric), and rewrites the run's ``summary.md`` and ``report.html``.

With an executor (:mod:`mmfuse.evaluate.executors`: local worker processes or Ray tasks) every (analysis, model)
pair is one task: a worker process opens the run's context once (its models and collated splits) and keeps it for
the tasks of this call that land on it. The results, and the notes the tasks made, are then summarised in the
serial order, so the files are the same as a serial run's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from mmfuse._io import atomic_write_csv, atomic_write_json, atomic_write_text
from mmfuse.errors import DataError
from mmfuse.evaluate.analysis.base import Analysis, Summary, get_analysis, is_analysis, list_analyses
from mmfuse.evaluate.analysis.config import AnalysisConfig
from mmfuse.evaluate.analysis.context import AnalysisContext, LoadedModel
from mmfuse.evaluate.executors import RunExecutor
from mmfuse.evaluate.figures import md_escape, save_png
from mmfuse.evaluate.protocol import torch_threads
from mmfuse.evaluate.rundir import RunDir
from mmfuse.plugins import load_plugins

__all__ = ["ANALYSES", "AnalysisConfig", "AnalysisResult", "analyze_run"]

logger = logging.getLogger(__name__)

ANALYSES = tuple(list_analyses())
"""The built-in analyses, in report order (``list_analyses()`` also lists those registered later)."""


@dataclass
class AnalysisResult:
    """What :func:`analyze_run` returns.

    Attributes:
        run_dir: The compare run directory.
        out_dir: ``run_dir/analysis``.
        final_results: One dict per run (fusion x seed) with every metric (the rows of ``final_results.csv``).
        files: Every file written.
        seconds: Wall time per analysis (and ``"loading"`` and ``"total"``).
        notes: What was skipped, and why.
    """

    run_dir: Path
    out_dir: Path
    final_results: list[dict[str, Any]]
    files: list[Path] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def analyze_run(
    run_dir: str | Path, *, config: AnalysisConfig | None = None, executor: RunExecutor | None = None
) -> AnalysisResult:
    """Run every analysis of ``config`` over the saved models of a ``mmfuse compare`` run directory.

    Writes ``run_dir/analysis/`` (tables as CSV, figures as PNG, ``sections.json``, ``summary.md``,
    ``result.json``), ``run_dir/final_results.csv`` and, with ``config.write_report``, rewrites
    ``run_dir/summary.md`` and ``run_dir/report.html`` with the analysis added. Models get only the
    modalities their config lists, so unimodal baselines and decision-level fusions are handled like any other.

    Args:
        run_dir: The directory ``mmfuse compare`` wrote.
        config: What to compute; defaults to :class:`AnalysisConfig` () (every registered analysis).
        executor: Where the per-model work runs: None (default) in this process, one model after another; an
            executor of :func:`~mmfuse.evaluate.executors.make_executor` (``"local"`` worker processes,
            ``"ray"`` tasks) runs every (analysis, model) pair as a task, with the same results. The run
            directory and the data set must be readable by every worker. An analysis's time in ``seconds`` is
            then the sum of its tasks' run times plus its summary, and ``seconds["tasks"]`` the tasks' wall time.

    Returns:
        The per-run metrics, the files written, the time per analysis and notes on anything skipped.

    Raises:
        DataError: the run directory lacks ``run.json`` / ``results.csv`` or a saved model, or the data set
            cannot be opened.
        ValueError: a bad configuration (unknown analysis, run name or method), or an analysis that returned a
            malformed summary.
        RunFailed: with an executor, a task that failed (the message names the analysis, the model and the error).

    Example:
        >>> from mmfuse.evaluate.analysis import AnalysisConfig, analyze_run
        >>> result = analyze_run("runs/mosi-utterance", config=AnalysisConfig())  # doctest: +SKIP
        >>> result.seconds["total"] < 300  # doctest: +SKIP
        True
    """
    config = config or AnalysisConfig()
    with torch_threads(config.num_threads):
        return _analyze(Path(run_dir), config, executor)


def _analyze(run_dir: Path, config: AnalysisConfig, executor: RunExecutor | None) -> AnalysisResult:
    start = time.perf_counter()
    if not run_dir.is_dir():
        raise DataError(f"The compare run directory '{run_dir}' does not exist or is not a directory.")
    seconds = dict.fromkeys(("loading", *config.analyses), 0.0)
    with _timed(seconds, "loading"):
        logger.info("loading the models and data of %s", run_dir)
        ctx = AnalysisContext.open(run_dir, config)
        chosen = [_instantiate(ctx, config, name) for name in config.analyses]
        analyses = [a for a in chosen if a is not None]
        for model in ctx.models:  # collate every split once, up front
            ctx.test(model)
            if any("calibration_split" in a.needs for a in analyses):
                ctx.split(model, config.calibration_split)
    out = _Output(ctx)
    results_of = _run_here(ctx, analyses) if executor is None else _run_tasks(ctx, config, analyses, executor, seconds)
    for i, analysis in enumerate(analyses, 1):
        with _timed(seconds, analysis.name):
            logger.info("analysis %d/%d %s: %d models", i, len(analyses), analysis.name, len(ctx.models))
            results = results_of(i, analysis)
            logger.debug("analysis %d/%d %s: summarising", i, len(analyses), analysis.name)
            out.add(analysis, analysis.summarize(ctx, results))
    final_rows = out.finish(config, seconds, start)
    logger.info("analysis of %s done in %.1f s", run_dir, seconds["total"])
    return AnalysisResult(run_dir, ctx.run.analysis_dir, final_rows, out.files, seconds, out.notes)


def _instantiate(ctx: AnalysisContext, config: AnalysisConfig, name: str) -> Analysis[Any, Any] | None:
    """The analysis ``name`` with its config, or None (with a note) when the run lacks what it needs."""
    cls = get_analysis(name)
    if "calibration_split" in cls.needs and not ctx.has_split(config.calibration_split):
        ctx.note(f"No {config.calibration_split!r} split: {name} skipped (it is never fitted on test).")
        return None
    return cls(config.config_for(cls))


ResultsOf = Callable[[int, Analysis[Any, Any]], list[tuple[LoadedModel, Any]]]


def _run_here(ctx: AnalysisContext, analyses: Sequence[Analysis[Any, Any]]) -> ResultsOf:
    """Serial: each analysis runs on every model, in this process, when the runner asks for its results."""
    for analysis in analyses:
        analysis.prepare(ctx)

    def results_of(i: int, analysis: Analysis[Any, Any]) -> list[tuple[LoadedModel, Any]]:
        results = []
        for j, model in enumerate(ctx.models, 1):
            logger.debug(
                "analysis %d/%d %s: model %d/%d (%s seed %d)",
                *(i, len(analyses), analysis.name, j, len(ctx.models), model.name, model.seed),
            )
            results.append((model, analysis.run(ctx, model)))
        return results

    return results_of


def _run_tasks(
    ctx: AnalysisContext,
    config: AnalysisConfig,
    analyses: Sequence[Analysis[Any, Any]],
    executor: RunExecutor,
    seconds: dict[str, float],
) -> ResultsOf:
    """Every (analysis, model) pair as a task of ``executor``, all submitted now; results handed out in order.

    Workers open the data set by its folder (resolved here), so their working directory does not matter.
    ``seconds["tasks"]`` is the wall time of the tasks; each analysis gets the sum of its tasks' run times.
    """
    specs: list[dict[str, Any]] = [
        {"analysis": a.name, "model": j, "fusion": m.name, "seed": m.seed}
        for a in analyses
        for j, m in enumerate(ctx.models)
    ]
    task_config = dataclasses.replace(config, dataset=str(Path(ctx.dataset.path).resolve()), data_dir=None)
    plugins = {a.name: _plugin_of(type(a)) for a in analyses}
    fn = partial(_analysis_task, str(ctx.run.path.resolve()), task_config, uuid.uuid4().hex, plugins)
    done: dict[tuple[str, int], dict[str, Any]] = {}
    logger.info(
        "%d tasks (%d analyses x %d models) on the %s executor",
        len(specs),
        len(analyses),
        len(ctx.models),
        executor.name,
    )

    def on_done(index: int, row: dict[str, Any]) -> None:
        spec = specs[index]
        done[spec["analysis"], spec["model"]] = row
        logger.debug("task %d/%d done: %s of %s seed %d", len(done), len(specs), *(spec[k] for k in _WHO))

    with _timed(seconds, "tasks"):
        executor.run(specs, fn, on_done, describe=_describe_task)

    def results_of(i: int, analysis: Analysis[Any, Any]) -> list[tuple[LoadedModel, Any]]:
        rows = [done[analysis.name, j] for j in range(len(ctx.models))]
        for row in rows:  # the notes the serial run would have made, in its order
            ctx.notes.extend(row["notes"])
        seconds[analysis.name] = seconds.get(analysis.name, 0.0) + sum(row["seconds"] for row in rows)
        return [(model, row["result"]) for model, row in zip(ctx.models, rows, strict=True)]

    return results_of


_WHO = ("analysis", "fusion", "seed")


def _describe_task(spec: Mapping[str, Any]) -> str:
    """An analysis task in errors: ``"robustness analysis of concat seed 0"``."""
    return "{} analysis of {} seed {}".format(*(spec.get(k, "?") for k in _WHO))


def _plugin_of(cls: type[Analysis[Any, Any]]) -> list[str]:
    """What a worker imports to register ``cls``: nothing for mmfuse's own; else its module's name, then its file."""
    if cls.__module__.split(".")[0] == "mmfuse":
        return []
    file = getattr(sys.modules.get(cls.__module__), "__file__", None)
    return [cls.__module__, *([str(Path(file).resolve())] if file else [])]


_WORKER: dict[str, Any] = {}
"""A worker process's state for the tasks of one ``analyze_run`` call: its token, context and analyses (a Ray
worker outlives the call: it holds them until a task of another call replaces them)."""


def _analysis_task(
    run_dir: str, config: AnalysisConfig, token: str, plugins: dict[str, list[str]], spec: dict[str, Any]
) -> dict[str, Any]:
    """One analysis of one model, in a worker: its result, the notes it made and its run time in seconds.

    The first task of a call (``token``) in this process opens the context and makes and prepares every analysis
    of the call (``plugins``: name -> the plug-in modules that register it), so background warm-ups overlap the
    first tasks as in a serial run; the next tasks reuse them.
    """
    with torch_threads(config.num_threads):
        if _WORKER.get("token") != token:
            _WORKER.clear()  # another call's context (another run, or the same one since changed) is let go
            ctx = AnalysisContext.open(run_dir, config)
            analyses = {name: _worker_analysis(name, modules, config) for name, modules in plugins.items()}
            for analysis in analyses.values():
                analysis.prepare(ctx)
            _WORKER.update(token=token, ctx=ctx, analyses=analyses)
        ctx, analysis = _WORKER["ctx"], _WORKER["analyses"][spec["analysis"]]
        model = ctx.models[spec["model"]]
        if (model.name, model.seed) != (spec["fusion"], spec["seed"]):
            raise DataError(
                f"The run directory '{run_dir}' changed during the analysis: model {spec['model']} is now "
                f"{model.name} seed {model.seed}, expected {spec['fusion']} seed {spec['seed']}."
            )
        before, start = len(ctx.notes), time.perf_counter()
        result = analysis.run(ctx, model)
        return {"result": result, "notes": ctx.notes[before:], "seconds": time.perf_counter() - start}


def _worker_analysis(name: str, modules: list[str], config: AnalysisConfig) -> Analysis[Any, Any]:
    """The analysis ``name`` with its config; a plug-in's is registered first by importing its module or file."""
    errors = []
    for module in modules if not is_analysis(name) else ():
        try:
            load_plugins([module])
            break
        except ValueError as exc:
            errors.append(str(exc))
    if not is_analysis(name):
        raise ValueError(
            f"The analysis {name!r} is not registered in this worker process; importing its plug-in module "
            f"failed: {' '.join(errors) or 'no module to import'}."
        )
    cls = get_analysis(name)
    return cls(config.config_for(cls))


@contextmanager
def _timed(seconds: dict[str, float], key: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - t0


class _Output:
    """Writes each summary's files as it comes, and collects the report sections and final-results columns."""

    def __init__(self, ctx: AnalysisContext) -> None:
        self.ctx = ctx
        self.dir = ctx.run.analysis_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.files: list[Path] = []
        self.sections: list[dict[str, Any]] = []
        self.markdown = ["## Analysis", ""]
        key = f"test_{ctx.main_metric}"
        self.final = {(m.name, m.seed): {key: ctx.score(ctx.clean(m), ctx.test(m).targets)} for m in ctx.models}

    @property
    def notes(self) -> list[str]:
        return list(dict.fromkeys(self.ctx.notes))

    def add(self, analysis: Analysis[Any, Any], summary: Summary) -> None:
        for name, rows in summary.tables.items():
            self.files.append(atomic_write_csv(self._path(analysis, name, ".csv"), rows, nan=""))
        for name, fig in summary.figures.items():
            self.files.append(save_png(fig, self._path(analysis, name, ".png")))
        for key, columns in summary.final.items():
            if key not in self.final:
                raise ValueError(
                    f"The {analysis.name} analysis returned final-results columns for {key}, which is not a run "
                    f"of this directory ({sorted(self.final)})."
                )
            self.final[key].update(columns)
        if summary.section is not None:
            self.sections.append(summary.section.as_json(f"analysis-{analysis.name}"))
            self.markdown += summary.section.markdown()

    def _path(self, analysis: Analysis[Any, Any], name: str, suffix: str) -> Path:
        if Path(name).name != name or not name.endswith(suffix) or name.startswith("."):
            raise ValueError(
                f"The {analysis.name} analysis named an output {name!r}: expected a plain file name ending in "
                f"{suffix!r} (it is written into '{self.dir}')."
            )
        return self.dir / name

    def _result_rows(self) -> list[dict[str, Any]]:
        """``results.csv`` of a compare run; for one model directory, its run and the scalars of ``test_metrics.json``.

        The file also holds tables (confusion matrix, per-class scores, notes), which are no result columns.
        """
        if not self.ctx.single_model:
            return list(self.ctx.run.read_results().to_dict("records"))
        model = self.ctx.models[0]
        metrics_path = model.directory / RunDir.TEST_METRICS_JSON
        metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else {}
        scalars = (
            {k: v for k, v in metrics.items() if not isinstance(v, list | dict)} if isinstance(metrics, dict) else {}
        )
        return [{"fusion": model.name, "seed": model.seed} | scalars]

    def finish(self, config: AnalysisConfig, seconds: dict[str, float], start: float) -> list[dict[str, Any]]:
        """Write final_results.csv, sections.json, summary.md, result.json and the report; fill ``seconds``."""
        run, notes = self.ctx.run, self.notes
        final_rows = []
        for row in self._result_rows():
            key = (str(row["fusion"]), int(row["seed"]))
            if key in self.final:
                final_rows.append(
                    {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} | self.final[key]
                )
        self.files.append(atomic_write_csv(run.final_results_csv, final_rows, nan=""))
        for part, value in list(seconds.items()):
            seconds[part] = round(value, 2)
        seconds["total"] = round(time.perf_counter() - start, 2)
        if notes:
            self.markdown += ["Notes:", ""] + [f"- {md_escape(n)}" for n in notes] + [""]
        sections = {"format": "mmfuse-analysis-sections", "version": 1, "sections": self.sections, "notes": notes}
        self.files.append(atomic_write_json(self.dir / "sections.json", sections))
        self.files.append(atomic_write_text(self.dir / "summary.md", "\n".join(self.markdown) + "\n", newline="\n"))
        runs = [f"{m.name}-seed{m.seed}" for m in self.ctx.models]
        result = {"config": asdict(config), "seconds": seconds, "notes": notes, "runs": runs}
        self.files.append(atomic_write_json(self.dir / "result.json", result))
        if config.write_report and not self.ctx.single_model:  # a model directory has no comparison report
            from mmfuse.evaluate.report import write_report, write_summary_markdown

            self.files += [write_summary_markdown(run.path), write_report(run.path)]
        return final_rows
