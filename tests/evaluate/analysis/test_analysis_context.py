"""The ablation switches categorical context off when the models use it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from experiment_support import read_csv
from mmfuse.data import ModalitySpec, SequenceRecord, TaskSpec, write_dataset
from mmfuse.evaluate.analysis import AnalysisConfig, analyze_run
from mmfuse.evaluate.compare import CompareConfig, compare
from mmfuse.types import LabelLevel, TaskType


@pytest.mark.slow
def test_context_off_column_when_the_label_lives_in_the_context(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    records = [
        SequenceRecord(
            id=f"r{i:02d}",
            group=f"g{i}",
            split=("train", "train", "val", "test")[(i // 2) % 4],
            values={"a": rng.normal(size=(3, 2)).astype(np.float32)},  # noise: only the context tells the label
            masks={"a": np.ones(3, dtype=bool)},
            label=i % 2,
            context={"domain": ("vlog", "interview")[i % 2]},
        )
        for i in range(48)
    ]
    ds = tmp_path / "ctx"
    write_dataset(
        ds,
        records,
        name="toy-ctx",
        modalities=[ModalitySpec("a", 2)],
        task=TaskSpec(TaskType.CLASSIFICATION, LabelLevel.SAMPLE, class_names=("n", "p")),
    )
    run = tmp_path / "run"
    compare(
        CompareConfig(
            dataset=str(ds),
            fusions=["concat"],
            seeds=1,
            epochs=15,
            out_dir=str(run),
            model_overrides={"hidden": 8, "context_mode": "add"},
            train_overrides={"lr": 0.03, "batch_size": 8},
            device="cpu",
        )
    )
    analyze_run(run, config=AnalysisConfig(analyses=("ablation",)))
    rows = read_csv(run / "analysis" / "ablation.csv")
    score = {r["subset"]: float(r[next(k for k in r if k not in ("fusion", "seed", "subset"))]) for r in rows}
    assert score["a"] > 0.9  # all modalities present, context on
    assert score["context off"] < 0.75  # without the context the label is a guess
