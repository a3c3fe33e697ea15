"""The typer application behind the ``mmfuse`` command. Thin: parse, call the public API, show results."""

from __future__ import annotations

import logging
import shlex
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mmfuse._version import __version__

__all__ = ["app"]

app = typer.Typer(
    name="mmfuse",
    help="Multimodal fusion on temporal streams: align, compare fusions, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Piped or captured output has no terminal width: use a wide one so result tables are never cut.
console = Console(width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)

F = TypeVar("F", bound=Callable[..., Any])


def _friendly_errors(func: F) -> F:
    """Turn the library's expected errors into one clear line and exit code 2 (no traceback)."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from mmfuse.errors import MmfuseError

        try:
            return func(*args, **kwargs)
        except (MmfuseError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as exc:
            # escape: a path such as "data/[run1]/a.csv" is text, not rich markup; soft_wrap: one line, even
            # when stderr is not a terminal (rich would otherwise hard-wrap the message at 80 columns).
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def _command_line() -> str:
    return " ".join(shlex.quote(a) for a in ["mmfuse", *sys.argv[1:]])


@app.callback()
def _main(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details to stderr.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    from mmfuse.cli._show import install_warning_display

    ctx.call_on_close(install_warning_display())


@app.command()
def version() -> None:
    """Print the mmfuse version."""
    console.print(f"mmfuse {__version__}")


@app.command()
@_friendly_errors
def compare(
    dataset: Annotated[
        str, typer.Option("--dataset", "-d", help="Registered data-set name or a native data-set folder.")
    ] = "basic-motions",
    fusion: Annotated[
        list[str], typer.Option("--fusion", "-f", help="Fusion names (repeat or comma-separate), or 'all'.")
    ] = ["all"],  # noqa: B006 - typer reads the default, it is never mutated
    seeds: Annotated[int, typer.Option("--seeds", "-s", min=1, help="Seeds per fusion (0 .. N-1).")] = 3,
    epochs: Annotated[int | None, typer.Option("--epochs", "-e", min=1, help="Override the preset's epochs.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run directory (default runs/<dataset>).")] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Folder of local data sets (else $MMFUSE_DATA_DIR).")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or auto.")] = "auto",
    max_params: Annotated[
        int | None, typer.Option("--max-params", min=1, help="Refuse models with more trainable parameters.")
    ] = None,
    hidden: Annotated[int | None, typer.Option("--hidden", min=1, help="Override the hidden size H.")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Reuse finished runs in --out and continue an interrupted one.")
    ] = False,
    keep_checkpoints: Annotated[
        bool, typer.Option("--keep-checkpoints", help="Keep each run's last/ checkpoint after it finishes.")
    ] = False,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", min=1, help="Runs trained at once, each in its own process.")
    ] = 1,
    analyze: Annotated[
        bool, typer.Option("--analyze", help="Then run the analysis suite on the run (as 'mmfuse analyze').")
    ] = False,
) -> None:
    """Train and test every chosen fusion for every seed; write results, summary and an HTML report.

    Fusion names: any registered fusion (see 'mmfuse fusions'), 'unimodal-<modality>' for a unimodal
    baseline, 'unimodal' for all of them, or 'all' for every fusion plus every unimodal baseline.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mmfuse.data import dataset_info
    from mmfuse.evaluate.compare import CompareConfig, CompareProgress, resolve_fusions
    from mmfuse.evaluate.compare import compare as run_compare

    # Check the names before the progress display starts, so a typo gives one clean line.
    resolve_fusions(list(fusion))
    if not Path(dataset).is_dir():
        dataset_info(dataset)

    name = Path(dataset).name if Path(dataset).is_dir() else dataset
    out_dir = out if out is not None else Path("runs") / name
    config = CompareConfig(
        dataset=dataset,
        fusions=list(fusion),
        seeds=seeds,
        out_dir=str(out_dir),
        epochs=epochs,
        data_dir=str(data_dir) if data_dir is not None else None,
        model_overrides={"hidden": hidden} if hidden is not None else {},
        device=device,
        max_params=max_params,
        command=_command_line(),
        resume=resume,
        keep_checkpoints=keep_checkpoints,
        jobs=jobs,
    )
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    ) as bar:
        overall = bar.add_task("runs", total=None)
        current = bar.add_task("epochs", total=None)

        def on_progress(event: CompareProgress) -> None:
            bar.update(overall, total=event.total_runs, completed=event.run_index - (0 if event.done else 1))
            if event.done:
                bar.update(current, description=f"{event.fusion} seed {event.seed} done")
            else:
                metric = {k: v for k, v in event.logs.items() if k.startswith("val_") and isinstance(v, float)}
                shown = " ".join(f"{k}={v:.3f}" for k, v in list(metric.items())[:2])
                bar.update(
                    current,
                    description=f"{event.fusion} seed {event.seed} {shown}",
                    total=event.epochs,
                    completed=event.epoch,
                )

        result = run_compare(config, progress=on_progress)

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
    console.print(f"Wrote {result.out_dir}/results.csv, summary.csv, summary.md, report.html and models/")
    if analyze:
        from mmfuse.evaluate.analysis import AnalysisConfig, analyze_run
        from mmfuse.train import resolve_device

        with console.status("analysing the run (ablation, robustness, calibration, ...)"):
            analysis = analyze_run(
                result.out_dir,
                config=AnalysisConfig(
                    data_dir=str(data_dir) if data_dir is not None else None, device=resolve_device(device).type
                ),
            )
        seconds = sum(analysis.seconds.values())
        console.print(f"Analysis: {len(analysis.files)} files in {analysis.out_dir} ({seconds:.0f} s); report updated")


def _average_option(text: str | None) -> bool | list[str] | None:
    """``--average``: None (streams.json decides), 'all', 'none', or modality names."""
    if text is None:
        return None
    if text.strip().lower() in ("all", "none"):
        return text.strip().lower() == "all"
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError(f"The '--average' option takes 'all', 'none' or modality names. Got {text!r} instead.")
    return names


@app.command()
@_friendly_errors
def align(
    src_dir: Annotated[Path, typer.Argument(help="Folder of recordings: <recording>/<modality>.csv|npz|parquet.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the native data set.")],
    rate: Annotated[float | None, typer.Option("--rate", help="Align onto a fixed grid at this rate (Hz).")] = None,
    reference: Annotated[
        str | None, typer.Option("--reference", help="Align onto this modality's timestamps instead of a grid.")
    ] = None,
    tolerance: Annotated[
        float | None, typer.Option("--tolerance", help="Seconds within which a step counts as observed.")
    ] = None,
    gap_threshold: Annotated[float, typer.Option("--gap-threshold", help="Report gaps longer than this (s).")] = 1.0,
    label_tolerance: Annotated[
        float | None,
        typer.Option("--label-tolerance", help="Seconds a point step label holds (default: its median interval)."),
    ] = None,
    average: Annotated[
        str | None,
        typer.Option(
            "--average",
            help="Average each grid step's window instead of reading the grid point: 'all', 'none' or modality "
            "names (comma-separated). Default: streams.json's 'average' entries.",
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Data set name (reports are titled after it; default: the folder).")
    ] = None,
    no_carve_val: Annotated[
        bool,
        typer.Option("--no-carve-val", help="Keep train groups in train when the split column names no 'val'."),
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing data set at --out.")] = False,
) -> None:
    """Align a folder of per-recording stream files into a native data set, with a validation report."""
    from mmfuse.align import align_folder
    from mmfuse.cli._show import show_validation

    path, report = align_folder(
        src_dir,
        out,
        rate=rate,
        reference=reference,
        tolerance=tolerance,
        gap_threshold=gap_threshold,
        label_tolerance=label_tolerance,
        average=_average_option(average),
        name=name,
        carve_val=not no_carve_val,
        overwrite=overwrite,
    )
    show_validation(report, path)
    console.print(f"Wrote data set {path} (the full validation report: {path / 'validation.md'}).")


@app.command()
@_friendly_errors
def datasets(
    full: Annotated[bool, typer.Option("--full", help="Show each data set's whole description.")] = False,
) -> None:
    """List the registered data sets and whether each is available on this machine."""
    from mmfuse.data import dataset_info, list_datasets

    table = Table(title="mmfuse data sets", show_lines=full)
    table.add_column("name", no_wrap=True)
    table.add_column("available", no_wrap=True)
    table.add_column("where", overflow="fold")
    table.add_column("description")
    for name in list_datasets():
        info = dataset_info(name)
        text = info.description if full else info.description.split(": ")[0]  # the title before the colon
        table.add_row(name, "[green]yes[/]" if info.available else "[red]no[/]", info.where, text)
    console.print(table)


@app.command()
@_friendly_errors
def fusions() -> None:
    """List the registered fusions."""
    from mmfuse.fusion import get_fusion_class, list_fusions

    table = Table(title="mmfuse fusions")
    table.add_column("name")
    table.add_column("causal")
    table.add_column("summary")
    for name in list_fusions():
        cls = get_fusion_class(name)
        doc = (cls.__doc__ or "").strip().splitlines()
        table.add_row(name, str(getattr(cls, "is_causal", "?")), doc[0] if doc else "")
    console.print(table)


@app.command()
@_friendly_errors
def tune(
    dataset: Annotated[
        str, typer.Option("--dataset", "-d", help="Registered data-set name or a native data-set folder.")
    ] = "basic-motions",
    fusion: Annotated[
        list[str], typer.Option("--fusion", "-f", help="Fusions to tune, each on its own (names as for compare).")
    ] = ["concat"],  # noqa: B006 - typer reads the default, it is never mutated
    trials: Annotated[int, typer.Option("--trials", "-t", min=1, help="Configurations per fusion.")] = 12,
    seeds: Annotated[int, typer.Option("--seeds", "-s", min=1, help="Seeds per configuration.")] = 2,
    criterion: Annotated[
        str, typer.Option("--criterion", help="nll, mse, or a validation metric name (accuracy, mae...).")
    ] = "nll",
    out: Annotated[Path, typer.Option("--out", "-o", help="Where trials.csv and best.json go.")] = Path("runs/tune"),
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Folder of local data sets (else $MMFUSE_DATA_DIR).")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", "-e", min=1, help="Override the preset's epochs.")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or auto.")] = "auto",
    sampler_seed: Annotated[int, typer.Option("--sampler-seed", help="Seed of the random search.")] = 0,
) -> None:
    """Random-search hyperparameters on the validation split (the test split is never read)."""
    from mmfuse.evaluate.tune import TuneConfig
    from mmfuse.evaluate.tune import tune as run_tune

    config = TuneConfig(
        dataset=dataset,
        fusions=list(fusion),
        trials=trials,
        seeds=seeds,
        out_dir=str(out),
        criterion=criterion,
        sampler_seed=sampler_seed,
        epochs=epochs,
        data_dir=str(data_dir) if data_dir is not None else None,
        device=device,
        command=_command_line(),
    )

    def on_trial(row: dict[str, Any]) -> None:
        score = row[f"val_{criterion}_mean"]
        err_console.print(f"{row['fusion']} trial {row['trial']}: val {criterion} {score:.4f}", highlight=False)

    result = run_tune(config, progress=on_trial)
    table = Table(title=f"chosen on validation {criterion}")
    table.add_column("fusion", no_wrap=True)
    table.add_column("trial", justify="right")
    table.add_column(f"val {criterion}", justify="right")
    table.add_column("settings")
    for name, chosen in result.best.items():
        settings = {**chosen["model"], **chosen["train"]}
        table.add_row(name, str(chosen["trial"]), f"{chosen['criterion']:.4f}", escape(str(settings)))
    console.print(table)
    console.print(f"Wrote {result.out_dir}/trials.csv, best.json and tune.json")


@app.command()
@_friendly_errors
def report(run_dir: Annotated[Path, typer.Argument(help="A run directory written by 'mmfuse compare'.")]) -> None:
    """Re-render report.html and summary.md of a compare run directory."""
    from mmfuse.evaluate.report import write_report, write_summary_markdown

    write_summary_markdown(run_dir)
    path = write_report(run_dir)
    console.print(f"Wrote {path}")


from mmfuse.cli._lr_find import lr_find  # noqa: E402 - registered last: the command module imports this one

app.command("lr-find")(_friendly_errors(lr_find))

from mmfuse.cli import _serve  # noqa: E402, F401 - registers the serve and stream commands
from mmfuse.cli._extract import extract  # noqa: E402 - registers 'mmfuse extract'

app.command("extract")(_friendly_errors(extract))

from mmfuse.cli import _analyze  # noqa: E402, F401 - registers 'mmfuse analyze'
from mmfuse.cli._import import import_app  # noqa: E402 - registers 'mmfuse import csd|mmsa|folders'

app.add_typer(import_app, name="import")
