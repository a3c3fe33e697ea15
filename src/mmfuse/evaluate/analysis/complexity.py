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
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from mmfuse.evaluate.analysis.base import Analysis, Section, Summary, check_count, fmt, register_analysis
from mmfuse.evaluate.analysis.context import (
    AnalysisContext,
    LoadedModel,
    model_modalities,
    restrict,
    slice_sequence,
)
from mmfuse.models import parameter_report
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


__all__ = ["ComplexityAnalysis", "ComplexityConfig", "measure_latency", "peak_forward_memory"]


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


@dataclass
class ComplexityConfig:
    """Settings of the complexity analysis.

    Attributes:
        latency_repeats: Timed forward passes per run.
    """

    latency_repeats: int = 20

    def __post_init__(self) -> None:
        check_count(self, "latency_repeats")


@register_analysis("complexity")
class ComplexityAnalysis(Analysis[ComplexityConfig, dict[str, Any] | None]):
    """Trainable parameters, latency per sample and peak memory of one forward pass."""

    title = "Complexity"
    order = 80
    config_type = ComplexityConfig

    def run(self, ctx: AnalysisContext, model: LoadedModel) -> dict[str, Any] | None:
        """Parameters, latency and memory of the fusion's single-model seed (None for its other seeds)."""
        if model is not ctx.single(model.name):
            return None
        test, net = ctx.reference, model.model
        whole = test.whole
        mid = np.argsort(np.abs(test.lengths - np.median(test.lengths)), kind="stable")
        picks = mid[: min(5, len(test.lengths))]  # sequences of typical length
        mods = model_modalities(net, whole)
        samples = [restrict(slice_sequence(whole, int(i)), mods).to(ctx.device) for i in picks]
        lat = measure_latency(net, samples, repeats=self.config.latency_repeats)
        mem = peak_forward_memory(net, samples[0])
        return {"fusion": model.name, "params": parameter_report(net).trainable, **lat, **mem}

    def summarize(self, ctx: AnalysisContext, results: Sequence[tuple[LoadedModel, dict[str, Any] | None]]) -> Summary:
        """``complexity.csv``, the final columns (the same for every seed of a fusion) and the table."""
        rows = [r for _, r in results if r is not None]
        by_name = {r["fusion"]: r for r in rows}
        columns = ("params", "latency_ms_median", "latency_ms_p95", "peak_bytes")
        final = {(m.name, m.seed): {k: by_name[m.name][k] for k in columns} for m, _ in results if m.name in by_name}
        threads = ctx.settings.num_threads or torch.get_num_threads()
        sec = Section(
            self.title,
            [
                "Trainable parameters, inference latency per sample (one sequence per forward pass, test sequences of "
                f"median length ({int(np.median(ctx.reference.lengths))} steps), {self.config.latency_repeats} "
                f"timed passes after warm-up, {ctx.settings.device}, {threads} thread(s)) and the peak memory "
                "allocated during one forward pass (" + (rows[0]["memory_method"] if rows else "") + ").",
            ],
        )
        sec.table(
            f"Complexity (models of seed {ctx.settings.embedding_seed}).",
            ["fusion", "parameters", "latency median [ms]", "latency p95 [ms]", "peak memory [KiB]"],
            [
                [
                    r["fusion"],
                    f"{r['params']:,}",
                    fmt(r["latency_ms_median"], 2),
                    fmt(r["latency_ms_p95"], 2),
                    fmt(r["peak_bytes"] / 1024, 1),
                ]
                for r in rows
            ],
        )
        return Summary(sec, {"complexity.csv": rows}, {}, final)
