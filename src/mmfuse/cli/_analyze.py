"""``mmfuse analyze RUN_DIR``: a thin wrapper over :func:`mmfuse.evaluate.analysis.analyze_run`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mmfuse.cli import _options as opt
from mmfuse.cli._common import analysis_progress, console, path_text, split_names

__all__ = ["analyze"]


def analyze(
    run_dir: Annotated[
        Path | None,
        typer.Argument(
            help="A run directory written by 'mmfuse compare', or one model directory written by 'mmfuse train' "
            "(or 'run_dir' in --config)."
        ),
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            help="Run only these registered analyses (repeat or comma-separate): ablation, robustness, "
            "calibration, uncertainty, separability, failures, inspection, complexity, and any that a --plugin "
            "module registers. An unknown name is refused with the list of registered ones.",
        ),
    ] = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", "-d", help="Data set name or folder (default: the one in run.json).")
    ] = None,
    data_dir: opt.DataDirOption = None,
    mc_passes: Annotated[int, typer.Option("--mc-passes", min=1, help="MC-dropout passes.")] = 10,
    points: Annotated[int, typer.Option("--points", min=10, help="Rows drawn in the representation maps.")] = 300,
    all_maps: Annotated[
        bool, typer.Option("--all-maps", help="t-SNE and UMAP also for every unimodal encoder (slower).")
    ] = False,
    device: opt.DeviceOption = "auto",
    jobs: Annotated[
        int,
        opt.jobs_option(
            "With --executor local: analysis tasks (one analysis of one model each) run at once, each in its "
            "own worker process; 1 analyses in this process."
        ),
    ] = 1,
    executor: Annotated[
        str,
        opt.executor_option(
            "Where the per-model work runs: 'local' (--jobs processes) or 'ray' (one Ray task per analysis of one "
            "model; needs the 'ray' extra). The files written are the same."
        ),
    ] = "local",
    ray_address: opt.RayAddressOption = None,
) -> None:
    """Analyse a compare run: ablation, robustness, calibration, uncertainty, maps, failures, weights, cost."""
    from mmfuse.evaluate.analysis import EMBEDDING_METHODS, AnalysisConfig, analyze_run, list_analyses
    from mmfuse.evaluate.executors import executor_or_none
    from mmfuse.train import resolve_device

    if run_dir is None:
        raise ValueError("mmfuse analyze needs a run directory: give RUN_DIR, or 'run_dir' in its --config file.")
    chosen = tuple(split_names(only)) or tuple(list_analyses())
    config = AnalysisConfig(
        analyses=chosen,
        dataset=dataset,
        data_dir=path_text(data_dir),
        mc_passes=mc_passes,
        embedding_points=points,
        encoder_embedding_methods=EMBEDDING_METHODS if all_maps else ("pca",),
        device=resolve_device(device).type,
    )
    runner = executor_or_none(executor, workers=jobs, num_threads=config.num_threads, address=ray_address)
    with analysis_progress(str(run_dir)):
        result = analyze_run(run_dir, config=config, executor=runner)
    table = Table(title=f"analysis of {run_dir}: seconds per part")
    table.add_column("analysis")
    table.add_column("seconds", justify="right")
    for name, seconds in result.seconds.items():
        table.add_row(name, f"{seconds:.1f}")
    console.print(table)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False, markup=False, soft_wrap=True)
    written = ", summary.md and report.html" if any(f.name == "report.html" for f in result.files) else ""
    console.print(f"Wrote {result.out_dir}/, {run_dir}/final_results.csv{written}")
