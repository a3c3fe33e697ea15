"""Record factories shared by the mmfuse.data tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mmfuse.data import ModalitySpec, SequenceRecord, TaskSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

MODALITIES = [ModalitySpec("audio", 3), ModalitySpec("video", 2, kind="embedding")]
CLS_SAMPLE = TaskSpec("classification", "sample", class_names=("a", "b", "c"))


def make_record(
    i: int,
    t: int,
    *,
    split: str = "train",
    label: object = None,
    seed: int = 0,
    timestamps: bool = True,
    context: dict[str, str] | None = None,
) -> SequenceRecord:
    rng = np.random.default_rng(seed * 1000 + i)
    audio = rng.normal(size=(t, 3)).astype(np.float32)
    video = rng.normal(size=(t, 2)).astype(np.float32)
    amask = rng.random(t) > 0.3
    vmask = np.ones(t, dtype=bool)
    return SequenceRecord(
        id=f"s{i}",
        group=f"g{i % 3}",
        split=split,
        values={"audio": audio, "video": video},
        masks={"audio": amask, "video": vmask},
        label=i % 3 if label is None else label,
        timestamps=np.arange(t) * 0.5 + i if timestamps else None,
        context=dict(context or {}),
    )


def records(n: int = 6, **kw: object) -> Iterator[SequenceRecord]:
    for i in range(n):
        yield make_record(i, 2 + i, split=("train", "val", "test")[i % 3], **kw)  # type: ignore[arg-type]
