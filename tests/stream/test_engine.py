import numpy as np
import pytest
import torch

from mmfuse.errors import StreamError
from mmfuse.models import ModelConfig, build_model
from mmfuse.stream import IncrementalModel, split_states, stack_states
from mmfuse.types import Batch

CASES = [
    ("gru", "concat"),
    ("lstm", "gated"),
    ("conv", "weighted"),
    ("transformer", "concat"),
    ("none", "cross_attention"),
    ("gru", "cross_attention"),
    ("conv", "gated"),
]


def _recording(t=30, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = {"acc": torch.randn(t, 3, generator=g), "gyro": torch.randn(t, 2, generator=g)}
    m = {"acc": torch.rand(t, generator=g) > 0.2, "gyro": torch.rand(t, generator=g) > 0.4}
    m["gyro"][5:12] = False  # a gap
    return x, m


def _stepped(engine, x, m):
    state = engine.init_state(1)
    outs = []
    for k in range(m["acc"].shape[0]):
        out, state = engine.step({n: x[n][k : k + 1] for n in x}, {n: m[n][k : k + 1] for n in m}, state)
        outs.append(out[0])
    return torch.stack(outs)


@pytest.mark.parametrize(("encoder", "fusion"), CASES)
def test_steps_equal_offline_forward(encoder, fusion, make_model):
    model = make_model(encoder, fusion, layers=2 if encoder in ("conv", "transformer", "gru") else 1)
    engine = IncrementalModel(model)
    assert engine.incremental, engine.reason
    x, m = _recording()
    batch = Batch(
        inputs={n: v.unsqueeze(0) for n, v in x.items()},
        masks={n: v.unsqueeze(0) for n, v in m.items()},
        padding_mask=torch.ones(1, 30, dtype=torch.bool),
    )
    with torch.no_grad():
        offline = model(batch)[0]  # [T, C]
    stepped = _stepped(engine, x, m)
    torch.testing.assert_close(stepped, offline, atol=1e-5, rtol=1e-4)


def test_sample_level_last_pooling_equals_prefix_forward(make_model):
    model = make_model("gru", "gated", level="sample")
    engine = IncrementalModel(model)
    x, m = _recording(t=12)
    stepped = _stepped(engine, x, m)
    for t in (1, 7, 12):
        batch = Batch(
            inputs={n: v[:t].unsqueeze(0) for n, v in x.items()},
            masks={n: v[:t].unsqueeze(0) for n, v in m.items()},
            padding_mask=torch.ones(1, t, dtype=torch.bool),
        )
        with torch.no_grad():
            torch.testing.assert_close(stepped[t - 1], model(batch)[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(engine.run_offline(x, m), stepped, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("encoder", "fusion"), [("transformer", "cross_attention"), ("conv", "concat")])
def test_batched_streams_of_different_lengths_equal_single_streams(encoder, fusion, make_model):
    engine = IncrementalModel(make_model(encoder, fusion))
    x1, m1 = _recording(t=9, seed=2)
    x2, m2 = _recording(t=9, seed=3)
    # stream 1 starts 4 steps earlier: its cache is longer when the two are stacked
    s1 = engine.init_state(1)
    for k in range(4):
        _, s1 = engine.step({n: x1[n][k : k + 1] for n in x1}, {n: m1[n][k : k + 1] for n in m1}, s1)
    s2 = engine.init_state(1)
    state = stack_states([s1, s2])
    outs = []
    for k in range(5):
        inp = {n: torch.cat([x1[n][4 + k : 5 + k], x2[n][k : k + 1]]) for n in x1}
        msk = {n: torch.cat([m1[n][4 + k : 5 + k], m2[n][k : k + 1]]) for n in m1}
        out, state = engine.step(inp, msk, state)
        outs.append(out)
    both = torch.stack(outs, dim=1)  # [2, 5, C]
    torch.testing.assert_close(both[0], _stepped(engine, x1, m1)[4:9], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(both[1], _stepped(engine, x2, m2)[:5], atol=1e-5, rtol=1e-4)
    assert len(split_states(state)) == 2


def test_windowed_recompute_fallback_is_exact_within_the_window(make_model):
    model = make_model("gru", "concat")
    engine = IncrementalModel(model, max_history=50)
    engine.incremental, engine.reason = False, "forced for the test"
    x, m = _recording(t=20)
    torch.testing.assert_close(_stepped(engine, x, m), IncrementalModel(model).run_offline(x, m), atol=1e-5, rtol=1e-4)


def test_bounded_cache_keeps_memory_fixed(make_model):
    engine = IncrementalModel(make_model("transformer", "cross_attention"), max_history=5)
    x, m = _recording(t=12)
    state = engine.init_state(1)
    for k in range(12):
        _, state = engine.step({n: x[n][k : k + 1] for n in x}, {n: m[n][k : k + 1] for n in m}, state)
    assert all(v.shape[1] == 5 for key, v in state.items() if key.startswith("cache."))


def test_non_causal_model_is_refused():
    model = build_model(ModelConfig({"a": 2}, out_dim=2, hidden=8))
    with pytest.raises(StreamError, match="causal"):
        IncrementalModel(model)


def test_wrong_inputs_are_named(make_model):
    engine = IncrementalModel(make_model())
    state = engine.init_state(1)
    with pytest.raises(StreamError, match="exactly the modalities"):
        engine.step({"acc": torch.zeros(1, 3)}, {"acc": torch.ones(1, dtype=torch.bool)}, state)
    with pytest.raises(StreamError, match="'gyro'"):
        engine.step(
            {"acc": torch.zeros(1, 3), "gyro": torch.zeros(1, 5)},
            {"acc": torch.ones(1, dtype=torch.bool), "gyro": torch.ones(1, dtype=torch.bool)},
            state,
        )
    assert np.isfinite(0)
