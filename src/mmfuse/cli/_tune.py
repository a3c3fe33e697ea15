"""``mmfuse tune``: random search of hyperparameters on the validation split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from mmfuse.cli._common import command_line, console, err_console

__all__ = ["tune"]


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
        command=command_line(),
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
