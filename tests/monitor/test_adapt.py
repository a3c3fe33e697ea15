import numpy as np
import pytest
import torch

from mmfuse.data import SequenceRecord
from mmfuse.models import ModelConfig, build_model
from mmfuse.monitor import ContinualAdapter, adapt_model


def _records(rng, n, offset=0.0, prefix="r"):
    out = []
    for i in range(n):
        label = int(rng.integers(0, 2))
        acc = rng.normal(size=(6, 2)).astype(np.float32)
        acc[:, 0] += (1.5 if label else -1.5) + offset
        acc[:, 1] += 2.0 * offset  # the new conditions show in a second feature too (a learnable context)
        gyro = rng.normal(size=(6, 1)).astype(np.float32)
        out.append(
            SequenceRecord(
                id=f"{prefix}{i}",
                group="g",
                split="train",
                values={"acc": acc, "gyro": gyro},
                masks={"acc": np.ones(6, bool), "gyro": np.ones(6, bool)},
                label=label,
            )
        )
    return out


def test_adaptation_recovers_accuracy_on_shifted_data_without_forgetting():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_model(ModelConfig({"acc": 2, "gyro": 1}, out_dim=2, hidden=8, encoder="none", dropout=0.0))
    reference = _records(rng, 80)
    model = adapt_model(model, reference, reference[:5], epochs=15, lr=1e-2, replay_ratio=0.0).model  # train
    recent = _records(rng, 40, offset=3.0, prefix="n")  # the sensor now reads 3 units higher
    result = adapt_model(model, recent, reference, epochs=25, lr=1e-2, seed=0)
    assert result.before["reference"]["accuracy"] > 0.9
    assert result.before["recent"]["accuracy"] < 0.8
    assert result.after["recent"]["accuracy"] >= result.before["recent"]["accuracy"] + 0.2
    assert result.after["reference"]["accuracy"] > 0.8  # replay keeps the old conditions
    assert result.model is not model and result.n_replay == result.n_recent_train
    assert set(result.to_dict()) == {"before", "after", "n_recent_train", "n_replay", "epochs"}


def test_adapter_buffers_and_refuses_too_little_data():
    rng = np.random.default_rng(1)
    model = build_model(ModelConfig({"acc": 2, "gyro": 1}, out_dim=2, hidden=8, encoder="none"))
    adapter = ContinualAdapter(model, _records(rng, 10), buffer_size=6, min_sequences=4, epochs=1)
    for r in _records(rng, 3):
        adapter.add(r)
    assert not adapter.ready
    with pytest.raises(ValueError, match="it needs 4"):
        adapter.adapt()
    for r in _records(rng, 5):
        adapter.add(r)
    assert len(adapter.buffer) == 6
    adapter.adapt()
    assert adapter.model is not model and len(adapter.history) == 1
    with pytest.raises(ValueError, match="SequenceRecord"):
        adapter.add("nope")
