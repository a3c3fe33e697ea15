"""A real uvicorn server on a free loopback port, real WebSocket clients, and abuse."""

import json
import socket
import time

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
websockets_sync = pytest.importorskip("websockets.sync.client")

from mmfuse.errors import StreamError  # noqa: E402
from mmfuse.stream import StreamingSession  # noqa: E402
from mmfuse.stream.client import StreamClient, replay_recording  # noqa: E402
from mmfuse.stream.server import ServerConfig, create_app, run_in_thread  # noqa: E402

pytestmark = pytest.mark.slow

LIMIT = 4096


@pytest.fixture(scope="module")
def server(model_dir):
    cfg = ServerConfig(port=0, max_streams=4, max_message_bytes=LIMIT, queue_size=64, send_timeout=2.0)
    handle = run_in_thread(create_app(model_dir, cfg), cfg)
    yield handle
    handle.stop()


def _offline(model_dir, streams):
    s = StreamingSession.from_dir(model_dir)
    for m, st in streams.items():
        s.push_many(m, st.timestamps, st.values)
    return s.run_recording(s.buffer.flush())


def _event(k, m="acc", t=None, dim=3):
    return {"type": "event", "modality": m, "t": k / 30 if t is None else t, "values": [0.1] * dim, "seq": k}


def _wait_for(client, kind, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = client.receive(timeout=0.2)
        if msg is not None and msg.get("type") == kind:
            return msg
    raise AssertionError(f"no {kind!r} message within {timeout} s")


def test_health_and_metrics(server):
    r = httpx.get(server.url + "/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    m = httpx.get(server.url + "/metrics").json()
    assert {"streams_active", "model_step_ms", "errors", "dropped_outgoing"} <= set(m)


def test_streamed_recording_equals_the_offline_model(server, model_dir, make_recording):
    streams = make_recording()
    result = replay_recording(streams, server.ws_url, speed=0)
    offline = _offline(model_dir, streams)
    raw = np.array([p["raw"] for p in result["predictions"]])
    assert result["errors"] == [] and raw.shape == offline["raw"].shape
    np.testing.assert_allclose(raw, offline["raw"], atol=1e-5)
    np.testing.assert_allclose([p["t"] for p in result["predictions"]], offline["times"], atol=1e-9)
    assert result["latency_ms"]["p99"] < 1000


def test_http_batch_endpoint_equals_the_offline_model(server, model_dir, make_recording):
    streams = make_recording(seed=1)
    body = {"streams": {m: {"t": s.timestamps.tolist(), "values": s.values.tolist()} for m, s in streams.items()}}
    r = httpx.post(server.url + "/predict", json=body)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.array(r.json()["raw"]), _offline(model_dir, streams)["raw"], atol=1e-5)
    bad = httpx.post(server.url + "/predict", json={"streams": {"nope": {"t": [0], "values": [[1]]}}})
    assert (
        bad.status_code == 400 and bad.json()["error"] == "unknown_modality" and bad.json()["field"] == "streams.nope"
    )
    big = httpx.post(server.url + "/predict", content=b"x" * (8 * 1024 * 1024 + 1))
    assert big.status_code == 413 and big.json()["error"] == "body_too_large"


@pytest.mark.parametrize(
    ("payload", "error", "field"),
    [
        ("{not json", "invalid_json", None),
        ("[1, 2]", "invalid_message", None),
        (json.dumps({"type": "dance"}), "invalid_message", "type"),
        (json.dumps({"type": "event", "modality": "video", "t": 0, "values": [1]}), "unknown_modality", "modality"),
        (json.dumps({"type": "event", "modality": "acc", "t": 0, "values": [1, 2]}), "wrong_dimension", "values"),
        ('{"type": "event", "modality": "acc", "t": 0, "values": [1, NaN, 2]}', "non_finite", None),
        ('{"type": "event", "modality": "acc", "t": 0, "values": [1, 1e999, 2]}', "invalid_value", "values[1]"),
        ('{"type": "event", "modality": "acc", "t": 0, "values": [1, 1e39, 2]}', "invalid_value", "events"),
        (json.dumps({"type": "event", "modality": "acc", "t": "soon", "values": [1, 2, 3]}), "invalid_value", "t"),
        (
            json.dumps({"type": "events", "events": [{"modality": "gyro", "t": 0, "values": [1]}]}),
            "wrong_dimension",
            "events[0].values",
        ),
        (json.dumps({"type": "event", "values": [0.0] * 2000}), "message_too_large", None),
    ],
)
def test_bad_messages_get_a_clear_error_and_the_stream_goes_on(server, payload, error, field):
    with StreamClient(server.ws_url) as c:
        c.send({"type": "ping"})
        _wait_for(c, "pong")
        c._ws.send(payload)
        err = _wait_for(c, "error")
        assert err["error"] == error and err["field"] == field and err["detail"]
        for k in range(12):  # the same connection still streams
            c.send(_event(k))
            c.send(_event(k, "gyro", dim=2))
        assert _wait_for(c, "prediction")["index"] == 0


def test_binary_and_protocol_level_oversized_frames(server):
    with StreamClient(server.ws_url) as c:
        c._ws.send(b"\x00\x01")
        assert _wait_for(c, "error")["error"] == "binary_not_supported"
        c._ws.send("x" * (5 * LIMIT))  # beyond the protocol limit: the server closes with 1009
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and c.receive(timeout=0.2) is not None:
            pass
    assert httpx.get(server.url + "/health").status_code == 200


def test_more_streams_than_allowed_are_refused_and_the_others_keep_going(server):
    clients = [StreamClient(server.ws_url) for _ in range(4)]
    try:
        with pytest.raises(StreamError, match="too_many_streams"):
            StreamClient(server.ws_url)
        for c in clients:
            for k in range(6):
                c.send(_event(k))
                c.send(_event(k, "gyro", dim=2))
        for c in clients:
            assert _wait_for(c, "prediction")["index"] == 0
    finally:
        for c in clients:
            c.close()
    time.sleep(0.3)
    assert httpx.get(server.url + "/health").json()["streams"] == 0


def test_vanishing_and_slow_clients_do_not_hurt_other_streams(server):
    # a client that vanishes mid-stream: TCP connection cut without a close frame
    gone = websockets_sync.connect(server.ws_url)
    gone.send(json.dumps(_event(0)))
    gone.socket.shutdown(socket.SHUT_RDWR)
    gone.socket.close()
    # a slow client: sends a lot and never reads its predictions
    slow = websockets_sync.connect(server.ws_url, max_queue=1, close_timeout=0.5)
    good = StreamClient(server.ws_url)
    try:
        sent = {}
        for k in range(150):
            slow.send(json.dumps({"type": "events", "events": [_event(k), _event(k, "gyro", dim=2)]}))
            sent[k] = time.perf_counter()
            good.send(_event(k))
            good.send(_event(k, "gyro", dim=2))
            time.sleep(0.004)
        good.flush()
        preds = [m for m in good.messages if m.get("type") == "prediction"]
        lat = [1000 * (p["_received"] - sent[p["seq"]]) for p in preds if p.get("seq") in sent]
        assert len(preds) >= 145
        assert np.percentile(lat, 99) < 1000  # generous: the test shares 2 cores with the server and the clients
    finally:
        good.close()
        slow.close()
    time.sleep(0.3)
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["streams"] == 0


def test_token_is_required_off_loopback_and_checked(model_dir):
    with pytest.raises(StreamError, match="without a token"):
        ServerConfig(host="0.0.0.0")
    cfg = ServerConfig(port=0, token="s3cret")
    with run_in_thread(create_app(model_dir, cfg), cfg) as srv:
        with pytest.raises(StreamError, match="unauthorized"):
            StreamClient(srv.ws_url)
        with StreamClient(srv.ws_url, token="s3cret") as c:
            assert c.hello["modalities"] == {"acc": 3, "gyro": 2}
        with StreamClient(srv.ws_url + "?token=s3cret") as c:
            assert c.hello["rate"] == 30.0
        assert httpx.get(srv.url + "/metrics").status_code == 401
        assert httpx.get(srv.url + "/metrics", headers={"X-Mmfuse-Token": "s3cret"}).status_code == 200
        assert httpx.get(srv.url + "/health").status_code == 200


def test_batch_interval_is_checked():
    assert ServerConfig().batch_interval == 0.01 and ServerConfig(batch_interval=0).batch_interval == 0
    for bad in (-0.1, 2.0, True, "0.01", float("nan")):
        with pytest.raises(StreamError, match="batch_interval"):
            ServerConfig(batch_interval=bad)
