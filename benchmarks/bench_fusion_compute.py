"""Compute of the attention fusions against pairwise cross-attention (run on demand).

``python benchmarks/bench_fusion_compute.py [--steps 50 200 800] [--repeat 7] [--out table.md]``

For every attention fusion registered when it runs (``cross_attention``, ``bottleneck``, ``mult``, ``atcm``,
``graph``; absent ones are skipped) at ``M = 3`` modalities of size ``hidden``, ``out_dim = hidden``, default
keyword arguments, batch ``B`` and each ``T``, it reports:

* forward FLOPs counted with :class:`torch.utils.flop_counter.FlopCounterMode` (matrix products only: the
  counter ignores elementwise work such as softmax). The CPU flash-attention kernel behind
  ``scaled_dot_product_attention`` has no FLOP formula, so counting runs under the math backend
  (``sdpa_kernel(SDPBackend.MATH)``), which computes the same products as visible matmuls;
* CPU time of a forward pass (eval, no grad) and of a forward + backward pass (train mode), median of
  ``--repeat`` runs after one warm-up, one thread, fusions interleaved so machine load hits all alike;
* ratios against ``cross_attention`` measured in the same process.

The table is printed as Markdown and, with ``--out``, also written to a file.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from mmfuse._io import atomic_write_text
from mmfuse.fusion import Fusion, create_fusion, is_fusion
from mmfuse.testing import make_fusion_inputs

CANDIDATES = ("cross_attention", "bottleneck", "mult", "atcm", "graph")
REFERENCE = "cross_attention"


def count_flops(fusion: Fusion, x: dict[str, torch.Tensor], m: dict[str, torch.Tensor]) -> int:
    """Forward matmul FLOPs of ``fusion(x, m)``."""
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fusion(x, m)
    return int(counter.get_total_flops())


def _forward(fusion: Fusion, x: dict[str, torch.Tensor], m: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        fusion(x, m)


def _forward_backward(fusion: Fusion, x: dict[str, torch.Tensor], m: dict[str, torch.Tensor]) -> None:
    fusion(x, m).square().mean().backward()


def measure(names: list[str], steps: int, batch: int, hidden: int, repeat: int) -> dict[str, dict[str, float]]:
    """FLOPs and median forward / forward+backward seconds of each fusion at one ``T``."""
    dims = {"audio": hidden, "text": hidden, "video": hidden}
    x, m = make_fusion_inputs(dims, batch, steps, p_missing=0.1)
    torch.manual_seed(0)
    evals = {n: create_fusion(n, dims, hidden).eval() for n in names}
    trains = {n: create_fusion(n, dims, hidden).train() for n in names}
    out: dict[str, dict[str, float]] = {n: {"flops": float(count_flops(evals[n], x, m))} for n in names}
    for kind, fusions, run in (("fwd", evals, _forward), ("fwd_bwd", trains, _forward_backward)):
        times: dict[str, list[float]] = {n: [] for n in names}
        for n in names:  # warm-up
            run(fusions[n], x, m)
        for _ in range(repeat):
            for n in names:
                start = time.perf_counter()
                run(fusions[n], x, m)
                times[n].append(time.perf_counter() - start)
        for n in names:
            out[n][kind] = statistics.median(times[n])
    return out


def table(results: dict[int, dict[str, dict[str, float]]], batch: int, hidden: int) -> str:
    """Markdown table of the results, with ratios against the reference."""
    lines = [
        f"M=3, hidden={hidden}, B={batch}, default kwargs, 1 thread; ratios are against `{REFERENCE}`.",
        "",
        "| T | fusion | GFLOPs fwd | FLOPs ratio | fwd ms | fwd ratio | fwd+bwd ms | fwd+bwd ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for steps, per_fusion in results.items():
        ref = per_fusion[REFERENCE]
        for name, r in per_fusion.items():
            lines.append(
                f"| {steps} | `{name}` | {r['flops'] / 1e9:.3f} | {r['flops'] / ref['flops']:.2f} | "
                f"{r['fwd'] * 1e3:.1f} | {r['fwd'] / ref['fwd']:.2f} | {r['fwd_bwd'] * 1e3:.1f} | "
                f"{r['fwd_bwd'] / ref['fwd_bwd']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[50, 200, 800], help="sequence lengths T")
    parser.add_argument("--batch", type=int, default=8, help="batch size B")
    parser.add_argument("--hidden", type=int, default=64, help="modality size and out_dim")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per fusion (median reported)")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown table to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = [n for n in CANDIDATES if is_fusion(n)]
    skipped = [n for n in CANDIDATES if n not in names]
    if REFERENCE not in names:
        raise SystemExit(f"The reference fusion {REFERENCE!r} is not registered.")
    results = {t: measure(names, t, args.batch, args.hidden, args.repeat) for t in args.steps}
    text = table(results, args.batch, args.hidden)
    if skipped:
        text += f"\nNot registered, skipped: {', '.join(skipped)}.\n"
    print(text, end="")
    if args.out is not None:
        atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
