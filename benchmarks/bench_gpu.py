"""GPU section (``python benchmarks/bench_gpu.py``): runs only where CUDA is available, else reports a skip.

The MMSA comparison of ``bench_train_mmsa`` repeated on the GPU (same models, same shapes, batch 32), with
CUDA synchronised after every step so that the timings cover the work. Run it on a GPU machine (see
DEVELOPERS.md for the device tool); on a CPU-only machine ``run()`` returns the reason it was skipped.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch


def gpu_status() -> str | None:
    """None when a CUDA device is usable, else the reason the section is skipped."""
    if not torch.cuda.is_available():
        return f"no CUDA device (torch {torch.__version__})"
    return None


def run(quick: bool = False) -> dict[str, Any]:
    """Training samples/s on ``cuda`` for both implementations, or ``{"skipped": reason}``."""
    reason = gpu_status()
    if reason is not None:
        return {"skipped": reason}
    import bench_train_mmsa

    res = bench_train_mmsa.run(quick, device="cuda")
    res["gpu"] = torch.cuda.get_device_name(0)
    res["skipped"] = None
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer timed steps")
    res = run(ap.parse_args().quick)
    if res["skipped"]:
        print(f"GPU section skipped: {res['skipped']}")
        return
    print(f"GPU: {res['gpu']}")
    print("| model | mmfuse samples/s | MMSA samples/s | mmfuse / MMSA |")
    print("|---|---|---|---|")
    for r in res["rows"]:
        print(
            f"| {r['model']} | {r['mmfuse_sps']:.0f} | {r.get('mmsa_sps', float('nan')):.0f} "
            f"| {r.get('ratio', float('nan')):.2f} |"
        )


if __name__ == "__main__":
    main()
