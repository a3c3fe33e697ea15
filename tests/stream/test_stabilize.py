import math

import numpy as np
import pytest

from mmfuse.stream import Stabilizer, normalized_entropy, stability_metrics, stabilize, threshold_sweep


def _noisy_recording(rng, t=400):
    labels = np.repeat([0, 1, 0, 2], t // 4)
    logits = np.eye(3)[labels] * 1.5 + rng.normal(0, 1.0, size=(t, 3))
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True), labels


def test_vectorised_and_step_by_step_agree(rng):
    p, _ = _noisy_recording(rng)
    out = stabilize(p, alpha=0.2, threshold=0.9)
    st = Stabilizer(alpha=0.2, threshold=0.9)
    steps = [st.update(row) for row in p]
    np.testing.assert_allclose(np.stack([s for s, _ in steps]), out.stable, atol=1e-12)
    assert [h for _, h in steps] == out.held.tolist()
    assert 0 < out.held.mean() < 1


def test_ema_matches_the_recursion_by_hand():
    out = stabilize([0.0, 1.0, 1.0], uncertainty=[0, 0, 0], alpha=0.5)
    assert out.stable.tolist() == [0.0, 0.5, 0.75]
    held = stabilize([0.0, 1.0, 1.0], uncertainty=[0, 2, 0], alpha=0.5, threshold=1)
    assert held.stable.tolist() == [0.0, 0.0, 0.5] and held.held.tolist() == [False, True, False]


def test_stabilising_reduces_jitter_and_the_sweep_shows_the_trade_off(rng):
    p, labels = _noisy_recording(rng)
    rows = threshold_sweep(p, [0.8, 0.9, 0.95, 1.0], alpha=0.2, labels=labels)
    raw, rest = rows[0], rows[1:]
    assert math.isnan(raw["threshold"])
    assert all(r["flip_rate"] < raw["flip_rate"] / 2 for r in rest)
    assert all(r["jitter"] < raw["jitter"] for r in rest)
    held = [r["held_fraction"] for r in rest]
    assert held == sorted(held, reverse=True) and held[-1] == 0.0  # a lower threshold holds more
    assert rest[-1]["delay"] > raw["delay"]  # steadier is slower to follow a change
    assert rest[-1]["accuracy"] > raw["accuracy"]


def test_metrics_known_values():
    m = stability_metrics([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9]], labels=[0, 1, 1])
    assert m["accuracy"] == 1.0 and m["delay"] == 0.0 and m["flip_rate"] == 0.5
    m = stability_metrics([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9]], labels=[0, 1, 1])
    assert m["delay"] == 1.0
    assert normalized_entropy([[1 / 3] * 3])[0] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"alpha": 0.0}, "'alpha'"), ({"alpha": 1.5}, "'alpha'"), ({"threshold": float("nan")}, "'threshold'")],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        stabilize([[1.0, 0.0]], **kwargs)
    with pytest.raises(ValueError, match=match):
        Stabilizer(**kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="finite"):
        stabilize([[float("nan"), 0.0]])
    with pytest.raises(ValueError, match="uncertainty"):
        stabilize([[1.0, 0.0]], uncertainty=[0.1, 0.2])
