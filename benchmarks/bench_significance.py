"""Time of the significance columns of one comparison row (run on demand: ``python benchmarks/bench_significance.py``).

A MOSI-sized test split (750 items, 2 classes / a regression target) and 5 seeds: the bootstrap interval and the
paired permutation test of one fusion against a baseline, 2000 resamples each (compare's defaults), per main metric.
Prints the best of 3 repeats in seconds.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from bench_align import _best  # best-of-n wall time; this script's folder is on sys.path when run

from mmfuse.metrics.significance import bootstrap_ci, paired_permutation_test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=750)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n, s = args.items, args.seeds
    y = rng.integers(0, 2, n)
    a = np.where(rng.random((s, n)) < 0.82, y, 1 - y)
    b = np.where(rng.random((s, n)) < 0.79, y, 1 - y)
    t = rng.normal(size=n).astype(np.float32)
    ra = (t + 0.5 * rng.normal(size=(s, n))).astype(np.float32)
    rb = (t + 0.6 * rng.normal(size=(s, n))).astype(np.float32)
    print(f"load average {os.getloadavg()[0]:.2f}; {n} items x {s} seeds, {args.resamples} resamples")
    for metric, (truth, pa, pb) in {
        "accuracy": (y, a, b),
        "f1_weighted": (y, a, b),
        "mae": (t, ra, rb),
        "ccc": (t, ra, rb),
    }.items():
        ci = _best(lambda: bootstrap_ci(metric, truth, pa, n_resamples=args.resamples), args.repeat)  # noqa: B023
        test = _best(lambda: paired_permutation_test(metric, truth, pa, pb, n_resamples=args.resamples), args.repeat)  # noqa: B023
        print(f"{metric:12s} interval {ci:.3f} s   paired test {test:.3f} s   both {ci + test:.3f} s")


if __name__ == "__main__":
    main()
