"""Run every benchmark section and regenerate docs/benchmarks.md.

    .venv/bin/python benchmarks/run_all.py --out benchmarks/results [--quick] [--no-docs]

Writes ``results.md``, ``results.csv``, ``results.json`` and ``results.png`` into ``--out`` and (unless
``--no-docs``) rewrites ``docs/benchmarks.md`` with the table, the machine and the command. Peers
(cmu-multimodal-sdk, MMSA) come from the optional extra ``pip install -e '.[bench]'``; a missing peer is
skipped and the reason is written into the table.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib.metadata
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_align
import bench_align_sdk
import bench_gpu
import bench_loader
import bench_train_mmsa

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ["section", "case", "metric", "mmfuse", "peer", "peer_value", "ratio", "goal", "status"]


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        ram = f"{kb / 2**20:.0f} GiB"
    except (OSError, IndexError, ValueError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram": ram,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": 1,
        "cmu-multimodal-sdk": _version("cmu-multimodal-sdk"),
        "mmsa": _version("mmsa"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }


def _load() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _status(ok: bool, short: str) -> str:
    return "met" if ok else f"missed ({short})"


def collect(quick: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run the sections in order; return (table rows, raw results)."""
    rows: list[dict[str, Any]] = []
    raw: dict[str, Any] = {}

    def row(**kw: Any) -> None:
        rows.append({f: kw.get(f, "") for f in FIELDS})

    # 1. Alignment vs the CMU Multimodal SDK.
    sdk = raw["align_sdk"] = bench_align_sdk.run(quick)
    for r in sdk["rows"]:
        if sdk["sdk_skipped"]:
            row(
                section="align vs SDK",
                case=f"{r['length_s']} s",
                metric="seconds",
                mmfuse=f"{r['mmfuse_s']:.4f}",
                peer="cmu-multimodal-sdk",
                peer_value=f"skipped: {sdk['sdk_skipped']}",
            )
            continue
        last = r is sdk["rows"][-1] and r["length_s"] == 960
        row(
            section="align vs SDK",
            case=f"{r['length_s']} s ({r['words']} words)",
            metric="seconds",
            mmfuse=f"{r['mmfuse_s']:.4f}",
            peer="cmu-multimodal-sdk",
            peer_value=f"{r['sdk_s']:.3f}",
            ratio=f"{r['ratio']:.1f}x faster",
            goal=">= 100x at 960 s" if last else "",
            status=_status(r["ratio"] >= 100, f"{r['ratio']:.0f}x of 100x") if last else "",
        )
    row(
        section="align vs SDK",
        case="scaling exponent k (time ~ length^k)",
        metric="k",
        mmfuse=f"{sdk['mmfuse_exponent']:.2f}",
        peer="cmu-multimodal-sdk",
        peer_value=f"{sdk['sdk_exponent']:.2f}" if "sdk_exponent" in sdk else "skipped",
    )
    row(
        section="align vs SDK",
        case="worst cost of doubling the length",
        metric="time ratio",
        mmfuse=f"{sdk['mmfuse_doubling']:.2f}x",
        goal="<= 2.2x",
        status=_status(sdk["mmfuse_doubling"] <= 2.2, f"{sdk['mmfuse_doubling']:.2f}x"),
    )
    if "max_abs_diff_on_grid" in sdk:
        row(
            section="align vs SDK",
            case="same values, words on the frame grid",
            metric="max |mmfuse - SDK|",
            mmfuse=f"{sdk['max_abs_diff_on_grid']:.1e}",
            peer="cmu-multimodal-sdk",
            goal="float32 round-off",
            status=_status(sdk["max_abs_diff_on_grid"] < 1e-5, "values differ"),
        )
        row(
            section="align vs SDK",
            case="words off the frame grid (documented difference)",
            metric="max |mmfuse - SDK|",
            mmfuse=f"{sdk['max_abs_diff_off_grid']:.2f}",
            peer="cmu-multimodal-sdk",
            status="expected: overlap-weighted vs equal-weight mean",
        )

    # 2. Alignment vs the memory limit.
    gigabytes = 0.064 if quick else 1.0
    mem = raw["align_memory"] = bench_align.big_run(gigabytes, 8192)
    row(
        section="align, big stream",
        case=f"{mem['gigabytes']:.2f} GB float32, 100 Hz -> 30 Hz",
        metric="throughput vs np.copy",
        mmfuse=f"{mem['fraction_of_copy']:.0%}",
        peer="np.copy (same bytes)",
        peer_value=f"{mem['copy_s']:.2f} s (align {mem['align_s']:.2f} s)",
        goal=">= 20%",
        status=_status(mem["fraction_of_copy"] >= 0.2, f"{mem['fraction_of_copy']:.0%}"),
    )
    row(
        section="align, big stream",
        case="peak extra memory (tracemalloc)",
        metric="MB",
        mmfuse=f"{mem['peak_extra_mb']:.0f} (output {mem['output_mb']:.0f})",
    )

    # 3. Training throughput vs MMSA.
    train = raw["train_mmsa"] = bench_train_mmsa.run(quick)
    for r in train["rows"]:
        if train["mmsa_skipped"]:
            row(
                section="train vs MMSA (CPU)",
                case=r["model"],
                metric="samples/s",
                mmfuse=f"{r['mmfuse_sps']:.0f}",
                peer="MMSA",
                peer_value=f"skipped: {train['mmsa_skipped']}",
            )
            continue
        row(
            section="train vs MMSA (CPU)",
            case=r["model"],
            metric="samples/s",
            mmfuse=f"{r['mmfuse_sps']:.1f}",
            peer="MMSA",
            peer_value=f"{r['mmsa_sps']:.1f}",
            ratio=f"{r['ratio']:.2f}x",
            goal=">= 1.5x",
            status=_status(r["ratio"] >= 1.5, f"{r['ratio']:.2f}x"),
        )
        row(
            section="train vs MMSA (CPU)",
            case=r["model"],
            metric="parameters",
            mmfuse=f"{r['mmfuse_params']:,}",
            peer="MMSA",
            peer_value=f"{r['mmsa_params']:,}",
            ratio=f"{r['mmfuse_params'] / r['mmsa_params']:.2f}",
        )

    # 4. Data loading vs the fastest consumer.
    consumer = max(r["mmfuse_sps"] for r in train["rows"])
    load = raw["loader"] = bench_loader.run(quick, consumer_sps=consumer)
    row(
        section="data loading",
        case=f"{load['samples']} samples, native -> Batch (first epoch, from disk)",
        metric="samples/s",
        mmfuse=f"{load['first_epoch_sps']:.0f}",
        peer="fastest model (train step)",
        peer_value=f"{consumer:.0f}",
        ratio=f"{load['ratio']:.1f}x",
        goal="> 1x (not the bottleneck)",
        status=_status(load["ratio"] > 1, f"{load['ratio']:.2f}x"),
    )
    row(
        section="data loading",
        case="later epochs (columns cached)",
        metric="samples/s",
        mmfuse=f"{load['loader_sps']:.0f}",
    )

    # 5. GPU.
    gpu = raw["gpu"] = bench_gpu.run(quick)
    if gpu["skipped"]:
        row(section="GPU", case="all", metric="", mmfuse=f"skipped: {gpu['skipped']}")
    else:
        for r in gpu["rows"]:
            row(
                section=f"train vs MMSA ({gpu['gpu']})",
                case=r["model"],
                metric="samples/s",
                mmfuse=f"{r['mmfuse_sps']:.0f}",
                peer="MMSA",
                peer_value=f"{r.get('mmsa_sps', float('nan')):.0f}",
                ratio=f"{r.get('ratio', float('nan')):.2f}x",
            )
    return rows, raw


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = "| section | case | metric | mmfuse | peer | peer value | ratio | goal | status |"
    lines = [head, "|" + "---|" * len(FIELDS)]
    lines += ["| " + " | ".join(str(r[f]) for f in FIELDS) + " |" for r in rows]
    return "\n".join(lines)


def plot(raw: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    sdk = raw["align_sdk"]["rows"]
    lengths = [r["length_s"] for r in sdk]
    ax1.loglog(lengths, [r["mmfuse_s"] for r in sdk], "o-", label="mmfuse")
    if "sdk_s" in sdk[0]:
        ax1.loglog(lengths, [r["sdk_s"] for r in sdk], "s-", label="CMU Multimodal SDK")
    ax1.set(xlabel="video length (s)", ylabel="seconds", title="Word-level alignment")
    ax1.legend()
    train = raw["train_mmsa"]["rows"]
    x = np.arange(len(train))
    ax2.bar(x - 0.2, [r["mmfuse_sps"] for r in train], 0.4, label="mmfuse")
    if "mmsa_sps" in train[0]:
        ax2.bar(x + 0.2, [r["mmsa_sps"] for r in train], 0.4, label="MMSA")
    ax2.set_xticks(x, [r["model"] for r in train])
    ax2.set(ylabel="samples/s (CPU, 1 thread)", title="Training step throughput", yscale="log")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_docs(table: str, info: dict[str, Any], command: str, load: tuple[str, str], when: str) -> None:
    template = (Path(__file__).resolve().parent / "benchmarks_doc_template.md").read_text()
    machine_lines = "\n".join(f"| {k} | {v} |" for k, v in info.items())
    text = template.format(
        table=table,
        machine=f"| item | value |\n|---|---|\n{machine_lines}",
        command=command,
        load_start=load[0],
        load_end=load[1],
        date=when,
    )
    out = ROOT / "docs" / "benchmarks.md"
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for the result files")
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run; numbers are not comparable)")
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    ap.add_argument(
        "--docs-only", action="store_true", help="rewrite docs/benchmarks.md from the results already in --out"
    )
    args = ap.parse_args()
    if args.docs_only:
        raw = json.loads((args.out / "results.json").read_text())
        with open(args.out / "results.csv", newline="") as fh:
            table = markdown_table(list(csv.DictReader(fh)))
        write_docs(table, raw["machine"], raw["command"], (raw["load_start"], raw["load_end"]), raw["date"])
        return
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    load_start, t0 = _load(), time.perf_counter()
    rows, raw = collect(args.quick)
    load_end = _load()
    info = machine()
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = ".venv/bin/python benchmarks/run_all.py --out " + str(args.out) + (" --quick" if args.quick else "")
    table = markdown_table(rows)
    with open(args.out / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    raw.update(
        machine=info,
        command=command,
        load_start=load_start,
        load_end=load_end,
        date=when,
        wall_s=time.perf_counter() - t0,
    )
    (args.out / "results.json").write_text(json.dumps(raw, indent=1, default=str))
    (args.out / "results.md").write_text(
        f"# mmfuse benchmarks ({when})\n\n`{command}`\n\nLoad average (1/5/15 min) at start {load_start}, "
        f"at end {load_end}.\n\n{table}\n\n![results](results.png)\n"
    )
    plot(raw, args.out / "results.png")
    if not args.no_docs:
        write_docs(table, info, command, (load_start, load_end), when)
    print(table)
    print(f"\nwrote {args.out}/results.md, results.csv, results.json, results.png in {raw['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
