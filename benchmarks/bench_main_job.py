"""CPU time of the README's main job, old code against new, side by side in one run.

    .venv/bin/python benchmarks/bench_main_job.py --old /tmp/mmfuse-old/src [--jobs 2] [--fusion all] [--seeds 3]
        [--dataset mosi-utterance]

Runs ``mmfuse compare --out DIR --jobs J`` (the README's main job: every fusion and unimodal baseline of
basic-motions, 3 seeds) under ``/usr/bin/time -v`` once with the source tree given by ``--old`` first on
``PYTHONPATH`` (an export of an older commit: ``git archive <commit> src | tar -x -C /tmp/mmfuse-old``) and once
with this checkout, one after the other, and prints for each: CPU seconds (user + sys of the whole process tree,
workers included), wall seconds, the load average before and after, and the lowest test accuracy of any row of
``summary.csv`` (the goal: every row >= 0.95), and how many runs (fusion and seed) of ``results.csv`` have the same
test accuracy with both sources. Wall time on a shared machine is noise; CPU time and the ratio are
the numbers to read. Nothing here runs in the unit-test suite.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def run_job(src: Path, out: Path, args: list[str]) -> dict[str, Any]:
    """One ``mmfuse compare`` with ``src`` first on the import path; its CPU time, wall time and accuracies."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    code = "import sys; from mmfuse.cli import main; sys.argv = ['mmfuse', *sys.argv[1:]]; main()"
    cmd = ["/usr/bin/time", "-v", sys.executable, "-c", code, "compare", "--out", str(out), *args]
    before = _load()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    after = _load()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")

    def field(name: str) -> float:
        match = re.search(rf"{re.escape(name)}: ([0-9.:]+)", proc.stderr)
        if match is None:
            raise RuntimeError(f"/usr/bin/time printed no {name!r}")
        value = match.group(1)
        if ":" in value:  # h:mm:ss or m:ss
            parts = [float(p) for p in value.split(":")]
            return sum(p * 60**i for i, p in enumerate(reversed(parts)))
        return float(value)

    with (out / "summary.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    accuracy = {r["fusion"]: float(r.get("accuracy_mean") or r.get("accuracy") or "nan") for r in rows}
    with (out / "results.csv").open(newline="") as fh:
        runs = {f"{r['fusion']}/{r['seed']}": float(r.get("accuracy") or "nan") for r in csv.DictReader(fh)}
    return {
        "source": str(src),
        "cpu_s": round(field("User time (seconds)") + field("System time (seconds)"), 1),
        "user_s": field("User time (seconds)"),
        "sys_s": field("System time (seconds)"),
        "wall_s": round(field("Elapsed (wall clock) time (h:mm:ss or m:ss)"), 1),
        "load_before": before,
        "load_after": after,
        "rows": len(rows),
        "min_accuracy": min(accuracy.values()) if accuracy else float("nan"),
        "accuracy": accuracy,
        "run_accuracy": runs,
    }


def same_runs(old: dict[str, float], new: dict[str, float], tol: float = 1e-6) -> str:
    """How many runs (fusion/seed) have the same test accuracy in both, and the largest difference."""
    common = sorted(set(old) & set(new))
    diffs = [abs(old[k] - new[k]) for k in common]
    equal = sum(d <= tol for d in diffs)
    return f"{equal} of {len(common)} runs with equal test accuracy (largest difference {max(diffs, default=0.0):.4f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", type=Path, required=True, help="Source folder (holding mmfuse/) of the old commit.")
    ap.add_argument("--dataset", default="basic-motions", help="Data set (mosi-utterance needs MMFUSE_DATA_DIR).")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--fusion", default="all")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    args = ap.parse_args()
    job = ["--dataset", args.dataset, "--jobs", str(args.jobs), "--fusion", args.fusion, "--seeds", str(args.seeds)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, src in (("old", args.old), ("new", ROOT / "src")):
            out = Path(tmp) / name
            results[name] = run_job(src, out, job)
            shutil.rmtree(out, ignore_errors=True)
            print(json.dumps({name: results[name]}), flush=True)
    ratio = results["old"]["cpu_s"] / results["new"]["cpu_s"]
    print(
        f"main job (compare {' '.join(job)}): old {results['old']['cpu_s']} s CPU, new {results['new']['cpu_s']} s "
        f"CPU ({ratio:.2f}x less); min row accuracy old {results['old']['min_accuracy']:.3f}, new "
        f"{results['new']['min_accuracy']:.3f}; load {results['old']['load_before']} -> {results['new']['load_after']}"
    )
    print(same_runs(results["old"]["run_accuracy"], results["new"]["run_accuracy"]))
    if args.json is not None:
        args.json.write_text(json.dumps({**results, "cpu_ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
