"""Bad input to the streaming server (``mmfuse serve``): WebSocket messages, ``POST /predict`` bodies, abuse of
connections, and the ``serve`` / ``stream`` command lines.

Every bad message gets an ``{"type": "error", "error": code, "detail", "field"}`` answer naming the problem and
the field, and the stream goes on; the server never dies, never grows without bound and keeps answering
``/health``. Loopback only, one small server per module.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
import warnings
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from bad_input_table import ACCEPTED, Case, assert_names, clean_failure, invoke, params

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
ws_client = pytest.importorskip("websockets.sync.client")

from mmfuse.models import ModelConfig, build_model, save_model  # noqa: E402
from mmfuse.stream import StreamConfig, StreamSpec, save_stream_config  # noqa: E402
from mmfuse.stream.server import ServerConfig, create_app, run_in_thread  # noqa: E402

WS = "WebSocket /ws message"
PREDICT = "POST /predict body"
CLI = "mmfuse serve / mmfuse stream (command line)"

LIMIT = 65536


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("served")
    torch.manual_seed(0)
    cfg = ModelConfig(
        {"acc": 3, "gyro": 2}, out_dim=3, hidden=8, bidirectional=False, causal=True, fusion="gated", label_level="step"
    )
    save_model(build_model(cfg), d)
    specs = {"acc": StreamSpec(3, rate=30.0), "gyro": StreamSpec(2, rate=30.0)}
    save_stream_config(d, StreamConfig(rate=30.0, specs=specs))
    return d


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Any:
    cfg = ServerConfig(
        port=0, max_streams=8, max_watchers=2, queue_size=64, send_timeout=2.0, idle_timeout=1.0, header_timeout=0.5
    )
    handle = run_in_thread(create_app(model_dir, cfg), cfg)
    yield handle
    handle.stop()


def _ev(**changes: Any) -> dict[str, Any]:
    return {"type": "event", "modality": "acc", "t": 0.0, "values": [0.1, 0.2, 0.3], **changes}


def _text(msg: Any) -> str:
    return msg if isinstance(msg, str) else json.dumps(msg)


def _nest(depth: int) -> str:
    return "[" * depth + "]" * depth


def _case(id: str, what: str, msg: Any, code: str, *names: str) -> Case:
    return Case(WS, id, what, f"error message '{code}'", (code, *names), msg)


BIG = "1" + "0" * 400

WS_CASES = [
    _case(
        "utf8-180k",
        "a 180 KB message of 60 000 three-byte characters (64 KiB limit)",
        json.dumps(_ev(seq="€" * 60_000), ensure_ascii=False),
        "message_too_large",
        "180",
        "bytes",
        "65536",
    ),
    _case("ascii-70k", "a 70 000-byte ASCII message", _text(_ev(seq="x" * 70_000)), "message_too_large", "70"),
    _case("nested-5000", "an array nested 5 000 levels deep", _nest(5000), "invalid_json", "nested too deeply"),
    _case(
        "nested-object", "objects nested 3 000 levels deep", '{"a":' * 3000 + "1" + "}" * 3000, "invalid_json", "nested"
    ),
    _case(
        "seq-nested",
        "a seq nested 500 levels deep",
        '{"type": "ping", "seq": ' + _nest(500) + "}",
        "invalid_value",
        "seq",
    ),
    _case("seq-60k", "a 60 000-character seq", _text(_ev(seq="s" * 60_000)), "invalid_value", "seq", "256"),
    _case("seq-300", "a 300-character seq", _text(_ev(seq="s" * 300)), "invalid_value", "seq"),
    _case("seq-object", "a seq that is an object", _text(_ev(seq={"a": 1})), "invalid_value", "seq"),
    _case("seq-list", "a seq that is a list", _text(_ev(seq=[1, 2])), "invalid_value", "seq"),
    _case(
        "seq-huge-int",
        "a seq integer of 401 digits",
        '{"type": "ping", "seq": ' + BIG + "}",
        "invalid_value",
        "seq",
        "401 digits",
    ),
    _case(
        "t-huge-int",
        "an event time integer of 401 digits",
        _text(_ev(t=0)).replace('"t": 0', '"t": ' + BIG),
        "invalid_value",
        "t",
        "401 digits",
    ),
    _case(
        "value-huge-int",
        "a value integer of 401 digits",
        _text(_ev()).replace("[0.1, 0.2, 0.3]", f"[{BIG}, 0.2, 0.3]"),
        "invalid_value",
        "values[0]",
    ),
    _case(
        "int-5000-digits",
        "an integer of 5 000 digits (over Python's conversion limit)",
        _text(_ev()).replace("[0.1, 0.2, 0.3]", "[1" + "0" * 5000 + ", 0.2, 0.3]"),
        "invalid_json",
        "digits",
    ),
    _case(
        "t-1e400",
        "an event time 1e400 (infinite as a float)",
        _text(_ev()).replace('"t": 0.0', '"t": 1e400'),
        "invalid_value",
        "t",
    ),
    _case("value-nan", "a NaN literal among the values", _text(_ev()).replace("0.2", "NaN"), "non_finite", "NaN"),
    _case(
        "value-infinity",
        "an Infinity literal among the values",
        _text(_ev()).replace("0.2", "Infinity"),
        "non_finite",
        "Infinity",
    ),
    _case(
        "t-neg-infinity",
        "a -Infinity event time",
        _text(_ev()).replace('"t": 0.0', '"t": -Infinity'),
        "non_finite",
        "-Infinity",
    ),
    _case(
        "value-float32-overflow",
        "a value of 1e39 (beyond float32)",
        _text(_ev(values=[1, 1e39, 2])),
        "invalid_value",
        "overflow float32",
    ),
    _case(
        "ping-t-object", "a ping whose t is an object", _text({"type": "ping", "t": {"x": 1}}), "invalid_value", "'t'"
    ),
    _case("type-unknown", "an unknown message type", _text({"type": "dance"}), "invalid_message", "dance"),
    _case("type-missing", "a message without a type", _text({"modality": "acc"}), "invalid_message", "None"),
    _case("type-number", "a message type that is a number", _text({"type": 3}), "invalid_message", "3"),
    _case("not-object-list", "a JSON list", "[1, 2]", "invalid_message", "list"),
    _case("not-object-string", "a JSON string", '"event"', "invalid_message", "str"),
    _case("not-object-null", "JSON null", "null", "invalid_message", "NoneType"),
    _case("not-object-number", "a JSON number", "42", "invalid_message", "int"),
    _case("json-truncated", "JSON cut short", '{"type": "event", "t": ', "invalid_json", "not valid JSON"),
    _case("json-single-quotes", "JSON with single quotes", "{'type': 'ping'}", "invalid_json", "not valid JSON"),
    _case("json-trailing-comma", "JSON with a trailing comma", '{"type": "ping",}', "invalid_json", "not valid JSON"),
    _case("json-empty", "an empty message", "", "invalid_json", "not valid JSON"),
    _case("binary", "a binary frame", b"\x00\x01", "binary_not_supported", "JSON text"),
    _case(
        "modality-unknown",
        "an event of an unknown modality",
        _text(_ev(modality="mag")),
        "unknown_modality",
        "mag",
        "acc",
    ),
    _case(
        "modality-missing",
        "an event without a modality",
        _text({"type": "event", "t": 0, "values": [1, 2, 3]}),
        "unknown_modality",
        "None",
    ),
    _case("modality-number", "an event whose modality is a number", _text(_ev(modality=1)), "unknown_modality", "1"),
    _case(
        "t-missing",
        "an event without t",
        _text({"type": "event", "modality": "acc", "values": [1, 2, 3]}),
        "invalid_value",
        "'t'",
    ),
    _case("t-string", "an event time given as a string", _text(_ev(t="0.5")), "invalid_value", "'0.5'"),
    _case("t-bool", "an event time given as true", _text(_ev(t=True)), "invalid_value", "True"),
    _case("t-null", "an event time null", _text(_ev(t=None)), "invalid_value", "None"),
    _case(
        "values-missing",
        "an event without values",
        _text({"type": "event", "modality": "acc", "t": 0}),
        "wrong_dimension",
        "3 numbers",
    ),
    _case("values-string", "values given as a string", _text(_ev(values="1,2,3")), "wrong_dimension", "str"),
    _case("values-short", "two values for a modality of three", _text(_ev(values=[1, 2])), "wrong_dimension", "Got 2"),
    _case(
        "values-long",
        "four values for a modality of three",
        _text(_ev(values=[1, 2, 3, 4])),
        "wrong_dimension",
        "Got 4",
    ),
    _case("values-nested", "values as a nested list", _text(_ev(values=[[1], [2], [3]])), "invalid_value", "values[0]"),
    _case("values-text", "a text among the values", _text(_ev(values=[1, "2", 3])), "invalid_value", "values[1]"),
    _case("values-bool", "a boolean among the values", _text(_ev(values=[1, 2, False])), "invalid_value", "values[2]"),
    _case("values-null", "null among the values", _text(_ev(values=[None, 2, 3])), "invalid_value", "values[0]"),
    _case("end-not-interval", "an end time on a continuous modality", _text(_ev(end=1.0)), "invalid_value", "interval"),
    _case(
        "events-not-list",
        "an events message whose events is an object",
        _text({"type": "events", "events": {}}),
        "invalid_message",
        "list",
    ),
    _case(
        "events-item-number",
        "an events list holding a number",
        _text({"type": "events", "events": [1]}),
        "invalid_message",
        "object",
    ),
    _case(
        "events-second-bad",
        "an events list whose second event has a string time",
        _text({"type": "events", "events": [_ev(), _ev(t="x")]}),
        "invalid_value",
        "events[1].t",
    ),
    _case(
        "events-gyro-dim",
        "an events list with a gyro event of three values",
        _text({"type": "events", "events": [_ev(modality="gyro")]}),
        "wrong_dimension",
        "events[0].values",
        "'gyro'",
    ),
]


def _hello(ws: Any) -> dict[str, Any]:
    msg = json.loads(ws.recv(timeout=5))
    assert msg["type"] == "hello", msg
    return msg


def _next_error(ws: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        msg = json.loads(ws.recv(timeout=5))
        if msg["type"] == "error":
            return msg
    raise AssertionError("no error message")


@pytest.mark.parametrize("case", params(WS_CASES))
def test_a_bad_message_gets_an_error_with_a_reason_and_the_stream_goes_on(server: Any, case: Case) -> None:
    with ws_client.connect(server.ws_url, max_size=2**22) as ws:
        _hello(ws)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no RuntimeWarning (overflow in cast) on the server's thread either
            ws.send(case.data)
            err = _next_error(ws)
        assert err["error"] == case.names[0], err
        assert_names(json.dumps(err), *case.names[1:])
        assert len(json.dumps(err)) < 2000  # the reason never echoes a huge field
        ws.send(json.dumps({"type": "ping", "t": 1}))  # the connection is still open and answers
        while json.loads(ws.recv(timeout=5))["type"] != "pong":
            pass
    assert httpx.get(server.url + "/health", timeout=5).json()["status"] == "ok"


def test_events_a_million_seconds_apart_cost_two_short_windows(server: Any) -> None:
    with ws_client.connect(server.ws_url) as ws:
        sid = _hello(ws)["stream_id"]
        for t in (0.0, 1e6, 1e6 + 1):
            for m, d in (("acc", 3), ("gyro", 2)):
                ws.send(json.dumps({"type": "event", "modality": m, "t": t, "values": [0.0] * d}))
        ws.send(json.dumps({"type": "flush"}))
        ws.send(json.dumps({"type": "ping"}))
        preds = []
        while (msg := json.loads(ws.recv(timeout=10)))["type"] != "pong":
            preds += [msg] if msg["type"] == "prediction" else []
        time.sleep(0.3)
        while True:  # predictions still queued
            try:
                msg = json.loads(ws.recv(timeout=0.5))
            except TimeoutError:
                break
            preds += [msg] if msg["type"] == "prediction" else []
        stats = {s["id"]: s for s in httpx.get(server.url + "/streams").json()["streams"]}[sid]["buffer"]
    assert stats["skipped_gap"] > 29_000_000  # 1e6 s at 30 Hz were not gridded
    assert 0 < len(preds) <= 64 + 64  # at most a queue per stretch, never a million steps


def test_watchers_are_limited(server: Any) -> None:
    with ws_client.connect(server.ws_url) as stream:
        _hello(stream)
        watch_url = server.ws_url + "/watch"
        with ws_client.connect(watch_url) as w1, ws_client.connect(watch_url) as w2:
            assert json.loads(w1.recv(timeout=5))["type"] == "watch"
            assert json.loads(w2.recv(timeout=5))["type"] == "watch"
            with ws_client.connect(watch_url) as w3:
                err = json.loads(w3.recv(timeout=5))
            assert err["error"] == "too_many_watchers" and "2" in err["detail"]


def test_a_silent_stream_is_closed_after_the_idle_timeout(server: Any) -> None:
    with ws_client.connect(server.ws_url) as ws:
        _hello(ws)
        err = _next_error(ws)
        assert err["error"] == "idle_timeout" and "1 s" in err["detail"]


def test_slow_headers_are_cut_and_health_keeps_answering(server: Any) -> None:
    socks = []
    for _ in range(20):  # slowloris: connect, send half a request head, never finish it
        s = socket.create_connection((server.host, server.port), timeout=5)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)
    t0 = time.monotonic()
    assert httpx.get(server.url + "/health", timeout=5).status_code == 200
    assert time.monotonic() - t0 < 2.0
    time.sleep(1.0)  # header_timeout 0.5 s
    for s in socks:
        s.settimeout(2)
        assert s.recv(100) == b""  # closed by the server
        s.close()


def test_a_half_sent_second_request_on_a_kept_alive_connection_is_cut(server: Any) -> None:
    s = socket.create_connection((server.host, server.port), timeout=5)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    first = s.recv(65536)
    assert first.startswith(b"HTTP/1.1 200")
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # the second request head is never finished
    time.sleep(1.0)  # header_timeout 0.5 s (uvicorn's own keep-alive timeout is 5 s)
    s.settimeout(2)
    assert s.recv(100) == b""  # closed by the server
    s.close()


def _body(streams: Any, **extra: Any) -> dict[str, Any]:
    return {"streams": streams, **extra}


ACC = {"t": [0.0, 0.1, 0.2], "values": [[0.0, 0.1, 0.2]] * 3}
GYRO = {"t": [0.0, 0.1, 0.2], "values": [[0.0, 0.1]] * 3}
FAR_T = np.arange(0, 1e5, 50.0).tolist()  # one event every 50 s over a day: 3 million grid steps at 30 Hz


def _pcase(id: str, what: str, body: Any, error: str, *names: str) -> Case:
    return Case(PREDICT, id, what, error, names, body)


PREDICT_CASES = [
    _pcase(
        "far-apart",
        "two events 1e5 s apart per modality",
        _body({"acc": {"t": [0.0, 1e5], "values": [[0, 0, 0]] * 2}, "gyro": {"t": [0.0, 1e5], "values": [[0, 0]] * 2}}),
        ACCEPTED,
    ),
    _pcase(
        "too-many-steps",
        "events every 50 s over 1e5 s (3 million steps)",
        _body({"acc": {"t": FAR_T, "values": [[0, 0, 0]] * len(FAR_T)}}),
        "HTTP 413",
        "too_many_steps",
        "100000",
    ),
    _pcase(
        "start-far-back",
        "a start 1e9 s before the first event",
        _body({"acc": ACC, "gyro": GYRO}, start=-1e9),
        ACCEPTED,
    ),
    _pcase("body-not-json", "a body that is not JSON", "streams=1", "HTTP 400", "invalid_json"),
    _pcase("body-nested", "a body nested 10 000 levels deep", _nest(10_000), "HTTP 400", "invalid_json", "nested"),
    _pcase("streams-list", "streams given as a list", _body([1]), "HTTP 400", "invalid_message", "streams"),
    _pcase("streams-empty", "an empty streams object", _body({}), "HTTP 400", "invalid_message", "streams"),
    _pcase(
        "streams-unknown", "a stream of an unknown modality", _body({"mag": ACC}), "HTTP 400", "unknown_modality", "mag"
    ),
    _pcase(
        "stream-no-values",
        "a stream without values",
        _body({"acc": {"t": [0.0]}}),
        "HTTP 400",
        "invalid_message",
        "streams.acc",
    ),
    _pcase(
        "stream-wrong-dim",
        "acc values of two columns",
        _body({"acc": {"t": [0.0], "values": [[1, 2]]}}),
        "HTTP 400",
        "invalid_value",
        "streams.acc",
    ),
    _pcase(
        "stream-huge-int",
        "an acc value integer of 401 digits",
        '{"streams": {"acc": {"t": [0], "values": [[' + BIG + ", 1, 2]]}}}",
        "HTTP 400",
        "invalid_value",
        "streams.acc",
    ),
    _pcase(
        "stream-1e39",
        "an acc value of 1e39 (beyond float32)",
        _body({"acc": {"t": [0], "values": [[1e39, 1, 2]]}}),
        "HTTP 400",
        "invalid_value",
        "finite",
    ),
    _pcase(
        "start-string",
        "a start given as a string",
        _body({"acc": ACC}, start="0"),
        "HTTP 400",
        "invalid_value",
        "start",
    ),
]


@pytest.mark.parametrize("case", params(PREDICT_CASES))
def test_predict_refuses_bad_bodies_and_bounds_the_work(server: Any, case: Case) -> None:
    body = case.data if isinstance(case.data, str) else json.dumps(case.data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t0 = time.process_time()
        r = httpx.post(server.url + "/predict", content=body, timeout=30)
    if case.error == ACCEPTED:
        assert r.status_code == 200, r.text
        assert len(r.content) < 1_000_000 and time.process_time() - t0 < 5  # bounded answer and work
        out = r.json()
        assert len(out["times"]) == len(out["raw"]) <= 4000
        return
    assert r.status_code == int(case.error.split()[1]), r.text
    assert_names(r.text, *case.names)


def _ccase(id: str, what: str, args: tuple[str, ...], *names: str) -> Case:
    return Case(CLI, id, what, "exit 2", names, args)


CLI_CASES = [
    _ccase("port-70000", "mmfuse serve --port 70000", ("--port", "70000"), "port", "70000", "65535"),
    _ccase("port-negative", "mmfuse serve --port -1", ("--port", "-1"), "port", "-1"),
    _ccase("port-in-use", "mmfuse serve on a port another socket holds", ("--port", "IN_USE"), "already in use"),
    _ccase(
        "host-unresolvable",
        "mmfuse serve --host no-such-host.invalid",
        ("--host", "no-such-host.invalid", "--token", "t"),
        "no-such-host.invalid",
        "does not resolve",
    ),
    _ccase("host-off-loopback-no-token", "mmfuse serve --host 0.0.0.0 without --token", ("--host", "0.0.0.0"), "token"),
    _ccase("max-watchers-zero", "mmfuse serve --max-watchers 0", ("--max-watchers", "0"), "max_watchers"),
    _ccase("idle-timeout-negative", "mmfuse serve --idle-timeout -5", ("--idle-timeout", "-5"), "idle_timeout"),
    _ccase(
        "stream-not-running",
        "mmfuse stream to a port nothing listens on",
        ("STREAM", "ws://127.0.0.1:FREE/ws"),
        "refused",
        "mmfuse serve",
    ),
    _ccase(
        "stream-http-url",
        "mmfuse stream --url http://...",
        ("STREAM", "http://127.0.0.1:8000/ws"),
        "ws://",
        "http://127.0.0.1:8000/ws",
    ),
    _ccase("stream-no-scheme", "mmfuse stream --url 127.0.0.1:8000", ("STREAM", "127.0.0.1:8000"), "ws://"),
]


@pytest.mark.parametrize("case", params(CLI_CASES))
def test_serve_and_stream_cli_give_one_clear_error(model_dir: Path, tmp_path: Path, case: Case) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    in_use = str(holder.getsockname()[1])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = str(s.getsockname()[1])
    try:
        if case.data[0] == "STREAM":
            rec = tmp_path / "rec"
            rec.mkdir()
            np.savez(rec / "acc.npz", timestamps=np.arange(3) / 10, values=np.zeros((3, 3)))
            result = invoke("stream", rec, "--url", case.data[1].replace("FREE", free))
        else:
            args = [a.replace("IN_USE", in_use) for a in case.data]
            result = invoke("serve", model_dir, *args)
    finally:
        holder.close()
    line = clean_failure(result)
    assert "serving" not in result.stdout
    assert_names(line, *case.names)


CASES = WS_CASES + PREDICT_CASES + CLI_CASES


def test_model_dir_fixture_is_servable(model_dir: Path, tmp_path: Path) -> None:
    """The module's model directory itself loads (so every refusal above is about the input, not the model)."""
    from mmfuse.stream import load_model_assets

    shutil.copytree(model_dir, tmp_path / "copy")
    assert load_model_assets(tmp_path / "copy")["stream_config"].rate == 30.0
