"""``mmfuse train``: one fusion on a data set into a model directory, in one process or under ``torchrun`` (DDP)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmfuse.cli import _options as opt
from mmfuse.cli._common import console, overrides, split_names

__all__ = ["train"]


def train(
    out: Annotated[Path, typer.Option("--out", "-o", help="The model directory to write.")],
    dataset: opt.DatasetOption = "basic-motions",
    fusion: Annotated[str, opt.fusion_option("A registered fusion or 'unimodal-<modality>'.")] = "concat",
    seed: Annotated[int, typer.Option("--seed", "-s", min=0, help="Seed of the weights and the batch order.")] = 0,
    epochs: opt.EpochsOption = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Override the preset's (global) batch size.")
    ] = None,
    lr: Annotated[float | None, typer.Option("--lr", min=0.0, help="Override the preset's learning rate.")] = None,
    hidden: opt.HiddenOption = None,
    causal: Annotated[
        bool, typer.Option("--causal", help="Train a streaming-ready model that 'mmfuse serve' runs.")
    ] = False,
    data_dir: opt.DataDirOption = None,
    device: opt.DeviceOption = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a model already in --out.")] = False,
    log: opt.LogOption = None,
    tracking_uri: opt.TrackingUriOption = None,
) -> None:
    """Train one fusion with the comparison protocol and write a model directory (serve, analyze, load_model).

    Under torchrun every process runs this command and the model trains data-parallel (gloo on CPU, NCCL on
    CUDA) with the same recipe as one process:

    torchrun --nproc-per-node 2 --no-python mmfuse train --dataset basic-motions --out OUT
    """
    from mmfuse.evaluate.train_run import train_model

    result = train_model(
        dataset,
        out,
        fusion=fusion,
        seed=seed,
        epochs=epochs,
        causal=causal,
        model_overrides=overrides(hidden=hidden),
        train_overrides=overrides(batch_size=batch_size, lr=lr),
        device=device,
        data_dir=data_dir,
        overwrite=overwrite,
        log=split_names(log),
        tracking_uri=tracking_uri,
    )
    if result.is_main:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(result.test_metrics.items()) if k in _SHOWN)
        console.print(
            f"Trained {fusion} in {result.world_size} process(es), best epoch {result.best_epoch}; "
            f"test: {shown or '-'}",
            highlight=False,
            markup=False,
        )
        console.print(f"Wrote {result.out_dir}/ (config.json, model.safetensors, normalisers)", highlight=False)


_SHOWN = {"accuracy", "f1_weighted", "mae", "pearson", "acc2", "loss"}
