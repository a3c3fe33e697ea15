"""Data-parallel training across processes and machines with ``torch.distributed`` (DDP).

:func:`fit_ddp` trains one model replica per process on its share of every global batch and averages the
gradients (``DistributedDataParallel``): gloo on CPU, NCCL on CUDA. Batches are cut the same way whatever
the number of processes: each epoch draws one seeded permutation of the training samples, cuts it into global
batches of ``batch_size`` (the incomplete last batch is dropped), and process ``r`` of ``W`` takes rows
``r, r + W, ...`` of each. With sample-level labels every process then averages its loss over the same number
of rows, so the averaged gradient is the gradient of the global batch and ``W`` processes follow the same
trajectory as one (up to floating-point summation order; models with dropout draw different masks). This
replaces ``DistributedSampler``, whose padding repeats samples. Metrics are all-reduced sums; rank 0 alone
writes the weights (atomically, safetensors).

Launch on one or more machines with torchrun::

    torchrun --nproc-per-node 4 -m mmfuse.train.distributed --dataset DATA --fusion concat --epochs 20 --out OUT

or, on one machine, :func:`launch_local` (spawns the processes itself; used by the tests).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from mmfuse._io import atomic_write_json
from mmfuse.train.checkpoint import save_weights
from mmfuse.train.losses import loss_and_count

__all__ = ["DDPResult", "fit_ddp", "launch_local", "main"]


@dataclass
class DDPResult:
    """Outcome of :func:`fit_ddp` (identical on every rank).

    Attributes:
        world_size: Number of processes.
        train_loss: Mean training loss per epoch (over all processes' labelled rows).
        metrics: Final metrics on the evaluation data: ``loss`` and, for classification, ``accuracy``.
        weights: Path of the saved weights (rank 0 wrote them), or None.
    """

    world_size: int
    train_loss: list[float] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    weights: str | None = None


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_sum(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if _rank_world()[1] > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [float(v) for v in t.tolist()]


def _evaluate(model: nn.Module, data: Any, task: Any, device: torch.device, batch_size: int) -> dict[str, float]:
    rank, world = _rank_world()
    idx = list(range(rank, len(data), world))  # each process scores its share
    loss_sum = correct = rows = 0.0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(idx), batch_size):
            batch = data.collate_fn([data[j] for j in idx[i : i + batch_size]]).to(device)
            out = model(batch)
            loss, n = loss_and_count(out, batch, task)
            loss_sum += float(loss) * n
            rows += n
            if task.is_classification and out.dim() == 2:
                correct += float((out.argmax(-1) == batch.targets).sum())
    loss_sum, correct, rows = _all_sum([loss_sum, correct, rows], device)
    metrics = {"loss": loss_sum / max(rows, 1.0)}
    if task.is_classification:
        metrics["accuracy"] = correct / max(rows, 1.0)
    return metrics


def fit_ddp(
    model: nn.Module,
    train: Any,
    *,
    epochs: int = 10,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    eval_data: Any = None,
    out_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
) -> DDPResult:
    """Train ``model`` data-parallel on the current process group (or alone when there is none).

    Call it in every process after ``torch.distributed.init_process_group`` (torchrun sets the environment;
    :func:`launch_local` does it for you). Without a process group it trains in this process only.

    Args:
        model: The model (same initial weights on every rank: build it after seeding with ``seed``).
        train: Training data set (a :class:`~mmfuse.data.MultimodalDataset` view with ``collate_fn`` and
            ``task``).
        epochs: Passes over the training data.
        batch_size: Global batch size (divisible by the number of processes).
        lr: Adam learning rate.
        seed: Seed of the batch order.
        eval_data: Data set scored after training (default: ``train``).
        out_dir: Where rank 0 writes ``weights.safetensors`` and ``ddp.json``.
        device: Device of this process (default: ``cuda:<local rank>`` when CUDA is available, else CPU).

    Returns:
        A :class:`DDPResult` (the same on every rank).

    Raises:
        ValueError: ``batch_size`` not a positive multiple of the world size, ``epochs`` < 1, or fewer training
            samples than one global batch.

    Example:
        >>> from mmfuse.data import load_dataset
        >>> from mmfuse.models import ModelConfig, build_model
        >>> ds = load_dataset("basic-motions").split("train")
        >>> _ = torch.manual_seed(0)
        >>> cfg = ModelConfig({m: s.dim for m, s in ds.modalities.items()}, ds.task.out_dim, hidden=8, dropout=0.0)
        >>> res = fit_ddp(build_model(cfg), ds, epochs=1, batch_size=8)
        >>> res.world_size, 0.0 <= res.metrics["accuracy"] <= 1.0
        (1, True)
    """
    rank, world = _rank_world()
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1 or batch_size % world:
        raise ValueError(
            f"The 'batch_size' parameter of fit_ddp must be a positive multiple of the world size ({world}). "
            f"Got {batch_size!r} instead."
        )
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"The 'epochs' parameter of fit_ddp must be an integer >= 1. Got {epochs!r} instead.")
    n = len(train)
    if n < batch_size:
        raise ValueError(f"fit_ddp: {n} training samples is fewer than one global batch ({batch_size}).")
    if device is None:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    task = train.task
    model = model.to(device)
    wrapped: nn.Module = model
    if world > 1:
        wrapped = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    result = DDPResult(world_size=world)
    per_rank = batch_size // world
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
        loss_sum = rows = 0.0
        for b in range(n // batch_size):  # the incomplete last global batch is dropped
            mine = order[b * batch_size : (b + 1) * batch_size][rank::world]  # [per_rank] sample indices
            assert len(mine) == per_rank
            batch = train.collate_fn([train[i] for i in mine]).to(device)
            loss, count = loss_and_count(wrapped(batch), batch, task)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # DDP averages the gradients over the processes here
            opt.step()
            loss_sum += float(loss.detach()) * count
            rows += count
        total, count_all = _all_sum([loss_sum, rows], device)
        result.train_loss.append(total / max(count_all, 1.0))
    result.metrics = _evaluate(model, eval_data if eval_data is not None else train, task, device, per_rank)
    if out_dir is not None and rank == 0:
        out = Path(out_dir)
        result.weights = str(save_weights(model, out / "weights.safetensors"))
        atomic_write_json(out / "ddp.json", asdict(result))
    if world > 1:
        dist.barrier()
    return result


def _worker(
    rank: int, world: int, init_file: str, dataset: str, model_config: dict[str, Any], kwargs: dict[str, Any]
) -> None:
    torch.set_num_threads(1)
    backend = "nccl" if torch.cuda.is_available() and kwargs.get("device") != "cpu" else "gloo"
    dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        result = _run(dataset, model_config, kwargs)
        if rank == 0:
            atomic_write_json(Path(init_file).with_suffix(".result.json"), asdict(result))
    finally:
        dist.destroy_process_group()


def _run(dataset: str, model_config: dict[str, Any], kwargs: dict[str, Any]) -> DDPResult:
    from mmfuse.data import open_or_load_dataset
    from mmfuse.models import ModelConfig, build_model

    ds = open_or_load_dataset(dataset)
    seed = int(kwargs.get("seed", 0))
    torch.manual_seed(seed)  # the same initial weights on every rank
    cfg = dict(model_config)
    cfg.setdefault("modality_dims", {m: s.dim for m, s in ds.modalities.items()})
    cfg.setdefault("out_dim", ds.task.out_dim)
    cfg.setdefault("task", ds.task.type.value)
    cfg.setdefault("label_level", ds.task.level.value)
    model = build_model(ModelConfig(**cfg))
    evaluate_on = kwargs.pop("eval_split", "val")
    eval_data = ds.split(evaluate_on) if evaluate_on in ds.split_names else None
    return fit_ddp(model, ds.split("train"), eval_data=eval_data, **kwargs)


def launch_local(
    world_size: int, dataset: str | os.PathLike[str], model_config: dict[str, Any] | None = None, **kwargs: Any
) -> DDPResult:
    """Spawn ``world_size`` processes on this machine (gloo on CPU) and run :func:`fit_ddp` in each.

    The model is built in every process from ``model_config`` (keyword arguments of
    :class:`~mmfuse.models.ModelConfig`; modality sizes, output size and task come from the data set) after
    ``torch.manual_seed(seed)``, trained on the ``train`` split and scored on ``val`` (``eval_split=...``).

    Args:
        world_size: Number of processes.
        dataset: Registered data-set name or a native data-set folder.
        model_config: ModelConfig keyword arguments (e.g. ``{"fusion": "concat", "hidden": 16}``).
        **kwargs: Arguments of :func:`fit_ddp` (``epochs``, ``batch_size``, ``lr``, ``seed``, ``out_dir``,
            ``device``) and ``eval_split``.

    Returns:
        Rank 0's :class:`DDPResult`.
    """
    import torch.multiprocessing as mp

    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"The 'world_size' parameter of launch_local must be an integer >= 1. Got {world_size!r}.")
    if "out_dir" in kwargs and kwargs["out_dir"] is not None:
        kwargs["out_dir"] = str(kwargs["out_dir"])
    with tempfile.TemporaryDirectory() as tmp:
        init_file = str(Path(tmp) / "rendezvous")
        mp.spawn(
            _worker,
            args=(world_size, init_file, str(dataset), dict(model_config or {}), kwargs),
            nprocs=world_size,
            join=True,
        )
        data = json.loads(Path(init_file).with_suffix(".result.json").read_text())
    return DDPResult(**data)


def main(argv: list[str] | None = None) -> None:
    """``torchrun ... -m mmfuse.train.distributed``: DDP training of one fusion on a data set."""
    ap = argparse.ArgumentParser(prog="python -m mmfuse.train.distributed", description=main.__doc__)
    ap.add_argument("--dataset", "-d", default="basic-motions", help="Registered name or native data-set folder.")
    ap.add_argument("--fusion", "-f", default="concat")
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=16, help="Global batch size.")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="Where rank 0 writes weights.safetensors and ddp.json.")
    args = ap.parse_args(argv)
    if "WORLD_SIZE" in os.environ and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        res = _run(
            args.dataset,
            {"fusion": args.fusion, "hidden": args.hidden},
            {
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "lr": args.lr,
                "seed": args.seed,
                "out_dir": args.out,
            },
        )
        if _rank_world()[0] == 0:
            print(json.dumps(asdict(res)))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
