"""Functions the DDP tests run in every spawned process (module level, so that spawned processes import them)."""

from __future__ import annotations

from typing import Any

import torch

from mmfuse.data import load_dataset
from mmfuse.evaluate.protocol import fit_normalizers, model_config_for
from mmfuse.evaluate.train_run import train_model
from mmfuse.models import build_model
from mmfuse.train import TrainConfig, Trainer, seed_everything

RECIPE = {
    "epochs": 3,
    "batch_size": 10,  # 10 rows: one process gets 5, two get 5 each; the last batch of 36 is 6 rows (3 + 3)
    "lr": 3e-3,
    "scheduler": "cosine",
    "warmup_epochs": 1,
    "grad_clip": 0.5,
    "patience": 2,
    "monitor": "loss",
    "device": "cpu",
    "seed": 0,
}


def fit_basic_motions(strategy: str = "auto", out_dir: str | None = None) -> dict[str, Any]:
    """Fit a small GRU concat model on BasicMotions with :data:`RECIPE`; return its history and final weights."""
    ds = load_dataset("basic-motions")
    norms = fit_normalizers(ds.split("train"))
    train, val = (ds.split(s).with_transform(norms.transform_record) for s in ("train", "val"))
    seed_everything(0)
    model = build_model(model_config_for(ds, "concat", hidden=8, dropout=0.0, encoder="gru"))
    trainer = Trainer(TrainConfig(**RECIPE), strategy=strategy)
    result = trainer.fit(model, train, val, out_dir=out_dir)
    return {
        "world_size": trainer.strategy.world_size,
        "strategy": trainer.strategy.name,
        "history": [{k: v for k, v in row.items() if k != "seconds"} for row in result.history],
        "best_epoch": result.best_epoch,
        "weights": {k: v.double().sum().item() for k, v in model.state_dict().items() if v.is_floating_point()},
    }


def train_model_job(dataset: str, out_dir: str, **kwargs: Any) -> dict[str, Any]:
    """:func:`mmfuse.evaluate.train_run.train_model` in this process; its JSON-safe summary."""
    torch.manual_seed(0)
    return train_model(dataset, out_dir, **kwargs).to_dict()
