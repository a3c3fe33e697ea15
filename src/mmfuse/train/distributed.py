"""Starting data-parallel training processes on this machine (the tests' and notebooks' ``torchrun``).

Data-parallel training is a strategy of the one engine (:class:`~mmfuse.train.Trainer` with
``strategy="ddp"``, or ``"auto"`` inside a process group; :mod:`mmfuse.train.strategy`). Across machines, start
the processes with ``torchrun`` and the ``mmfuse train`` command::

    torchrun --nproc-per-node 2 --no-python mmfuse train --dataset basic-motions --fusion concat --out OUT

:func:`launch_local` starts ``world_size`` processes on this machine (gloo on CPU), joins them into a process
group and runs one function in each: what ``torchrun`` does, from Python.
"""

from __future__ import annotations

import importlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from mmfuse._io import atomic_write_json

__all__ = ["launch_local"]


def _target(fn: Callable[..., Any]) -> str:
    """``module:qualname`` of a module-level function (what a spawned process can import)."""
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or not name or "<" in name or module == "__main__":
        raise ValueError(
            "The 'fn' parameter of launch_local must be a function defined at the top level of an importable "
            f"module (spawned processes import it). Got {fn!r}."
        )
    return f"{module}:{name}"


def _worker(rank: int, world: int, init_file: str, target: str, args: list[Any], kwargs: dict[str, Any]) -> None:
    torch.set_num_threads(1)  # W processes share this machine's cores
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world)})
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        module, name = target.split(":")
        fn: Any = importlib.import_module(module)
        for part in name.split("."):
            fn = getattr(fn, part)
        value = fn(*args, **kwargs)
        if rank == 0:
            atomic_write_json(Path(init_file).with_suffix(".result.json"), {"value": value})
    finally:
        dist.destroy_process_group()


def launch_local(world_size: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` in ``world_size`` processes of one gloo process group; return rank 0's value.

    Each process has ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` set and one torch thread, as under ``torchrun``,
    so a :class:`~mmfuse.train.Trainer` inside ``fn`` trains data-parallel (``strategy="auto"``).

    Args:
        world_size: Number of processes.
        fn: A function at the top level of an importable module (the processes are spawned and import it).
        *args: Its positional arguments (JSON-safe values travel best).
        **kwargs: Its keyword arguments.

    Returns:
        What ``fn`` returned in rank 0; it must be JSON-safe (it comes back through a JSON file).

    Raises:
        ValueError: ``world_size`` below 1, or ``fn`` not importable.
        torch.multiprocessing.ProcessRaisedException: when ``fn`` raised in a process.

    Example:
        >>> launch_local(0, print)
        Traceback (most recent call last):
        ...
        ValueError: The 'world_size' parameter of launch_local must be an integer >= 1. Got 0 instead.
    """
    import torch.multiprocessing as mp

    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(
            f"The 'world_size' parameter of launch_local must be an integer >= 1. Got {world_size!r} instead."
        )
    target = _target(fn)
    with tempfile.TemporaryDirectory() as tmp:
        init_file = str(Path(tmp) / "rendezvous")
        mp.spawn(_worker, args=(world_size, init_file, target, list(args), kwargs), nprocs=world_size, join=True)
        return json.loads(Path(init_file).with_suffix(".result.json").read_text(encoding="utf-8"))["value"]
