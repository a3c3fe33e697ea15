"""``mmfuse compare``: train and test fusions over seeds; results, summary and report."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mmfuse.cli import _options as opt
from mmfuse.cli._common import (
    analysis_progress,
    command_line,
    console,
    err_console,
    experiment_options,
    overrides,
    path_text,
    split_names,
)

__all__ = ["compare"]


def compare(
    dataset: opt.DatasetOption = "basic-motions",
    fusion: Annotated[list[str], opt.fusion_option("Fusion names (repeat or comma-separate), or 'all'.")] = ["all"],  # noqa: B006 - typer reads the default, it is never mutated
    modalities: Annotated[
        list[str] | None,
        typer.Option(
            "--modalities", "-m", help="Use only these modalities of the data set (repeat or comma-separate)."
        ),
    ] = None,
    seeds: Annotated[int, opt.seeds_option("Seeds per fusion (0 .. N-1).")] = 3,
    epochs: opt.EpochsOption = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run directory (default runs/<dataset>).")] = None,
    data_dir: opt.DataDirOption = None,
    device: opt.DeviceOption = "auto",
    max_params: Annotated[
        int,
        typer.Option(
            "--max-params",
            min=1,
            help="Refuse models with more parameters (counted before any memory is allocated).",
        ),
    ] = 100_000_000,
    hidden: opt.HiddenOption = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Reuse finished runs in --out and continue an interrupted one.")
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Replace an existing --out whole (kept until the new run has finished)."),
    ] = False,
    keep_checkpoints: Annotated[
        bool, typer.Option("--keep-checkpoints", help="Keep each run's last/ checkpoint after it finishes.")
    ] = False,
    jobs: Annotated[int, opt.jobs_option("Runs trained at once, each in its own process.")] = 1,
    executor: Annotated[
        str,
        opt.executor_option(
            "Where runs train: 'local' (--jobs processes) or 'ray' (one Ray task per fusion x seed run; "
            "needs the 'ray' extra)."
        ),
    ] = "local",
    ray_address: opt.RayAddressOption = None,
    analyze: Annotated[
        bool,
        typer.Option(
            "--analyze",
            help="Then run the analysis suite on the run (as 'mmfuse analyze'), with the same --jobs, --executor "
            "and --ray-address.",
        ),
    ] = False,
    causal: Annotated[
        bool,
        typer.Option(
            "--causal",
            help="Train streaming-ready models that 'mmfuse serve' runs (causal encoders and fusions; a fusion "
            "that cannot be causal is refused when named, skipped when 'all' brought it in).",
        ),
    ] = False,
    preset: Annotated[
        str | None,
        opt.preset_option(
            "Start from this preset instead of the data set's: a YAML/JSON preset file, or a 'mmfuse tune' "
            "folder or its best.json (--hidden and --epochs still apply over it)."
        ),
    ] = None,
    log: opt.LogOption = None,
    tracking_uri: opt.TrackingUriOption = None,
) -> None:
    """Train and test every chosen fusion for every seed; write results, summary and an HTML report.

    A run directory holds one run: an existing --out is refused unless --resume continues it or --overwrite
    replaces it.

    Fusion names: any registered fusion (see 'mmfuse fusions'), 'unimodal-<modality>' for a unimodal
    baseline, 'unimodal' for all of them, or 'all' for every fusion plus every unimodal baseline.
    """
    from mmfuse.data import dataset_info, is_dataset, list_datasets
    from mmfuse.errors import DataError
    from mmfuse.evaluate.compare import CompareConfig, resolve_fusions
    from mmfuse.evaluate.compare import compare as run_compare

    # Check the names before the progress display starts, so a typo gives one clean line.
    resolve_fusions(list(fusion))
    if not Path(dataset).is_dir():
        if any(sep in dataset for sep in ("/", "\\")) and not is_dataset(dataset):
            what = "is a file, not a data-set folder" if Path(dataset).exists() else "does not exist"
            raise DataError(
                f"The --dataset path {dataset!r} {what}, and it is not a registered data set either "
                f"({', '.join(list_datasets())})."
            )
        dataset_info(dataset)

    name = Path(dataset).name if Path(dataset).is_dir() else dataset
    out_dir = out if out is not None else Path("runs") / name
    config = CompareConfig(
        dataset=dataset,
        fusions=list(fusion),
        modalities=split_names(modalities) if modalities is not None else None,
        seeds=seeds,
        out_dir=str(out_dir),
        epochs=epochs,
        data_dir=path_text(data_dir),
        model_overrides=overrides(hidden=hidden),
        device=device,
        max_params=max_params,
        command=command_line(),
        resume=resume,
        overwrite=overwrite,
        keep_checkpoints=keep_checkpoints,
        jobs=jobs,
        executor=executor,
        ray_address=ray_address,
        causal=causal,
        preset=preset,
        log=split_names(log),
        tracking_uri=tracking_uri,
        experiment=experiment_options(
            dataset=str(Path(dataset).resolve()) if Path(dataset).is_dir() else dataset,
            out=out_dir.resolve(),
            data_dir=data_dir.resolve() if data_dir is not None else None,
            resume=False,
            overwrite=False,
        ),
    )
    if err_console.is_terminal:
        result = _with_progress_bar(config)
    else:
        result = run_compare(config, progress=_progress_lines())
    table = Table(title=f"{name}: test results, mean over {seeds} seed(s)")
    metric = result.main_metric
    table.add_column("fusion", no_wrap=True)
    table.add_column(metric, justify="right", no_wrap=True)
    table.add_column("± std", justify="right", no_wrap=True)
    extra = [m for m in result.metrics if m != metric and f"{m}_mean" in result.summary[0]]
    for m in extra:
        table.add_column(m, justify="right", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("train s", justify="right", no_wrap=True)
    for row in result.summary:
        table.add_row(
            str(row["fusion"]),
            f"{row[f'{metric}_mean']:.4f}",
            f"{row[f'{metric}_std']:.4f}",
            *[f"{row[f'{m}_mean']:.4f}" for m in extra],
            f"{int(row['params_mean']):,}",
            f"{row['train_seconds_mean']:.1f}",
        )
    console.print(table)
    verdict = _versus_line(result.summary, metric)
    if verdict:
        console.print(verdict, highlight=False)
    console.print(f"Wrote {result.out_dir}/results.csv, summary.csv, summary.md, report.html and models/")
    if analyze:
        from mmfuse.evaluate.analysis import AnalysisConfig, analyze_run
        from mmfuse.train import resolve_device

        with analysis_progress(str(result.out_dir)):
            analysis = analyze_run(  # on the executor the runs trained with (--jobs, --executor, --ray-address)
                result.out_dir,
                config=AnalysisConfig(data_dir=path_text(data_dir), device=resolve_device(device).type),
                executor=config.run_executor(),
            )
        seconds = sum(analysis.seconds.values())
        console.print(f"Analysis: {len(analysis.files)} files in {analysis.out_dir} ({seconds:.0f} s); report updated")


def _progress_lines() -> Callable[[Any], None]:
    """One plain line on stderr per finished run, for output that is not a terminal (logs, CI, nohup)."""
    start = time.monotonic()

    def on_progress(event: Any) -> None:
        if not event.done:
            return
        metric = event.main_metric
        value = event.logs.get(metric) if metric else None
        score = f"{metric}={value:.4f}" if isinstance(value, float | int) else "no score"
        seconds = event.logs.get("train_seconds")
        trained = f"train {seconds:.1f} s, " if isinstance(seconds, float | int) else ""
        elapsed = int(time.monotonic() - start)
        err_console.print(
            f"run {event.run_index}/{event.total_runs} done: {event.fusion} seed {event.seed}  {score}  "
            f"({trained}elapsed {elapsed // 3600}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d})",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )

    return on_progress


def _with_progress_bar(config: Any) -> Any:
    """Run the comparison under a live progress bar on the terminal (runs done, and the current run's epochs)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mmfuse.evaluate.compare import CompareProgress
    from mmfuse.evaluate.compare import compare as run_compare

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    ) as bar:
        # Bars appear with the first event: an error before any run (a --max-params refusal) prints no empty bars,
        # and runs in worker processes (--jobs 2), which report only when a run ends, get no epoch bar at "0/?".
        tasks: dict[str, Any] = {}

        def on_progress(event: CompareProgress) -> None:
            if "runs" not in tasks:
                tasks["runs"] = bar.add_task("runs", total=event.total_runs)
            finished = event.run_index - (0 if event.done else 1)
            if event.done:
                bar.update(
                    tasks["runs"], completed=finished, description=f"runs (last: {event.fusion} seed {event.seed})"
                )
                if "epochs" in tasks:
                    bar.update(tasks["epochs"], description=f"{event.fusion} seed {event.seed} done")
                return
            bar.update(tasks["runs"], completed=finished)
            if "epochs" not in tasks:
                tasks["epochs"] = bar.add_task("epochs", total=event.epochs)
            metric = {k: v for k, v in event.logs.items() if k.startswith("val_") and isinstance(v, float)}
            shown = " ".join(f"{k}={v:.3f}" for k, v in list(metric.items())[:2])
            bar.update(
                tasks["epochs"],
                description=f"{event.fusion} seed {event.seed} {shown}",
                total=event.epochs,
                completed=event.epoch,
            )

        return run_compare(config, progress=on_progress)


def _versus_line(summary: list[dict[str, Any]], metric: str) -> str:
    """One line: the best fusion's 95% CI and how it stands against the best unimodal baseline (summary.csv)."""
    from mmfuse.evaluate.protocol import UNIMODAL_PREFIX

    best = next((row for row in summary if not str(row["fusion"]).startswith(UNIMODAL_PREFIX)), None)
    if best is None or best.get("ci_low") is None or best.get("ci_high") is None:
        return ""
    line = f"{best['fusion']}: 95% CI of test {metric} [{best['ci_low']:.4f}, {best['ci_high']:.4f}]"
    reference = next((row["fusion"] for row in summary if row.get("vs_best_unimodal") == "reference"), None)
    mark, p_value = best.get("vs_best_unimodal"), best.get("p_vs_best_unimodal")
    if reference is not None and mark is not None and p_value is not None:
        line += f"; against {reference} (best unimodal baseline, chosen on validation): {mark}"
        line += f", paired test p = {p_value:.2g}"
    return line + "."
