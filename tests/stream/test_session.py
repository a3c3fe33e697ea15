import numpy as np
import pytest
import torch

from mmfuse.align import Stream, Timeline, align
from mmfuse.errors import StreamError
from mmfuse.models import save_model
from mmfuse.preprocess import ModalityNormalizers, ZScoreNormalizer
from mmfuse.stream import StreamConfig, StreamingSession, StreamSpec, save_stream_config, step_sessions
from mmfuse.types import Batch


def _streams(rng, seconds=3.0):
    ta = np.arange(0, seconds, 0.02)
    tg = np.arange(0, seconds, 0.05)
    tg = tg[(tg < 0.93) | (tg > 1.6)]  # a gyroscope gap (no step lies within the tolerance of its first edge)
    return {
        "acc": Stream.create("acc", ta, rng.normal(2.0, 3.0, size=(ta.size, 3))),
        "gyro": Stream.create("gyro", tg, rng.normal(size=(tg.size, 2))),
    }


def _config():
    return StreamConfig(
        rate=10.0, specs={"acc": StreamSpec(3, rate=50.0), "gyro": StreamSpec(2, rate=20.0)}, lateness=0.2
    )


def _normalizers(streams):
    return ModalityNormalizers({"acc": ZScoreNormalizer(), "gyro": ZScoreNormalizer()}).fit_arrays(
        {m: (s.values, None) for m, s in streams.items()}
    )


def _offline(model, streams, norms, end):
    aligned = align(streams, Timeline.grid(10.0, 0.0, end), tolerance={"acc": 0.02, "gyro": 0.05})
    x = norms.transform_arrays({m: (aligned[m].values, aligned[m].mask) for m in streams})
    t = len(aligned)
    batch = Batch(
        inputs={m: torch.from_numpy(np.asarray(x[m], dtype=np.float32)).unsqueeze(0) for m in streams},
        masks={m: torch.from_numpy(aligned[m].mask).unsqueeze(0) for m in streams},
        padding_mask=torch.ones(1, t, dtype=torch.bool),
    )
    with torch.no_grad():
        return torch.softmax(model(batch)[0], dim=-1).numpy(), aligned


def _replay(session, streams, rng):
    events = sorted((s.timestamps[i] + rng.uniform(0, 0.1), m, i) for m, s in streams.items() for i in range(len(s)))
    results = []
    for k, (_, m, i) in enumerate(events):
        session.push(m, streams[m].timestamps[i], streams[m].values[i])
        if k % 5 == 0:
            results += session.poll()
    return results + session.finish()


@pytest.mark.parametrize(
    ("encoder", "fusion"), [("gru", "gated"), ("conv", "concat"), ("transformer", "cross_attention")]
)
def test_streaming_outputs_equal_the_offline_model_on_the_same_recording(rng, make_model, encoder, fusion):
    model = make_model(encoder, fusion)
    streams = _streams(rng)
    norms = _normalizers(streams)
    session = StreamingSession(model, _config(), normalizers=norms, start=0.0)
    results = _replay(session, streams, rng)
    offline, aligned = _offline(model, streams, norms, end=2.9)
    live = np.stack([r.raw for r in results])
    assert len(results) == len(aligned)
    np.testing.assert_allclose(live, offline, atol=1e-5)
    assert [r.masks["gyro"] for r in results] == aligned["gyro"].mask.tolist()
    assert not all(r.masks["gyro"] for r in results)  # the gap reached the model as missing


def test_batched_sessions_equal_single_sessions(rng, make_model):
    model = make_model("gru", "concat")
    solo, batched = [], []
    for seed in range(3):
        streams = _streams(np.random.default_rng(seed), seconds=1.0 + seed)
        s = StreamingSession(model, _config(), start=0.0)
        for m, st in streams.items():
            s.push_many(m, st.timestamps, st.values)
        solo.append(s.finish())
        batched.append(streams)
    sessions = [StreamingSession(solo_engine := StreamingSession(model, _config()).engine, _config(), start=0.0)]
    sessions += [StreamingSession(solo_engine, _config(), start=0.0) for _ in range(2)]
    for s, streams in zip(sessions, batched, strict=True):
        for m, st in streams.items():
            s.push_many(m, st.timestamps, st.values)
        s.collect(flush=True)
    out = step_sessions(sessions)
    for a, b in zip(solo, out, strict=True):
        np.testing.assert_allclose(np.stack([r.raw for r in a]), np.stack([r.raw for r in b]), atol=1e-5)


def test_from_dir_reads_model_normalizers_and_stream_config(tmp_path, rng, make_model):
    model = make_model("conv", "weighted", level="sample")
    streams = _streams(rng)
    save_model(model, tmp_path)
    _normalizers(streams).save(tmp_path)
    save_stream_config(tmp_path, _config())
    session = StreamingSession.from_dir(tmp_path, start=0.0)
    assert session.config.rate == 10.0 and session.normalizers is not None
    results = _replay(session, streams, rng)
    offline = session.run_recording(_window(streams, session))  # the vectorised whole-recording path
    np.testing.assert_allclose(np.stack([r.raw for r in results]), offline["raw"], atol=1e-5)
    np.testing.assert_allclose(np.stack([r.stable for r in results]), offline["stable"], atol=1e-5)


def _window(streams, session):
    fresh = StreamingSession(session.engine, session.config, normalizers=session.normalizers, start=0.0)
    for m, st in streams.items():
        fresh.push_many(m, st.timestamps, st.values)
    return fresh.buffer.flush()


def test_session_refuses_mismatched_specs(make_model):
    model = make_model()
    bad = StreamConfig(rate=10.0, specs={"acc": StreamSpec(3, rate=10.0)})
    with pytest.raises(StreamError, match="modalities"):
        StreamingSession(model, bad)
    bad = StreamConfig(rate=10.0, specs={"acc": StreamSpec(4, rate=10.0), "gyro": StreamSpec(2, rate=10.0)})
    with pytest.raises(StreamError, match="dim 4"):
        StreamingSession(model, bad)


def test_from_dir_without_stream_config_needs_a_rate(tmp_path, make_model):
    save_model(make_model(), tmp_path)
    with pytest.raises(StreamError, match="rate"):
        StreamingSession.from_dir(tmp_path)
    assert StreamingSession.from_dir(tmp_path, rate=5.0).config.specs["acc"].effective_tolerance == 0.2


def test_collect_sessions_with_merged_alignment_equals_each_session_alone(make_model):
    """The server path (collect_sessions + step_sessions, shared normalisers) == every session polled alone."""
    from mmfuse.stream import collect_sessions

    model = make_model("conv", "concat")
    recs = [_streams(np.random.default_rng(seed), seconds=2.0) for seed in range(4)]
    norms = _normalizers(recs[0])
    engine = StreamingSession(model, _config()).engine
    shared = [StreamingSession(engine, _config(), normalizers=norms, start=0.0) for _ in recs]
    alone = [StreamingSession(model, _config(), normalizers=norms, start=0.0) for _ in recs]
    got = [[] for _ in recs]
    want = [[] for _ in recs]
    for k in range(100):  # 20 ms ticks: every session gets its samples of the tick, then one server round
        lo, hi = k * 0.02 - 1e-9, (k + 1) * 0.02 - 1e-9
        for j, streams in enumerate(recs):
            for m, st in streams.items():
                sel = (st.timestamps >= lo) & (st.timestamps < hi)
                if sel.any():
                    shared[j].push_many(m, st.timestamps[sel], st.values[sel])
                    alone[j].push_many(m, st.timestamps[sel], st.values[sel])
        collect_sessions(shared)
        for j, res in enumerate(step_sessions(shared)):
            got[j] += res
        for j, s in enumerate(alone):
            want[j] += s.poll()
    for a, b in zip(got, want, strict=True):
        assert len(a) == len(b) > 15
        assert [r.index for r in a] == [r.index for r in b]
        assert [r.masks for r in a] == [r.masks for r in b]
        np.testing.assert_allclose(np.stack([r.raw for r in a]), np.stack([r.raw for r in b]), atol=1e-5)
        np.testing.assert_allclose(np.stack([r.stable for r in a]), np.stack([r.stable for r in b]), atol=1e-5)
    assert not all(r.masks["gyro"] for r in got[0])  # the gyroscope gap reached the model as missing
