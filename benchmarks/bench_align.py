"""Alignment throughput, peak memory and scaling (run on demand: ``python benchmarks/bench_align.py [--quick]``).

1. Big run: a 100 Hz × 256-d float32 stream (~1 GB; ``--quick``: ~64 MB) onto a 30 Hz grid. Reports seconds,
   throughput as a fraction of a plain ``np.copy`` of the same bytes in this process, and the peak extra
   memory (tracemalloc, which tracks numpy buffers) beyond the preallocated output.
2. Scaling: recordings of 60..960 s, word-like 2.5 Hz interval targets, a 100 Hz × 74 and a 30 Hz × 35 stream;
   time per length and the fitted exponent of time ~ length^k.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from mmfuse.align import Stream, Timeline, align


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def big_run(gigabytes: float, chunk_size: int) -> dict[str, float]:
    d = 256
    n = int(gigabytes * 1e9 / (4 * d))
    rng = np.random.default_rng(0)
    values = rng.standard_normal((n, d), dtype=np.float32)
    t = np.arange(n, dtype=np.float64) / 100.0
    stream = Stream.create("feat", t, values)
    grid = Timeline.grid(30.0, 0.0, float(t[-1]))
    copy_s = _best(lambda: np.copy(values), 5)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    out = align([stream], grid, chunk_size=chunk_size)
    align_s = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    out_bytes = sum(
        s.values.nbytes + s.mask.nbytes + s.staleness.nbytes + s.interpolated.nbytes for s in out.streams.values()
    )
    print(
        f"big run: {n} × {d} float32 = {values.nbytes / 1e9:.2f} GB at 100 Hz ({t[-1] / 3600:.2f} h) "
        f"-> {len(grid)} steps at 30 Hz"
    )
    print("| align s | np.copy s | throughput vs copy | peak extra MB | of which output MB | chunk |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {align_s:.2f} | {copy_s:.2f} | {copy_s / align_s:.2f} | {peak / 1e6:.0f} | {out_bytes / 1e6:.0f} "
        f"| {chunk_size} |"
    )
    print(f"(source read at {values.nbytes / align_s / 1e9:.2f} GB/s)")
    return {
        "gigabytes": values.nbytes / 1e9,
        "align_s": align_s,
        "copy_s": copy_s,
        "fraction_of_copy": copy_s / align_s,
        "peak_extra_mb": peak / 1e6,
        "output_mb": out_bytes / 1e6,
    }


def scaling_run(lengths: list[int]) -> dict[str, object]:
    rng = np.random.default_rng(1)
    print("\nscaling: 2.5 Hz word intervals <- 100 Hz × 74 and 30 Hz × 35 streams")
    print("| length s | words | audio rows | video rows | seconds |")
    print("|---|---|---|---|---|")
    secs = []
    for length in lengths:
        ta = np.arange(0.0, length, 0.01)
        tv = np.arange(0.0, length, 1 / 30)
        audio = Stream.create("audio", ta, rng.standard_normal((ta.size, 74), dtype=np.float32))
        video = Stream.create("video", tv, rng.standard_normal((tv.size, 35), dtype=np.float32))
        starts = np.arange(0.0, length - 0.3, 0.4)
        words = Timeline.from_intervals(starts, starts + 0.3)
        s = _best(lambda words=words, audio=audio, video=video: align([audio, video], words), 3)
        secs.append(s)
        print(f"| {length} | {len(words)} | {ta.size} | {tv.size} | {s:.4f} |")
    k = np.polyfit(np.log(lengths), np.log(secs), 1)[0]
    print(f"scaling exponent (time ~ length^k): k = {k:.2f}")
    return {"lengths": lengths, "seconds": secs, "exponent": float(k)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="a small run (~64 MB, lengths 60..240 s)")
    ap.add_argument("--chunk-size", type=int, default=8192)
    args = ap.parse_args()
    big_run(0.064 if args.quick else 1.0, args.chunk_size)
    scaling_run([60, 120, 240] if args.quick else [60, 120, 240, 480, 960])


if __name__ == "__main__":
    main()
