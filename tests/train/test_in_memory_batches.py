"""Data sets that fit in memory are collated once: the same batches, order and losses as the streaming loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmfuse.data import ModalitySpec, SequenceRecord, TaskSpec, make_loader, open_dataset, write_dataset
from mmfuse.models import ModelConfig, build_model
from mmfuse.train import TrainConfig, Trainer, _data, seed_everything
from mmfuse.train._data import BatchSource


@pytest.fixture(scope="module")
def step_dataset(tmp_path_factory: pytest.TempPathFactory):
    """Step-level regression with lengths 3-9 and a context column: padding and step targets must match."""
    rng = np.random.default_rng(1)
    records = []
    for i in range(23):
        t = int(rng.integers(3, 10))
        records.append(
            SequenceRecord(
                id=f"s{i:02d}",
                group=f"g{i % 5}",
                split="train",
                values={"a": rng.normal(size=(t, 2)).astype(np.float32)},
                masks={"a": rng.random(t) > 0.1},
                label=rng.normal(size=t).astype(np.float32),
                context={"site": "x" if i % 3 else "y"},
            )
        )
    path = tmp_path_factory.mktemp("step") / "d"
    write_dataset(path, records, name="d", modalities=[ModalitySpec("a", 2)], task=TaskSpec("regression", "step"))
    return open_dataset(path)


def _same(a, b) -> bool:
    tensors = [(x.padding_mask, y.padding_mask) for x, y in zip(a, b, strict=True)]
    tensors += [(x.targets, y.targets) for x, y in zip(a, b, strict=True)]
    for x, y in zip(a, b, strict=True):
        assert x.ids == y.ids and x.groups == y.groups and sorted(x.inputs) == sorted(y.inputs)
        tensors += [(x.inputs[k], y.inputs[k]) for k in x.inputs] + [(x.masks[k], y.masks[k]) for k in x.masks]
        tensors += [(x.context[k], y.context[k]) for k in x.context]
    return all(u.shape == v.shape and u.dtype == v.dtype and torch.equal(u, v) for u, v in tensors)


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("batch_size", [4, 5, 64])
@pytest.mark.parametrize("which", ["toy", "step"])
def test_indexed_batches_equal_the_loaders(which, batch_size, shuffle, toy_dataset, step_dataset):
    data = (toy_dataset if which == "toy" else step_dataset).split("train")
    source = BatchSource(data, "train", batch_size=batch_size, shuffle=shuffle)
    assert source.in_memory
    for seed in (0, 3):
        assert _same(list(source.batches(seed)), list(make_loader(data, batch_size, shuffle=shuffle, seed=seed)))


def test_large_data_sets_stream(toy_dataset, monkeypatch):
    monkeypatch.setattr(_data, "IN_MEMORY_LIMIT_BYTES", 10)
    assert not BatchSource(toy_dataset, "train", batch_size=4, shuffle=True).in_memory
    assert not BatchSource([], "train", batch_size=4, shuffle=True).in_memory  # lists of batches are read as given


def test_fit_losses_equal_the_streaming_path(toy_dataset, monkeypatch):
    train, val = toy_dataset.split("train"), toy_dataset.split("val")
    cfg = TrainConfig(epochs=3, batch_size=5, lr=1e-2, device="cpu", patience=None)

    def fit() -> list[dict]:
        seed_everything(0)
        model = build_model(ModelConfig({"a": 3, "b": 2}, 2, hidden=8, dropout=0.1))
        return [{k: v for k, v in row.items() if k != "seconds"} for row in Trainer(cfg).fit(model, train, val).history]

    indexed = fit()
    monkeypatch.setattr(_data, "IN_MEMORY_LIMIT_BYTES", 0)  # force the streaming loader
    assert fit() == indexed  # identical, not merely close: the same batches in the same order
