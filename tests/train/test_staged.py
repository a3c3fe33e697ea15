"""The staged recipe: an expert trained first, its features cached, then the fusion; no held-out item is learnt from."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from mmfuse.data import ModalitySpec, SequenceRecord, TaskSpec, open_dataset, write_dataset
from mmfuse.errors import DataError
from mmfuse.models import ModelConfig, MultimodalModel, build_model
from mmfuse.train import ExpertStage, TrainConfig, fit_staged
from mmfuse.train.staged import expert_features
from mmfuse.types import LabelLevel, TaskType

SPLITS = ("train", "train", "train", "val", "test")


def _records(n: int) -> list[SequenceRecord]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        t = 6
        label = rng.integers(0, 2, t)
        a = rng.normal(size=(t, 3)).astype(np.float32) + (2.0 * label[:, None] - 1.0)  # 'a' carries the label
        b = rng.normal(size=(t, 2)).astype(np.float32)
        out.append(
            SequenceRecord(
                id=f"s{i:02d}",
                group=f"g{i}",
                split=SPLITS[i % len(SPLITS)],
                values={"a": a, "b": b},
                masks={"a": np.ones(t, dtype=bool), "b": np.ones(t, dtype=bool)},
                label=label,
            )
        )
    return out


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("staged") / "toy"
    write_dataset(
        path,
        _records(20),
        name="toy-staged",
        modalities=[ModalitySpec("a", 3), ModalitySpec("b", 2)],
        task=TaskSpec(TaskType.CLASSIFICATION, LabelLevel.STEP, class_names=("neg", "pos")),
    )
    return path


@pytest.fixture
def optimiser_batches(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[tuple[str, ...], list[str]]]]:
    """(model modalities, sequence ids) of every batch whose loss reaches ``optimizer.step``, in order.

    A training-mode forward with gradients records its batch; the optimiser's step pre-hook files the last
    recorded batch under the stage that computed it.
    """
    steps: list[tuple[tuple[str, ...], list[str]]] = []
    last: dict[str, Any] = {}
    forward = MultimodalModel.forward

    def recording_forward(self: MultimodalModel, batch: Any) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            last["batch"] = (tuple(sorted(self.modalities)), list(batch.ids))
        return forward(self, batch)

    def on_step(optimizer: Any, args: Any, kwargs: Any) -> None:
        steps.append(last.pop("batch"))  # a step without a training forward before it fails here

    monkeypatch.setattr(MultimodalModel, "forward", recording_forward)
    handle = register_optimizer_step_pre_hook(on_step)
    try:
        yield steps
    finally:
        handle.remove()


def _fit(toy: Path, out: Path, **changes: Any) -> Any:
    ds = open_dataset(toy)
    kwargs: dict[str, Any] = {
        "experts": ExpertStage("a", model={"hidden": 8}, train=TrainConfig(epochs=3, lr=0.03, batch_size=4, seed=0)),
        "fusion": {"fusion": "concat", "hidden": 8},
        "fusion_train": TrainConfig(epochs=3, lr=0.03, batch_size=4, seed=0),
        "test": ds.split("test"),
        "out_dir": out,
    }
    kwargs.update(changes)
    return fit_staged(ds.split("train"), ds.split("val"), **kwargs)


def test_no_validation_or_test_item_reaches_any_optimiser(
    toy: Path, tmp_path: Path, optimiser_batches: list[tuple[tuple[str, ...], list[str]]]
) -> None:
    result = _fit(toy, tmp_path / "run")
    ds = open_dataset(toy)
    train_ids = set(ds.split("train").ids)
    held_out = set(ds.split("val").ids) | set(ds.split("test").ids)
    stages = {modalities for modalities, _ in optimiser_batches}
    assert stages == {("a",), ("a_expert", "b")}, stages  # both stages stepped: the expert, then the fusion
    seen = {i for _, ids in optimiser_batches for i in ids}
    assert seen == train_ids  # every training sequence was learnt from ...
    assert not seen & held_out  # ... and no validation or test sequence, in any stage
    expert_steps = [ids for modalities, ids in optimiser_batches if modalities == ("a",)]
    assert len(expert_steps) == 3 * 3  # 3 epochs x ceil(12 / 4) batches: the expert read no validation data
    # The fusion stage read the cached features: the expert's representation of each sequence, split kept.
    feats = result.features
    assert sorted(feats.modalities) == ["a_expert", "b"] and feats.modalities["a_expert"].dim == 8
    assert sorted(feats.split_names) == ["test", "train", "val"]
    rec = feats.split("val")[0]
    original = ds[ds.ids.index(rec.id)]
    expert = result.expert_models["a_expert"]
    np.testing.assert_allclose(rec.values["a_expert"], expert_features(expert, [original])[0], rtol=1e-5, atol=1e-6)
    assert result.fusion.epochs_run == 3 and "val_loss" in result.fusion.history[-1]


def _alone(expert: MultimodalModel, rec: SequenceRecord) -> np.ndarray:
    """The expert's features of one sequence in a batch of its own: no padding (the per-sequence reference)."""
    inputs = {m: torch.as_tensor(np.where(rec.masks[m][:, None], rec.values[m], 0.0))[None] for m in rec.values}
    masks = {m: torch.as_tensor(rec.masks[m])[None] for m in rec.values}  # [1, T]
    with torch.no_grad():
        encoded = expert.encode(inputs, masks, torch.ones(1, len(rec), dtype=torch.bool))  # {m: [1, T, H]}
        return expert.fuse(encoded, masks)[0].numpy()  # [T, H]


@pytest.mark.parametrize(
    "settings",
    [
        {"encoder": "gru"},
        {"encoder": "gru", "bidirectional": True},  # the backward pass must start at the last real step
        {"encoder": "lstm", "bidirectional": True},
        {"encoder": "transformer"},  # padded keys must get no attention
        {"encoder": "conv"},  # the kernel must not read padding as steps
        {"encoder": "none"},
        {"encoder": "gru", "fusion": "late"},  # decision level: [T, C]
    ],
    ids=lambda s: "-".join(str(v) for v in s.values()),
)
def test_batched_features_equal_each_sequence_alone(settings: dict[str, Any]) -> None:
    rng = np.random.default_rng(0)
    records = []
    for i, t in enumerate([5, 1, 9, 3, 9, 2, 7]):
        present = rng.random(t) > 0.3
        values = rng.normal(size=(t, 3)).astype(np.float32)
        values[~present] = np.nan  # never read: missing steps are zeroed before the expert sees them
        records.append(SequenceRecord(f"s{i}", "g", "train", {"a": values}, {"a": present}, 0))
    torch.manual_seed(0)
    expert = build_model(ModelConfig({"a": 3}, out_dim=2, hidden=8, dropout=0.3, **settings)).train()
    batched = expert_features(expert, records, batch_size=3)  # lengths 1-9 padded together, in 3 batches
    assert expert.training  # its mode is restored
    expert.eval()
    for rec, got in zip(records, batched, strict=True):
        want = _alone(expert, rec)
        assert got.shape == want.shape and got.dtype == np.float32 and np.isfinite(got).all()
        assert torch.allclose(torch.from_numpy(got), torch.from_numpy(want), rtol=1e-5, atol=1e-6), rec.id
    assert expert_features(expert, []) == []


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_a_bad_feature_batch_size_is_refused(bad: Any) -> None:
    expert = build_model(ModelConfig({"a": 3}, out_dim=2, hidden=4))
    with pytest.raises(ValueError, match=rf"'batch_size' parameter of expert_features .* Got {bad!r}"):
        expert_features(expert, [], batch_size=bad)


def test_the_features_are_cached_by_expert_weights_and_data(toy: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = _fit(toy, tmp_path / "one", cache_dir=cache)
    again = _fit(toy, tmp_path / "two", cache_dir=cache)  # the same seed and data give the same expert
    assert not first.reused_features and again.reused_features
    assert again.features.path == first.features.path
    other = _fit(
        toy,
        tmp_path / "three",
        cache_dir=cache,
        experts=ExpertStage("a", model={"hidden": 8}, train=TrainConfig(epochs=3, lr=0.03, batch_size=4, seed=1)),
    )
    assert not other.reused_features and other.features.path != first.features.path
    assert len(list(cache.iterdir())) == 2


def test_train_data_that_share_an_item_with_validation_are_refused(toy: Path, tmp_path: Path) -> None:
    ds = open_dataset(toy)
    leaky = ds.subset([i for i, s in enumerate(ds.splits) if s in ("train", "val")])
    with pytest.raises(DataError, match=r"share 4 sequence id\(s\) with 'val'"):
        fit_staged(leaky, ds.split("val"), ExpertStage("a"), out_dir=tmp_path)


@pytest.mark.parametrize(
    ("experts", "message"),
    [
        (ExpertStage("c"), "The expert's modality 'c' is not in data set 'toy-staged'"),
        (ExpertStage("a", name="b"), r"feature names \['b'\] must be distinct and new"),
        ([], "must name at least one ExpertStage"),
    ],
)
def test_invalid_experts_are_refused(toy: Path, tmp_path: Path, experts: Any, message: str) -> None:
    ds = open_dataset(toy)
    with pytest.raises(ValueError, match=message):
        fit_staged(ds.split("train"), ds.split("val"), experts, out_dir=tmp_path)


def test_an_expert_may_not_set_what_the_data_set_decides() -> None:
    with pytest.raises(ValueError, match=r"must not set \['out_dim'\]"):
        ExpertStage("a", model={"out_dim": 3})
