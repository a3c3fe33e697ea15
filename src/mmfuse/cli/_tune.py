"""``mmfuse tune``: an Optuna search of hyperparameters on the validation split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from mmfuse.cli import _options as opt
from mmfuse.cli._common import command_line, console, err_console, path_text, split_names

__all__ = ["tune"]


def tune(
    dataset: opt.DatasetOption = "basic-motions",
    fusion: Annotated[list[str], opt.fusion_option("Fusions to tune, each on its own (names as for compare).")] = [  # noqa: B006 - typer reads the default, it is never mutated
        "concat"
    ],
    trials: Annotated[
        int, typer.Option("--trials", "-t", min=1, help="Budget per fusion: completed + pruned trials.")
    ] = 12,
    seeds: Annotated[int, opt.seeds_option("Seeds per configuration.")] = 2,
    criterion: Annotated[
        str, typer.Option("--criterion", help="nll, mse, or a validation metric name (accuracy, mae...).")
    ] = "nll",
    out: Annotated[Path, typer.Option("--out", "-o", help="Where trials.csv, best.json and tune.db go.")] = Path(
        "runs/tune"
    ),
    sampler: Annotated[str, typer.Option("--sampler", help="tpe or random (both seeded).")] = "tpe",
    pruner: Annotated[str, typer.Option("--pruner", help="median, hyperband or none.")] = "median",
    storage: Annotated[
        str | None, typer.Option("--storage", help="SQLAlchemy URL of the Optuna storage (default sqlite in --out).")
    ] = None,
    study: Annotated[
        str | None, typer.Option("--study", help="Study name (default: the data set's); one study per fusion.")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the stored studies.")] = False,
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="Worker processes sharing each study.")] = 1,
    data_dir: opt.DataDirOption = None,
    epochs: opt.EpochsOption = None,
    device: opt.DeviceOption = "auto",
    sampler_seed: Annotated[int, typer.Option("--sampler-seed", help="Seed of the sampler.")] = 0,
    preset: Annotated[
        str | None,
        opt.preset_option(
            "Start the search from this preset instead of the data set's: a YAML/JSON preset file, or a "
            "'mmfuse tune' folder or its best.json."
        ),
    ] = None,
    executor: Annotated[
        str, opt.executor_option("Where --workers run: 'local' processes or 'ray' tasks (needs the 'ray' extra).")
    ] = "local",
    ray_address: opt.RayAddressOption = None,
    log: opt.LogOption = None,
    tracking_uri: opt.TrackingUriOption = None,
) -> None:
    """Search hyperparameters with Optuna on the validation split (the test split is never read)."""
    from mmfuse.evaluate.tune import TuneConfig
    from mmfuse.evaluate.tune import tune as run_tune

    config = TuneConfig(
        dataset=dataset,
        fusions=list(fusion),
        trials=trials,
        seeds=seeds,
        out_dir=str(out),
        criterion=criterion,
        sampler=sampler,
        pruner=pruner,
        storage=storage,
        study=study,
        resume=resume,
        workers=workers,
        sampler_seed=sampler_seed,
        epochs=epochs,
        data_dir=path_text(data_dir),
        device=device,
        command=command_line(),
        preset=preset,
        log=split_names(log),
        tracking_uri=tracking_uri,
        executor=executor,
        ray_address=ray_address,
    )

    def on_trial(row: dict[str, Any]) -> None:
        score = row[f"val_{criterion}_mean"]
        if row["state"] == "PRUNED":
            what = f"pruned at epoch {row['pruned_at_epoch']}"
        elif row["state"] == "COMPLETE":
            what = f"val {criterion} {score:.4f}"
        else:
            what = "failed"
        if row.get("repeat_of") is not None:
            what += f" (repeats trial {row['repeat_of']})"
        err_console.print(f"{row['fusion']} trial {row['trial']}: {what}", highlight=False)

    result = run_tune(config, progress=on_trial)
    table = Table(title=f"chosen on validation {criterion}")
    table.add_column("fusion", no_wrap=True)
    table.add_column("trial", justify="right")
    table.add_column(f"val {criterion}", justify="right")
    table.add_column("pruned", justify="right")
    table.add_column("settings")
    for name, chosen in result.best.items():
        settings = {**chosen["model"], **chosen["train"]}
        rows = [r for r in result.trials if r["fusion"] == name]
        pruned = f"{sum(r['state'] == 'PRUNED' for r in rows)}/{len(rows)}"
        table.add_row(name, str(chosen["trial"]), f"{chosen['criterion']:.4f}", pruned, escape(str(settings)))
    console.print(table)
    console.print(f"Wrote {result.out_dir}/trials.csv, best.json and tune.json")
