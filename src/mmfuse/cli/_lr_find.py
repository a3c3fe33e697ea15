"""``mmfuse lr-find``: the learning-rate range test of one fusion on the training split of a data set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmfuse.cli import _options as opt
from mmfuse.cli._common import console

__all__ = ["lr_find"]


def lr_find(
    dataset: opt.DatasetOption = "basic-motions",
    fusion: Annotated[str, opt.fusion_option("One registered fusion name.")] = "concat",
    data_dir: opt.DataDirOption = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Where lr_find.json and lr_find.png go (default runs/<dataset>/lr-find)."),
    ] = None,
    device: opt.DeviceOption = "auto",
    start_lr: Annotated[float, typer.Option("--start-lr", min=0.0, help="First learning rate.")] = 1e-7,
    end_lr: Annotated[float, typer.Option("--end-lr", min=0.0, help="Last learning rate.")] = 1.0,
    num_steps: Annotated[int, typer.Option("--num-steps", min=5, help="Most training steps.")] = 100,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the model and the batch order.")] = 0,
    hidden: opt.HiddenOption = None,
) -> None:
    """Run the learning-rate range test of one fusion on the TRAIN split; write the curve and a suggested rate."""
    from rich.markup import escape

    from mmfuse._io import atomic_write_json
    from mmfuse.data import open_or_load_dataset
    from mmfuse.errors import DataError
    from mmfuse.evaluate.protocol import fit_normalizers, model_config_for, preset_for, settings_for
    from mmfuse.fusion import list_fusions
    from mmfuse.models import build_model
    from mmfuse.train import TrainConfig, find_lr, seed_everything

    valid = list_fusions()
    if fusion not in valid:
        raise ValueError(f"Unknown fusion {fusion!r}. Valid names: {', '.join(valid)}.")
    data = open_or_load_dataset(dataset, data_dir=data_dir)
    if "train" not in data.split_names:
        raise DataError(
            f"Data set {data.name!r} ({data.path}) has no 'train' split; lr-find reads only that split. "
            f"Its splits: {data.split_names}."
        )
    preset = preset_for(data)
    model_kwargs, train_kwargs = settings_for(
        preset, fusion, model_overrides={"hidden": hidden} if hidden is not None else {}
    )
    model_config = model_config_for(data, fusion, **model_kwargs)
    train_config = TrainConfig(**{**train_kwargs, "device": device, "seed": seed})

    train_view = data.split("train")  # the only split read: normalisers and the test itself
    normalizers = fit_normalizers(train_view)
    train = train_view.with_transform(normalizers.transform_record)
    seed_everything(seed)
    model = build_model(model_config)
    result = find_lr(model, train, config=train_config, start_lr=start_lr, end_lr=end_lr, num_steps=num_steps)

    out_dir = out if out is not None else Path("runs") / data.name / "lr-find"
    record = {
        "dataset": data.name,
        "fusion": fusion,
        "split": "train",
        "preset": preset.name,
        "preset_lr": train_config.lr,
        "model_config": model_config.to_dict(),
        "train_config": train_config.to_dict(),
        **result.to_dict(),
    }
    atomic_write_json(out_dir / "lr_find.json", record)
    result.plot(out_dir / "lr_find.png")

    shown = "none (the loss did not fall; widen the range)" if result.suggestion is None else f"{result.suggestion:.2e}"
    console.print(f"{escape(data.name)} / {escape(fusion)}: suggested lr {shown}", highlight=False)
    console.print(
        f"steps taken {len(result.lrs)} of {num_steps}{' (stopped: the loss diverged)' if result.diverged else ''}; "
        f"lowest loss at lr {result.lowest_loss_lr or float('nan'):.2e}; lr now in use {train_config.lr:.2e}",
        highlight=False,
    )
    console.print(f"Wrote {escape(str(out_dir))}/lr_find.json and lr_find.png", highlight=False)
