"""Complexity: parameters, inference latency per sample (median and p95) and peak memory of one forward pass.

Latency is the wall time of ``model(batch)`` on one-sequence batches (one sample = one sequence), after warm-up
passes, with gradients off. Peak memory is measured by the CUDA allocator on a GPU; on the CPU it is the
largest total size of the tensors created during one forward pass of one sample that were alive at the same time
(activations and temporaries, tracked by a dispatch mode; the weights, allocated before, are reported
separately as ``param_bytes``).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from mmfuse.types import Batch


class _LiveTensorBytes(TorchDispatchMode):
    """Tracks the bytes of the tensors created by each op while they are alive, and their peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()

    def _free(self, key: int, nbytes: int) -> None:
        self._seen.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = storage.data_ptr()
            nbytes = storage.nbytes()
            if nbytes == 0 or key in self._seen:
                continue  # a view of a tensor already counted
            self._seen.add(key)
            self.live += nbytes
            self.peak = max(self.peak, self.live)
            weakref.finalize(t, self._free, key, nbytes)
        return out


__all__ = ["measure_latency", "peak_forward_memory"]


def measure_latency(model: nn.Module, samples: Sequence[Batch], repeats: int = 30, warmup: int = 3) -> dict[str, float]:
    """Median and 95th-percentile wall time (milliseconds) of ``model(sample)`` over ``repeats`` calls.

    Args:
        model: The model (put in eval mode for the measurement, then restored).
        samples: One-sequence batches; cycled through.
        repeats: Timed calls.
        warmup: Untimed calls first.

    Example:
        >>> net = nn.Linear(3, 2)
        >>> class M(nn.Module):
        ...     def forward(self, b):
        ...         return net(b.inputs["a"])
        >>> b = Batch({"a": torch.randn(1, 4, 3)}, {"a": torch.ones(1, 4, dtype=torch.bool)},
        ...           torch.ones(1, 4, dtype=torch.bool))
        >>> lat = measure_latency(M(), [b], repeats=5)
        >>> lat["latency_ms_median"] > 0 and lat["latency_ms_p95"] >= lat["latency_ms_median"]
        True
    """
    if not samples:
        raise ValueError("measure_latency needs at least one sample batch.")
    if repeats < 1:
        raise ValueError(f"The 'repeats' parameter of measure_latency must be >= 1. Got {repeats!r}.")
    was = model.training
    model.eval()
    times = np.zeros(repeats)
    try:
        with torch.no_grad():
            for i in range(warmup):
                model(samples[i % len(samples)])
            for i in range(repeats):
                b = samples[i % len(samples)]
                start = time.perf_counter()
                model(b)
                times[i] = time.perf_counter() - start
    finally:
        model.train(was)
    return {
        "latency_ms_median": float(np.median(times) * 1e3),
        "latency_ms_p95": float(np.percentile(times, 95) * 1e3),
    }


def peak_forward_memory(model: nn.Module, sample: Batch) -> dict[str, Any]:
    """Peak bytes allocated during one forward pass, and the bytes held by the parameters.

    Returns:
        ``{"peak_bytes": int, "param_bytes": int, "memory_method": str}``.

    Example:
        >>> net = nn.Linear(3, 2)
        >>> class M(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.net = net
        ...     def forward(self, b):
        ...         return self.net(b.inputs["a"]).relu()
        >>> b = Batch({"a": torch.randn(1, 64, 3)}, {"a": torch.ones(1, 64, dtype=torch.bool)},
        ...           torch.ones(1, 64, dtype=torch.bool))
        >>> mem = peak_forward_memory(M(), b)
        >>> mem["param_bytes"], mem["peak_bytes"] >= 64 * 2 * 4
        (32, True)
    """
    param_bytes = int(sum(p.numel() * p.element_size() for p in model.parameters()))
    was = model.training
    model.eval()
    try:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            with torch.no_grad():
                model(sample)
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device) - base
            return {"peak_bytes": int(peak), "param_bytes": param_bytes, "memory_method": "cuda allocator"}
        tracker = _LiveTensorBytes()
        with torch.no_grad(), tracker:
            model(sample)
        return {"peak_bytes": tracker.peak, "param_bytes": param_bytes, "memory_method": "live tensor bytes (CPU)"}
    finally:
        model.train(was)
