"""Toy data sets on disk, and readers of result rows and MLflow runs, shared by the experiment tests."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmfuse.data import ModalitySpec, SequenceRecord, TaskSpec, write_dataset
from mmfuse.types import LabelLevel, TaskType


def write_shifted_toy(path: Path, *, name: str, n: int = 32, seed: int = 0, noise_modality: bool = False) -> Path:
    """Write ``n`` records of 4 steps whose class (``i % 2``) shifts modality 'a' (3 features) by -1 or +1.

    Records are split by pairs into train, train, val, test; the task is sample-level classification with the
    classes ``("n", "p")``. With ``noise_modality`` a second modality 'b' (2 features) of pure noise is added.

    Returns:
        ``path``, the data set folder.
    """
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        label = i % 2
        values = {"a": (rng.normal(size=(4, 3)) + 2 * label - 1).astype(np.float32)}
        if noise_modality:
            values["b"] = rng.normal(size=(4, 2)).astype(np.float32)
        records.append(
            SequenceRecord(
                id=f"r{i:02d}",
                group=f"g{i}",
                split=("train", "train", "val", "test")[(i // 2) % 4],
                values=values,
                masks={m: np.ones(4, dtype=bool) for m in values},
                label=label,
            )
        )
    modalities = [ModalitySpec("a", 3), *([ModalitySpec("b", 2)] if noise_modality else [])]
    task = TaskSpec(TaskType.CLASSIFICATION, LabelLevel.SAMPLE, class_names=("n", "p"))
    return write_dataset(path, records, name=name, modalities=modalities, task=task)


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header (results.csv, summary.csv, trials.csv)."""
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


TIMED_ANALYSIS_COLUMNS = ("latency_ms_median", "latency_ms_p95")
"""The complexity analysis's wall-clock measurements: never equal between two analyses of the same run."""


def analysis_outputs(run: Path) -> dict[str, Any]:
    """Every table, the report sections (the timed one left out), notes and runs of an analysed run directory.

    Two analyses of the same run (serial, on worker processes, on Ray) must give equal outputs.
    """

    def untimed(path: Path) -> list[dict[str, str]]:
        return [{k: v for k, v in row.items() if k not in TIMED_ANALYSIS_COLUMNS} for row in read_csv(path)]

    folder = run / "analysis"
    sections = json.loads((folder / "sections.json").read_text(encoding="utf-8"))
    sections["sections"] = [s for s in sections["sections"] if s["id"] != "analysis-complexity"]
    result = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    return {
        "tables": {p.name: untimed(p) for p in sorted(folder.glob("*.csv"))},
        "final_results": untimed(run / "final_results.csv"),
        "sections": sections,
        "result": {k: v for k, v in result.items() if k != "seconds"},
        "figures": sorted(p.name for p in folder.glob("*.png")),
    }


def without_time(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows without their 'train_seconds' column: a wall-clock time is never equal between two runs."""
    return [{k: v for k, v in row.items() if k != "train_seconds"} for row in rows]


def mlflow_runs(uri: str, experiment: str, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The MLflow runs of one experiment in the store at ``uri`` (needs the tracking extra)."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # mlflow.search_runs reads the store of the environment
    return list(mlflow.search_runs(experiment_names=[experiment], output_format="list"))
