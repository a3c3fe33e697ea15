"""Where a fit runs: one process, or data-parallel over a ``torch.distributed`` process group (DDP).

A strategy is the only part of :class:`~mmfuse.train.Trainer` that knows about processes. The loop, the optimiser,
the schedule, clipping, mixed precision, early stopping and checkpoints are the same whichever strategy runs
them (Lightning's ``Strategy``, Hugging Face's ``Accelerator``).

:class:`DataParallel` cuts every global batch the same way whatever the number of processes: each process draws
the same seeded batch, and process ``r`` of ``W`` keeps rows ``r, r + W, ...`` of it. Its loss is weighted by its
share of the labelled rows of the global batch (``W * n_r / n``), so the gradients ``DistributedDataParallel``
averages are the gradient of the global batch's mean loss: ``W`` processes follow one process's trajectory up to
floating-point summation order (models with dropout draw other masks; ``class_weights`` weigh the shares by row
counts, not by weight sums). Validation runs in full on every process, so every process takes the same
early-stopping and best-epoch decisions; only the main process writes checkpoints and callbacks fire there.

Example:
    >>> resolve_strategy("auto").world_size
    1
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor, nn

from mmfuse.train._data import take_rows
from mmfuse.types import Batch

__all__ = [
    "STRATEGIES",
    "DataParallel",
    "SingleProcess",
    "Strategy",
    "init_distributed",
    "resolve_strategy",
    "take_rows",
]

#: Names accepted by ``Trainer(strategy=...)``.
STRATEGIES = ("auto", "single", "ddp")


class Strategy:
    """One process: the model trains as it is (the base class every strategy extends).

    Attributes:
        name: ``"single"`` or ``"ddp"``.
        rank: This process's index.
        world_size: Number of processes.
    """

    name = "single"

    def __init__(self) -> None:
        self.rank = 0
        self.world_size = 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and calls the callbacks."""
        return self.rank == 0

    def device_for(self, device: torch.device) -> torch.device:
        """This process's device, given the configured one."""
        return device

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The module the training forward pass calls (``model`` itself here)."""
        return model

    def shard(self, batch: Batch) -> tuple[Batch, bool]:
        """This process's rows of a global batch, and whether they are real (``False``: a stand-in row)."""
        return batch, True

    def weigh(self, loss: Tensor, count: int) -> tuple[Tensor, int, bool]:
        """``(loss to back-propagate, labelled rows of the global batch, every process's loss finite)``."""
        return loss, count, bool(torch.isfinite(loss))

    def all_sum(self, values: list[float]) -> list[float]:
        """``values`` summed over the processes."""
        return list(values)

    def barrier(self) -> None:
        """Wait for every process."""


class SingleProcess(Strategy):
    """Train in this process only.

    Example:
        >>> SingleProcess().is_main
        True
    """


class DataParallel(Strategy):
    """``DistributedDataParallel`` over the current process group (gloo on CPU, NCCL on CUDA).

    Raises:
        RuntimeError: when no process group is initialised (start the processes with ``torchrun`` or
            :func:`mmfuse.train.distributed.launch_local`, or call :func:`init_distributed`).
    """

    name = "ddp"

    def __init__(self) -> None:
        super().__init__()
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "The 'ddp' strategy of Trainer needs an initialised torch.distributed process group; start the "
                "processes with torchrun (or mmfuse.train.distributed.launch_local), or use strategy='auto'."
            )
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self._device = torch.device("cpu")

    def device_for(self, device: torch.device) -> torch.device:
        """A CUDA device without an index becomes the GPU of this process's ``LOCAL_RANK``."""
        if device.type == "cuda" and device.index is None:
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return device

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``model`` in ``DistributedDataParallel`` (which broadcasts rank 0's weights to every process)."""
        self._device = device
        ids = [device.index] if device.type == "cuda" and device.index is not None else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def shard(self, batch: Batch) -> tuple[Batch, bool]:
        """Rows ``rank, rank + W, ...``; a process left without a row takes row 0 with weight 0."""
        index = torch.arange(self.rank, batch.batch_size, self.world_size)
        if index.numel() == 0:
            return take_rows(batch, torch.zeros(1, dtype=torch.long)), False
        return take_rows(batch, index), True

    def weigh(self, loss: Tensor, count: int) -> tuple[Tensor, int, bool]:
        """Weigh this share's mean loss by ``W * n_r / n`` so that DDP's average is the global batch's gradient."""
        finite = bool(torch.isfinite(loss)) if count else True
        total, bad = self.all_sum([float(count), 0.0 if finite else 1.0])
        n = round(total)
        if n == 0:
            return loss, 0, bad == 0
        if count == 0:  # a stand-in row: it takes part in the gradient average with zero weight
            return loss * 0.0, n, bad == 0
        return loss * (self.world_size * count / n), n, bad == 0

    def all_sum(self, values: list[float]) -> list[float]:
        """``values`` summed over the processes (float64 all-reduce)."""
        t = torch.tensor(values, dtype=torch.float64, device=self._device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return [float(v) for v in t.tolist()]

    def barrier(self) -> None:
        """``torch.distributed.barrier()``."""
        dist.barrier()


def resolve_strategy(strategy: str | Strategy) -> Strategy:
    """The :class:`Strategy` that ``Trainer(strategy=...)`` names.

    ``"auto"`` is :class:`DataParallel` inside an initialised process group of more than one process, else
    :class:`SingleProcess`; ``"single"`` and ``"ddp"`` force one; a :class:`Strategy` instance is used as is.

    Raises:
        ValueError: an unknown name, listing the valid ones.

    Example:
        >>> resolve_strategy("single").name
        'single'
    """
    if isinstance(strategy, Strategy):
        return strategy
    if strategy == "auto":
        grouped = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        return DataParallel() if grouped else SingleProcess()
    if strategy == "single":
        return SingleProcess()
    if strategy == "ddp":
        return DataParallel()
    raise ValueError(f"The 'strategy' parameter of Trainer must be one of {list(STRATEGIES)}. Got {strategy!r}.")


def init_distributed(device: str = "auto") -> bool:
    """Join the process group that ``torchrun`` describes in the environment (``WORLD_SIZE``, ``RANK``...).

    Does nothing outside ``torchrun`` or when a group is already initialised. The backend is NCCL when CUDA is
    used, else gloo; with CUDA each process takes the GPU of its ``LOCAL_RANK``.

    Returns:
        Whether this call initialised a process group (the caller then destroys it).

    Example:
        >>> init_distributed("cpu") if "WORLD_SIZE" not in os.environ else False
        False
    """
    if "WORLD_SIZE" not in os.environ or not dist.is_available() or dist.is_initialized():
        return False
    cuda = torch.cuda.is_available() and device != "cpu"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    return True
