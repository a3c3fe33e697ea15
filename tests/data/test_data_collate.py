from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _data_testing import CLS_SAMPLE, MODALITIES, make_record, records

from mmfuse.data import IGNORE_INDEX, SequenceRecord, TaskSpec, collate, make_loader, open_dataset, write_dataset
from mmfuse.errors import DataError
from mmfuse.types import Batch


def test_pads_to_longest_and_zeroes_masked_values() -> None:
    recs = [make_record(0, 2), make_record(1, 5), make_record(2, 3)]
    recs[1].masks["audio"][:] = [True, False, True, False, True]
    recs[1].values["audio"][1] = np.nan  # NaN at a masked step must not leak
    b = collate(recs)
    assert isinstance(b, Batch)
    assert b.inputs["audio"].shape == (3, 5, 3) and b.inputs["video"].shape == (3, 5, 2)
    assert b.inputs["audio"].dtype == torch.float32 and b.masks["audio"].dtype == torch.bool
    assert b.padding_mask.tolist() == [
        [True, True, False, False, False],
        [True] * 5,
        [True, True, True, False, False],
    ]
    assert torch.isfinite(b.inputs["audio"]).all()
    assert (b.inputs["audio"][1, 1] == 0).all() and (b.inputs["audio"][1, 3] == 0).all()
    np.testing.assert_array_equal(b.inputs["audio"][1, 4].numpy(), recs[1].values["audio"][4])
    for m in ("audio", "video"):
        assert not (b.masks[m] & ~b.padding_mask).any()  # masks are False at padding
        assert (b.inputs[m][~b.padding_mask] == 0).all()
    assert b.targets is not None and b.targets.dtype == torch.int64 and b.targets.tolist() == [0, 1, 2]
    assert b.ids == ["s0", "s1", "s2"] and b.groups == ["g0", "g1", "g2"] and b.context == {}


def test_step_level_targets_padding() -> None:
    cls = [make_record(0, 2, label=np.array([1, 0])), make_record(1, 4, label=np.array([0, 1, 1, 0]))]
    t = collate(cls).targets
    assert t is not None and t.dtype == torch.int64
    assert t.tolist() == [[1, 0, IGNORE_INDEX, IGNORE_INDEX], [0, 1, 1, 0]]
    reg = [
        make_record(0, 2, label=np.array([0.5, 1.5], np.float32)),
        make_record(1, 3, label=np.array([1.0, 2.0, 3.0], np.float32)),
    ]
    t = collate(reg).targets
    assert t is not None and t.dtype == torch.float32 and t.tolist() == [[0.5, 1.5, 0.0], [1.0, 2.0, 3.0]]
    vec = [make_record(0, 2, label=np.ones((2, 2))), make_record(1, 1, label=np.full((1, 2), 3.0))]
    t = collate(vec, task=TaskSpec("regression", "step", target_dim=2)).targets
    assert t is not None and t.shape == (2, 2, 2) and t[1, 1].tolist() == [0.0, 0.0] and t[1, 0].tolist() == [3.0, 3.0]


def test_sample_level_regression_targets() -> None:
    recs = [make_record(0, 3, label=0.25), make_record(1, 2, label=-1.0)]
    t = collate(recs).targets
    assert t is not None and t.dtype == torch.float32 and t.tolist() == [0.25, -1.0]
    # a vector target whose size differs from T is read as sample level
    recs = [make_record(0, 3, label=np.array([1.0, 2.0])), make_record(1, 4, label=np.array([3.0, 4.0]))]
    t = collate(recs).targets
    assert t is not None and t.shape == (2, 2)


def test_task_overrides_inference() -> None:
    # T == C == 2 is ambiguous; the task decides
    recs = [make_record(0, 2, label=np.array([1.0, 2.0])), make_record(1, 2, label=np.array([3.0, 4.0]))]
    t = collate(recs, task=TaskSpec("regression", "sample", target_dim=2)).targets
    assert t is not None and t.shape == (2, 2)


def test_context_uses_vocabulary_and_needs_it() -> None:
    recs = [make_record(i, 2, context={"site": s}) for i, s in enumerate(["b", "a", "b"])]
    b = collate(recs, context_vocab={"site": ("a", "b", "c")})
    assert b.context["site"].dtype == torch.int64 and b.context["site"].tolist() == [1, 0, 1]
    with pytest.raises(DataError, match="no 'context_vocab' was given"):
        collate(recs)
    with pytest.raises(DataError, match=r"sample 's0' has context site='b', which is not in the vocabulary"):
        collate(recs, context_vocab={"site": ("a",)})


def test_collate_errors() -> None:
    with pytest.raises(DataError, match="empty list of records"):
        collate([])
    a = make_record(0, 2)
    b = make_record(1, 2)
    del b.values["video"]
    with pytest.raises(DataError, match=r"sample 's1' has modalities \['audio'\]"):
        collate([a, b])


def test_make_loader_is_seeded_and_uses_dataset_vocab(tmp_path: Path) -> None:
    recs = [make_record(i, 2 + i % 4, split="train", context={"site": f"x{i % 2}"}) for i in range(12)]
    ds = open_dataset(write_dataset(tmp_path / "d", recs, name="t", modalities=MODALITIES, task=CLS_SAMPLE))

    def order(seed: int) -> list[str]:
        return [i for batch in make_loader(ds, batch_size=5, shuffle=True, seed=seed) for i in batch.ids]

    assert order(3) == order(3)
    assert order(3) != order(4)
    assert sorted(order(3)) == sorted(ds.ids)
    batches = list(make_loader(ds, batch_size=5))
    assert [b.batch_size for b in batches] == [5, 5, 2]
    assert batches[0].context["site"].tolist() == [0, 1, 0, 1, 0]
    assert len(list(make_loader(ds, batch_size=5, drop_last=True))) == 2
    with pytest.raises(ValueError, match="'batch_size' parameter of make_loader"):
        make_loader(ds, batch_size=0)


def test_loader_with_worker_process(tmp_path: Path) -> None:
    ds = open_dataset(write_dataset(tmp_path / "d", records(4), name="t", modalities=MODALITIES, task=CLS_SAMPLE))
    ids = [i for b in make_loader(ds, batch_size=2, num_workers=1) for i in b.ids]
    assert ids == ds.ids


def test_dataset_collate_fn_matches_collate(tmp_path: Path) -> None:
    ds = open_dataset(write_dataset(tmp_path / "d", records(3), name="t", modalities=MODALITIES, task=CLS_SAMPLE))
    items: list[SequenceRecord] = [ds[i] for i in range(3)]
    a, b = ds.collate_fn(items), collate(items)
    assert torch.equal(a.inputs["audio"], b.inputs["audio"]) and torch.equal(a.targets, b.targets)
