"""Data loading throughput vs model consumption (``python benchmarks/bench_loader.py [--quick]``).

Writes a MOSI-shaped data set in mmfuse's native format (text 300, audio 74, video 35 features, 20..50 steps per
sample, a few missing steps) into a temporary folder, opens it with ``open_dataset`` and measures samples/s
through ``make_loader`` (native read + collate into padded ``Batch`` objects, batch 32, shuffled, main process).
The consumption rate it is compared with is the training throughput of the fastest model measured in the MMSA
section (the loader must be faster than the fastest consumer, or it becomes the bottleneck).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import numpy as np

from mmfuse.data import ModalitySpec, SequenceRecord, TaskSpec, make_loader, open_dataset, write_dataset

DIMS = {"text": 300, "audio": 74, "video": 35}


def _records(n: int, seed: int):
    rng = np.random.default_rng(seed)
    for i in range(n):
        t = int(rng.integers(20, 51))
        values = {m: rng.standard_normal((t, d), dtype=np.float32) for m, d in DIMS.items()}
        masks = {m: rng.random(t) > 0.05 for m in DIMS}
        split = ("train", "val", "test")[i % 3]
        yield SequenceRecord(f"s{i}", f"g{i % 50}", split, values, masks, float(rng.standard_normal()))


def run(quick: bool = False, consumer_sps: float | None = None) -> dict[str, Any]:
    """Loader samples/s (best of a few epochs). Returns a JSON-safe result dict."""
    n = 1000 if quick else 4000
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = write_dataset(
            f"{tmp}/bench",
            _records(n, 0),
            name="bench-mosi-like",
            modalities=[ModalitySpec(m, d) for m, d in DIMS.items()],
            task=TaskSpec("regression", "sample"),
        )
        write_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ds = open_dataset(path)
        loader = make_loader(ds, batch_size=32, shuffle=True, seed=0)
        first = sum(b.batch_size for b in loader)  # the first epoch also reads the columns from disk
        first_s = time.perf_counter() - t0
        best = float("inf")
        for _ in range(2 if quick else 3):
            t0 = time.perf_counter()
            seen = sum(b.batch_size for b in loader)
            best = min(best, time.perf_counter() - t0)
    res: dict[str, Any] = {
        "samples": n,
        "write_sps": n / write_s,
        "first_epoch_sps": first / first_s,
        "loader_sps": seen / best,
        "consumer_sps": consumer_sps,
    }
    if consumer_sps:
        res["ratio"] = res["first_epoch_sps"] / consumer_sps
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="1000 samples instead of 4000")
    res = run(ap.parse_args().quick)
    for k, v in res.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
