from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run faster on one intra-op thread (two threads spin against each other on a busy 2-core box)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def toy_dataset(tmp_path_factory: pytest.TempPathFactory):
    """A tiny native data set (48 train / 16 val sequences of 4-8 steps, two modalities, two classes).

    The class is the sign of the mean of feature 0 of modality ``a``; ``b`` is noise and sometimes missing.
    """
    from mmfuse.data import ModalitySpec, SequenceRecord, TaskSpec, open_dataset, write_dataset

    rng = np.random.default_rng(0)
    records = []
    for i in range(64):
        t = int(rng.integers(4, 9))
        y = int(rng.integers(0, 2))
        a = (rng.normal(size=(t, 3)) * 0.3).astype(np.float32)
        a[:, 0] += 1.0 if y else -1.0
        b = rng.normal(size=(t, 2)).astype(np.float32)
        b_mask = rng.random(t) > 0.2
        records.append(
            SequenceRecord(
                id=f"r{i:02d}",
                group=f"g{i % 8}",
                split="train" if i < 48 else "val",
                values={"a": a, "b": b},
                masks={"a": np.ones(t, dtype=bool), "b": b_mask},
                label=y,
            )
        )
    path = Path(tmp_path_factory.mktemp("toy")) / "toy"
    write_dataset(
        path,
        records,
        name="toy",
        modalities=[ModalitySpec("a", 3), ModalitySpec("b", 2)],
        task=TaskSpec(type="classification", level="sample", class_names=("neg", "pos")),
    )
    return open_dataset(path)
