import warnings

import numpy as np
import pytest

from mmfuse.align import Stream, Timeline, align
from mmfuse.errors import StreamError
from mmfuse.stream import AlignedWindow, FusionBuffer, LateEventWarning, StreamSpec


def _recording(rng, seconds=4.0):
    """Accelerometer at 50 Hz with jitter, gyroscope at 20 Hz, a speaking flag (discrete), words (intervals)."""
    ta = np.sort(np.arange(0, seconds, 0.02) + rng.uniform(-0.004, 0.004, int(seconds / 0.02)))
    tg = np.arange(0, seconds, 0.05)
    tw = np.arange(0.1, seconds - 0.5, 0.4)
    streams = {
        "acc": Stream.create("acc", ta, rng.normal(size=(ta.size, 3))),
        "gyro": Stream.create("gyro", tg, rng.normal(size=(tg.size, 2))),
        "speaking": Stream.create("speaking", tg[::2], (rng.random(tg[::2].size) > 0.5).astype(float), kind="discrete"),
        "words": Stream.create("words", tw, rng.normal(size=(tw.size, 4)), kind="interval", ends=tw + 0.25),
    }
    specs = {
        "acc": StreamSpec(3, tolerance=0.03),
        "gyro": StreamSpec(2, rate=20.0),
        "speaking": StreamSpec(1, kind="discrete", rate=10.0),
        "words": StreamSpec(4, kind="interval"),
    }
    tols = {"acc": 0.03, "gyro": 0.05, "speaking": 0.1, "words": 0.0}
    return streams, specs, tols


def _events(streams, rng, jitter):
    """Every sample as an event, in arrival order: its time (interval: end) plus a random delay."""
    rows = []
    for m, s in streams.items():
        for i in range(len(s)):
            stamp = s.ends[i] if s.ends is not None else s.timestamps[i]
            rows.append((stamp + rng.uniform(0, jitter), m, i))
    rows.sort()
    return rows


def _feed(buf, streams, events, poll_every=7):
    windows = []
    for k, (_, m, i) in enumerate(events):
        s = streams[m]
        buf.push(m, s.timestamps[i], s.values[i], None if s.ends is None else s.ends[i])
        if k % poll_every == 0:
            windows.append(buf.pop_ready())
    windows.append(buf.flush())
    return AlignedWindow.concat([w for w in windows if len(w)])


def test_live_windows_equal_offline_alignment_with_out_of_order_events(rng):
    streams, specs, tols = _recording(rng)
    events = _events(streams, rng, jitter=0.15)  # arrivals shuffled within 0.15 s
    buf = FusionBuffer(specs, rate=10.0, lateness=0.4, start=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is late within the bound
        live = _feed(buf, streams, events)
    # the last step before every stream's end can differ (live edge); compare up to the last acc sample
    offline = align(streams, Timeline.grid(10.0, 0.0, 3.7), tolerance=tols)
    n = len(offline)
    np.testing.assert_allclose(live.times[:n], offline.timeline.times)
    for m in streams:
        np.testing.assert_array_equal(live.masks[m][:n], offline[m].mask, err_msg=m)
        np.testing.assert_allclose(live.values[m][:n], offline[m].values, rtol=1e-6, atol=1e-6, err_msg=m)
        np.testing.assert_allclose(live.staleness[m][:n], offline[m].staleness, err_msg=m)
        np.testing.assert_array_equal(live.interpolated[m][:n], offline[m].interpolated, err_msg=m)
    assert sum(buf.dropped.values()) == 0
    assert max(buf.pending().values()) < 30  # old events are pruned


def test_late_events_are_counted_dropped_and_warned_once(rng):
    buf = FusionBuffer({"a": StreamSpec(1, rate=10.0)}, rate=10.0, lateness=0.1, start=0.0)
    buf.push_many("a", np.arange(0, 2.0, 0.1), np.arange(20.0))
    assert len(buf.pop_ready()) > 0
    with pytest.warns(LateEventWarning, match="'a'"):
        assert buf.push("a", 0.55, [100.0]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert buf.push("a", 0.45, [100.0]) == 0  # counted, no second warning
    assert buf.dropped == {"a": 2}
    assert buf.push("a", 2.05, [1.0]) == 1  # within the bound: accepted
    assert buf.stats()["dropped_late"] == {"a": 2}


def test_silent_sources_still_emit_missing_steps_with_now():
    buf = FusionBuffer({"a": StreamSpec(1, rate=10.0)}, rate=10.0, start=0.0)
    buf.push("a", 0.0, [1.0])
    w = buf.pop_ready(now=1.05)
    assert len(w) == 10 and w.masks["a"].tolist() == [True] + [False] * 9
    assert np.isinf(w.staleness["a"]).sum() == 0 and w.staleness["a"][5] == pytest.approx(0.5)


def test_memory_is_bounded_by_max_pending():
    buf = FusionBuffer({"a": StreamSpec(1, rate=10.0)}, rate=10.0, max_pending=100)
    buf.push_many("a", np.arange(1000) * 1e-4, np.zeros(1000))
    assert buf.pending()["a"] == 100 and buf.overflow["a"] == 900


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda b: b.push("nope", 0.0, [1.0]), "unknown modality 'nope'"),
        (lambda b: b.push("a", 0.0, [1.0, 2.0]), r"shape \[N, 1\]"),
        (lambda b: b.push("a", float("nan"), [1.0]), "finite"),
        (lambda b: b.push("a", 0.0, [float("inf")]), "feature 0"),
        (lambda b: b.push("a", 0.0, [1.0], end=1.0), "only allowed for interval"),
        (lambda b: b.push("w", 0.0, [1.0]), "need 'end'"),
        (lambda b: b.push("w", 1.0, [1.0], end=0.5), ">= its start"),
    ],
)
def test_bad_events_are_refused_with_a_clear_error(call, match):
    buf = FusionBuffer({"a": StreamSpec(1, rate=10.0), "w": StreamSpec(1, kind="interval")}, rate=10.0)
    with pytest.raises(StreamError, match=match):
        call(buf)
    assert buf.accepted == {"a": 0, "w": 0}


def test_bad_configuration_is_refused():
    with pytest.raises(StreamError, match="needs 'tolerance'"):
        StreamSpec(3)
    with pytest.raises(StreamError, match="'rate' parameter of FusionBuffer"):
        FusionBuffer({"a": StreamSpec(1, rate=1.0)}, rate=-1)
    with pytest.raises(StreamError, match="Unknown stream kind"):
        StreamSpec(1, kind="video", rate=1.0)


def test_live_edge_is_never_extrapolated():
    """The one documented difference: a step just after a sample, before a gap, is aligned with what is known."""
    s = Stream.create("a", [0.0, 0.1, 0.2, 0.95], [0.0, 1.0, 2.0, 9.5])
    offline = align({"a": s}, Timeline.grid(10.0, 0.0, 0.9), tolerance=0.1)
    buf = FusionBuffer({"a": StreamSpec(1, tolerance=0.1)}, rate=10.0, start=0.0)
    buf.push_many("a", s.timestamps[:3], s.values[:3])
    first = buf.pop_ready(now=0.35)  # steps 0.0 .. 0.2 are final; 0.3 is not yet (within the horizon)
    buf.push("a", 0.95, [9.5])
    live = AlignedWindow.concat([first, buf.pop_ready()])
    assert live.masks["a"][:3].all() and offline["a"].mask[3]  # offline interpolates 0.3 towards 0.95
    assert live.masks["a"][3]  # 0.3 was emitted after 0.95 arrived: the same as offline
    np.testing.assert_allclose(live.values["a"][:4, 0], offline["a"].values[:4, 0], rtol=1e-6)
    late = FusionBuffer({"a": StreamSpec(1, tolerance=0.1)}, rate=10.0, start=0.0)
    late.push_many("a", s.timestamps[:3], s.values[:3])
    w = late.pop_ready(now=0.45)  # 0.3 emitted before 0.95 exists: missing, never extrapolated
    assert w.masks["a"].tolist() == [True, True, True, False]


def test_merged_alignment_of_many_buffers_equals_each_alone(rng, monkeypatch):
    """pop_ready_many (one align_stream call per modality for all buffers) == pop_ready of each buffer."""
    import mmfuse.stream.buffer as buffer_module
    from mmfuse.stream import pop_ready_many

    joined = []
    merge = buffer_module._align_merged

    def counting(buffers, plans, members, *args):
        left = merge(buffers, plans, members, *args)
        joined.append(len(members) - len(left))
        return left

    monkeypatch.setattr(buffer_module, "_align_merged", counting)

    specs = {
        "acc": StreamSpec(3, tolerance=0.03),
        "gyro": StreamSpec(2, rate=20.0),
        "speaking": StreamSpec(1, kind="discrete", rate=10.0),
        "emb": StreamSpec(2, kind="embedding", rate=20.0),
        "words": StreamSpec(4, kind="interval"),
    }
    n = 6
    starts = [0.0, 0.013, 5.0, 1e4, 0.0, 2.5]  # different clocks; buffer 4 gets a gap and a silent modality
    merged = [FusionBuffer(specs, rate=10.0, lateness=0.1, start=s) for s in starts]
    alone = [FusionBuffer(specs, rate=10.0, lateness=0.1, start=s) for s in starts]
    got = [[] for _ in range(n)]
    want = [[] for _ in range(n)]
    for step in range(60):
        for j in range(n):
            t0 = starts[j] + step * 0.05
            ev = {
                "acc": (t0 + rng.uniform(-0.004, 0.004), rng.normal(size=3)),
                "gyro": (t0, rng.normal(size=2)),
                "emb": (t0, rng.normal(size=2)),
            }
            if step % 2 == 0:
                ev["speaking"] = (t0, [float(rng.random() > 0.5)])
            if j == 4 and 20 <= step < 30:
                del ev["gyro"]  # a gap in one buffer only
            if j == 4:
                ev.pop("speaking", None)  # never speaks
            for m, (t, v) in ev.items():
                for b in (merged[j], alone[j]):
                    b.push(m, t, v)
                    if step % 8 == 0 and m == "acc":
                        b.push("words", t0, rng.normal(size=4) * 0 + step, end=t0 + 0.2)
                    if j == 1 and step % 10 == 0 and m == "acc":
                        b.push(m, t, np.ones(3))  # a corrected sample: same time again (duplicates: last)
        if step % 3 == 0:
            for j, w in enumerate(pop_ready_many(merged)):
                got[j].append(w)
            for j in range(n):
                want[j].append(alone[j].pop_ready())
    for j in range(n):
        a = AlignedWindow.concat([w for w in got[j] if len(w)])
        b = AlignedWindow.concat([w for w in want[j] if len(w)])
        assert len(a) == len(b) > 20
        np.testing.assert_array_equal(a.times, b.times)
        for m in specs:
            np.testing.assert_array_equal(a.masks[m], b.masks[m], err_msg=f"{j} {m}")
            np.testing.assert_array_equal(a.interpolated[m], b.interpolated[m], err_msg=f"{j} {m}")
            np.testing.assert_allclose(a.values[m], b.values[m], rtol=1e-6, atol=1e-6, err_msg=f"{j} {m}")
            np.testing.assert_allclose(a.staleness[m], b.staleness[m], rtol=0, atol=1e-9, err_msg=f"{j} {m}")
    assert not all(np.concatenate([w.masks["gyro"] for w in got[4]]))  # the gap was seen
    assert sum(joined) > 100 and min(joined) == 0  # both paths ran: merged calls and buffers aligned alone


def _drain(buf, flush=False):
    out = []
    while len(w := (buf.flush() if flush else buf.pop_ready())):
        out.append(w)
    return out


@pytest.mark.parametrize("gap", [61.0, 1e5, 1e6])
def test_a_gap_longer_than_max_gap_is_skipped_not_gridded(gap):
    buf = FusionBuffer({"a": StreamSpec(1, rate=10.0)}, rate=10.0, max_gap=60.0)
    buf.push_many("a", [0.0, 0.1, gap, gap + 0.1, gap + 0.2], [[1.0], [2.0], [3.0], [4.0], [5.0]])
    windows = _drain(buf) + _drain(buf, flush=True)
    first, last = windows[0], AlignedWindow.concat(windows[1:])
    assert first.times[-1] == pytest.approx(60.1)  # 60 s after the last event before the gap, then it stops
    assert last.times[0] == pytest.approx(gap - 0.1)  # it resumes one tolerance before the next event
    assert last.first_index == round((gap - 0.1) * 10)  # grid indices keep their meaning across the gap
    assert buf.skipped_gap == last.first_index - len(first)
    assert len(first) + len(last) == 602 + 4
    assert last.values["a"][-3:, 0].tolist() == [3.0, 4.0, 5.0] and last.masks["a"].all()


def test_a_gap_within_max_gap_is_emitted_as_missing_steps():
    buf = FusionBuffer({"a": StreamSpec(1, rate=10.0)}, rate=10.0, max_gap=60.0)
    buf.push_many("a", [0.0, 30.0, 30.1], [[1.0], [2.0], [3.0]])
    w = AlignedWindow.concat(_drain(buf) + _drain(buf, flush=True))
    assert len(w) == 302 and buf.skipped_gap == 0  # every step of a 30 s gap is emitted
    assert w.masks["a"][:2].all() and w.masks["a"][-3:].all() and not w.masks["a"][2:-3].any()  # as missing


def test_max_steps_skips_the_oldest_steps():
    buf = FusionBuffer({"a": StreamSpec(1, rate=10.0)}, rate=10.0, max_steps=5, max_gap=None)
    buf.push_many("a", np.arange(0, 3, 0.1), np.arange(30.0)[:, None])
    w = buf.pop_ready()
    assert len(w) == 5 and buf.skipped_overflow == 23 and w.first_index == 23


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan"), True, "60"])
def test_max_gap_must_be_a_positive_number(bad):
    with pytest.raises(StreamError, match="max_gap"):
        FusionBuffer({"a": StreamSpec(1, rate=10.0)}, rate=10.0, max_gap=bad)
