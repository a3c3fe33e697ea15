"""The streaming server: a WebSocket API for live streams, an HTTP batch endpoint, health, metrics, a live page.

Needs the ``serve`` extra (FastAPI, uvicorn, websockets). Start it with ``mmfuse serve MODEL_DIR`` or
:func:`serve`; protocol, limits and security in ``docs/streaming.md``.

Design, in short:

* one :class:`~mmfuse.stream.IncrementalModel` is shared by every stream; a single batcher task steps all
  streams with queued steps as one batch (:func:`~mmfuse.stream.step_sessions`), so 100 streams cost about one
  batched model step per round;
* every message is size-checked before it is parsed, then validated field by field; a bad message gets a JSON
  error ``{"type": "error", "error": code, "detail": text, "field": name}`` and the stream goes on;
* backpressure: queued model steps and queued outgoing messages are bounded per connection; when a bound is hit
  the *oldest* entries are dropped (live data: the newest matter most), counted, and the client is told with a
  ``{"type": "backpressure", ...}`` message; incoming data is read one message at a time, so a client that
  sends faster than the server reads is slowed by TCP flow control;
* binds to 127.0.0.1 by default; any other host needs a token (refused otherwise), sent as
  ``Authorization: Bearer TOKEN``, ``X-Mmfuse-Token: TOKEN`` or ``?token=TOKEN``.
"""

# No "from __future__ import annotations" here: FastAPI reads the annotations of the endpoint functions, whose
# types (Request, WebSocket) are imported inside create_app so that this module imports without the extra.
import asyncio
import contextlib
import gc
import hmac
import ipaddress
import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmfuse.errors import StreamError
from mmfuse.stream._page import LIVE_PAGE
from mmfuse.stream.session import (
    StreamConfig,
    StreamingSession,
    collect_sessions,
    load_model_assets,
    step_sessions,
)

__all__ = ["ServerConfig", "ServerHandle", "bind_socket", "create_app", "is_loopback", "run_in_thread", "serve"]

logger = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or ``localhost``.

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("0.0.0.0")
        (True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServerConfig:
    """Server settings.

    Attributes:
        host: Bind address (default loopback only).
        port: TCP port (0: any free port).
        token: Required from clients when set; mandatory for a non-loopback host.
        max_streams: Most concurrent WebSocket streams; more are refused with ``too_many_streams``.
        max_message_bytes: Largest WebSocket message (checked before parsing).
        max_body_bytes: Largest HTTP request body.
        queue_size: Per connection, most queued model steps and most queued outgoing messages.
        send_timeout: Seconds a send may block before the connection is closed as unresponsive.
        max_watchers: Most concurrent ``/ws/watch`` connections (the live page); more are refused.
        idle_timeout: Seconds a WebSocket stream may stay silent before the server closes it (code 1001).
        header_timeout: Seconds a client has to send a complete HTTP request head (slow-header clients are cut).
        max_predict_steps: Most grid steps one ``POST /predict`` may ask for (refused with 413 beyond).
        stream_config: Overrides the model directory's ``stream.json``.
        rate: Grid rate when there is no stream config.
        torch_threads: Torch intra-op threads set when the server starts (1: small models step fastest on one
            thread, and several threads contend with the event loop); None leaves the setting alone.
        batch_interval: Shortest time in seconds between the starts of two batched model rounds. Steps that
            become ready meanwhile join the next round: fewer, larger rounds cost much less CPU per step (a round
            has a fixed cost of about a millisecond) for at most this much added latency; 0 steps as soon as
            anything is ready.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    max_streams: int = 256
    max_message_bytes: int = 65536
    max_body_bytes: int = 8 * 1024 * 1024
    queue_size: int = 256
    send_timeout: float = 10.0
    stream_config: StreamConfig | None = None
    rate: float | None = None
    torch_threads: int | None = 1
    batch_interval: float = 0.01
    max_watchers: int = 64
    idle_timeout: float = 300.0
    header_timeout: float = 10.0
    max_predict_steps: int = 100_000

    def __post_init__(self) -> None:
        p = self.port
        if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p <= 65535:
            raise StreamError(f"The 'port' parameter of ServerConfig must be an integer in [0, 65535]. Got {p!r}.")
        if not is_loopback(self.host) and not self.token:
            raise StreamError(
                f"Refusing to serve on non-loopback host {self.host!r} without a token: pass --token (or set "
                "MMFUSE_TOKEN) so that only clients holding it can connect."
            )
        for name in (
            "max_streams",
            "max_message_bytes",
            "max_body_bytes",
            "queue_size",
            "max_watchers",
            "max_predict_steps",
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise StreamError(f"The {name!r} parameter of ServerConfig must be a positive integer. Got {v!r}.")
        for name in ("idle_timeout", "header_timeout", "send_timeout"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
                raise StreamError(
                    f"The {name!r} parameter of ServerConfig must be a positive number of seconds. Got {v!r}."
                )
        b = self.batch_interval
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 <= b <= 1:
            raise StreamError(
                f"The 'batch_interval' parameter of ServerConfig must be a number of seconds in [0, 1]. Got {b!r}."
            )


class _Error(Exception):
    def __init__(self, error: str, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.code = error
        self.payload: dict[str, Any] = {"type": "error", "error": error, "detail": detail, "field": field}


def _no_constants(name: str) -> None:
    raise _Error("non_finite", f"JSON constant {name} is not allowed: every number must be finite.", None)


_orjson: Any
try:  # optional fast JSON (the serve extra installs it); json is the reference and explains every error
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None


def _dumps(msg: Any) -> str:
    """JSON text of an outgoing message."""
    return _orjson.dumps(msg).decode() if _orjson is not None else json.dumps(msg)


async def _refuse(ws: Any, error: str, detail: str, *, field: str | None = None, code: int = 1013) -> None:
    """Send one error message (the protocol's error shape) and close the WebSocket with ``code``."""
    await ws.send_text(_dumps(_Error(error, detail, field).payload))
    await ws.close(code=code)


def _parse(text: str | bytes, limit: int) -> dict[str, Any]:
    size = len(text)
    if isinstance(text, str) and 4 * size > limit:  # UTF-8 takes up to 4 bytes a character: count them
        size = len(text.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise _Error("message_too_large", f"Message of {size} bytes is over the limit of {limit} bytes.")
    if _orjson is not None:
        try:  # valid messages take the fast path; anything it refuses goes through json for the exact error
            fast = _orjson.loads(text)
            if isinstance(fast, dict):
                return fast
        except _orjson.JSONDecodeError:
            pass
    try:
        msg = json.loads(text, parse_constant=_no_constants)
    except _Error:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Error("invalid_json", f"Message is not valid JSON: {exc}.") from None
    except RecursionError:
        raise _Error("invalid_json", "Message is nested too deeply to be a valid message.") from None
    if not isinstance(msg, dict):
        raise _Error("invalid_message", f"A message must be a JSON object. Got {type(msg).__name__}.")
    return msg


def _finite_number(value: Any, field: str) -> float:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > _MAX_INT:
        raise _Error(
            "invalid_value", f"{field!r} must be a finite number. Got an integer of {len(str(value))} digits.", field
        )
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Error("invalid_value", f"{field!r} must be a finite number. Got {_short(value)}.", field)
    return float(value)


_FLOAT32_MAX = float(np.finfo(np.float32).max)

_MAX_INT = 2**63
"""Largest integer magnitude a message may hold (a larger one cannot be a time, a value or a sequence number)."""

_MAX_SEQ_CHARS = 256
"""Longest string ``seq`` a client may attach (it is echoed in every prediction and kept in the stream history)."""


def _short(value: Any, limit: int = 80) -> str:
    """``repr`` of a client's value, cut to ``limit`` characters (an error message never echoes a huge field)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _check_seq(value: Any) -> Any:
    """A client's ``seq``: null, a boolean, a finite number or a short string (echoed back as it is)."""
    if value is None or (isinstance(value, (bool, str)) and len(str(value)) <= _MAX_SEQ_CHARS):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        _finite_number(value, "seq")
        return value
    raise _Error(
        "invalid_value",
        f"'seq' must be null, a number or a string of at most {_MAX_SEQ_CHARS} characters. Got {_short(value)}.",
        "seq",
    )


class _Stream:
    """Per-connection state: the session, the outgoing queue and counters.

    Outgoing messages are sent at once from whatever emits them (the batcher, the receive loop) while the
    connection's transport takes them without waiting, so a prediction costs no task switch; only when a send has
    to wait (a client that does not read) is the rest of that send, and the queue behind it, handed to a task
    that closes the connection when a send blocks for longer than ``send_timeout``.
    """

    def __init__(self, sid: str, session: StreamingSession, queue_size: int) -> None:
        self.id = sid
        self.session = session
        self.out: deque[dict[str, Any]] = deque()
        self.queue_size = queue_size
        self.dropped_out = 0
        self.dropped_steps = 0
        self.skipped_seen = 0  # the buffer's skipped_overflow already counted in dropped_steps
        self.last_seq: Any = None
        self.sent_at = time.monotonic()
        self.watchers: list[asyncio.Queue[dict[str, Any]]] = []
        self.history: deque[str] = deque(maxlen=600)  # JSON text: a few hundred bytes per prediction
        self.errors = 0
        self.closed = False
        self.dirty = False
        self.ws: Any = None  # the connection, set once it is accepted
        self.send_timeout = 10.0
        self.slow: asyncio.Task[None] | None = None  # the task finishing a send that had to wait

    def emit(self, msg: dict[str, Any]) -> None:
        if len(self.out) >= self.queue_size:
            self.out.popleft()
            self.dropped_out += 1
        self.out.append(msg)
        if self.slow is None and self.ws is not None:
            self.pump()

    def pump(self) -> None:
        """Send the queued messages now, as long as no send has to wait."""
        while self.out and not self.closed:
            coro = self.ws.send_text(_dumps(self.out.popleft()))
            try:
                blocker = coro.send(None)  # run the send until it completes or has to wait
            except StopIteration:
                continue
            except Exception:  # the client vanished: the receive loop cleans up
                self.closed = True
                return
            self.slow = asyncio.ensure_future(self._finish_slowly(coro, blocker))
            return

    async def _finish_slowly(self, coro: Any, blocker: Any) -> None:
        try:
            await asyncio.wait_for(_resume(coro, blocker), timeout=self.send_timeout)
            while self.out and not self.closed:
                await asyncio.wait_for(self.ws.send_text(_dumps(self.out.popleft())), timeout=self.send_timeout)
        except Exception:  # slow or vanished client: stop sending, the receive loop cleans up
            self.closed = True
            with contextlib.suppress(Exception):
                await self.ws.close(code=1008)
        finally:
            self.slow = None


async def _resume(coro: Any, blocker: Any) -> None:
    """Drive ``coro``, already started by hand and now waiting on ``blocker``, to its end (as a task would)."""
    try:
        while True:
            if blocker is None:  # a bare yield (sleep(0))
                await asyncio.sleep(0)
            else:
                blocker._asyncio_future_blocking = False
                await asyncio.wait((blocker,))
            try:
                blocker = coro.send(None)
            except StopIteration:
                return
    finally:
        coro.close()  # no-op once finished; on cancellation the send is abandoned


class _State:
    def __init__(self, assets: Mapping[str, Any], config: ServerConfig) -> None:
        self.config = config
        self.engine = assets["engine"]
        self.normalizers = assets["normalizers"]
        self.class_names = assets["class_names"]
        cfg = config.stream_config or assets["stream_config"]
        if cfg is None:
            if config.rate is None:
                raise StreamError(
                    "The model directory has no stream.json and its config.json records no grid rate; give the grid "
                    "rate (--rate HZ)."
                )
            cfg = StreamConfig.default(self.engine.config.modality_dims, config.rate)
        self.stream_config: StreamConfig = cfg
        self.streams: dict[str, _Stream] = {}
        self.counter = 0
        self.total_streams = 0
        self.refused_streams = 0
        self.watching = 0
        self.errors: dict[str, int] = {}
        self.messages = 0
        self.step_ms: deque[float] = deque(maxlen=20000)
        self.batch_sizes: deque[int] = deque(maxlen=20000)
        self.wake = asyncio.Event()
        self.started = time.time()

    def new_session(self, max_steps: int | None) -> StreamingSession:
        """A session bounded for serving: at most ``max_steps`` steps per buffer call, 10 000 kept events a modality."""
        return StreamingSession(
            self.engine,
            self.stream_config,
            normalizers=self.normalizers,
            class_names=self.class_names,
            max_steps=max_steps,
            max_pending=10_000,
        )

    def count_error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1


def _percentiles(values: Any) -> dict[str, float | None]:
    a = np.asarray(list(values), dtype=np.float64)
    if a.size == 0:
        return {"p50": None, "p99": None, "max": None, "n": 0}
    return {
        "p50": float(np.percentile(a, 50)),
        "p99": float(np.percentile(a, 99)),
        "max": float(a.max()),
        "n": int(a.size),
    }


def create_app(model_dir: str | Any, config: ServerConfig | None = None) -> Any:
    """The FastAPI application serving ``model_dir`` (a model directory, or already loaded assets).

    Raises:
        ImportError: naming the ``serve`` extra when FastAPI is not installed.
        StreamError: a non-causal model, or no stream config and no rate.
    """
    try:
        from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
        from fastapi.responses import HTMLResponse, JSONResponse
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("The mmfuse server needs the 'serve' extra: pip install 'mmfuse[serve]'.") from exc

    config = config or ServerConfig()
    assets = model_dir if isinstance(model_dir, Mapping) else load_model_assets(model_dir)
    state = _State(assets, config)
    modality_dims = state.engine.config.modality_dims

    async def batcher() -> None:
        loop = asyncio.get_running_loop()
        while True:
            await state.wake.wait()
            state.wake.clear()
            dirty = [s for s in state.streams.values() if s.dirty and not s.closed]
            if dirty:
                try:
                    collect_many(dirty)
                except Exception:  # e.g. nested interval events refused by the alignment: find the stream
                    for s in dirty:
                        try:
                            collect_many([s])
                        except Exception as exc:
                            s.emit({"type": "error", "error": "invalid_value", "detail": str(exc), "field": "events"})
            ready = [s for s in state.streams.values() if s.session.pending and not s.closed]
            if not ready:
                continue
            round_start = loop.time()
            t0 = time.perf_counter()
            try:
                results = step_sessions([s.session for s in ready], max_rounds=1)
            except Exception as exc:  # a model failure must not kill the server
                logger.exception("model step failed")
                for s in ready:
                    s.emit({"type": "error", "error": "model_error", "detail": str(exc), "field": None})
                continue
            ms = (time.perf_counter() - t0) * 1000.0
            state.step_ms.append(ms)
            state.batch_sizes.append(len(ready))
            for s, res in zip(ready, results, strict=True):
                for r in res:
                    msg = {"type": "prediction", "seq": s.last_seq, **r.to_dict(state.class_names)}
                    s.emit(msg)
                    s.history.append(_dumps(msg))
                    for w in s.watchers:
                        if w.full():
                            with contextlib.suppress(asyncio.QueueEmpty):
                                w.get_nowait()
                        w.put_nowait(msg)
            if any(s.session.pending for s in ready):
                state.wake.set()  # streams behind: the next round at once, after the loop has read what arrived
                await asyncio.sleep(0)
            else:  # what arrives before the next round's start joins it
                await asyncio.sleep(max(0.0, round_start + config.batch_interval - loop.time()))

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> Any:
        if config.torch_threads is not None:
            import torch

            torch.set_num_threads(config.torch_threads)
        task = asyncio.create_task(batcher())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPI(title="mmfuse streaming server", lifespan=lifespan)
    app.state.mmfuse = state

    def token_ok(headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        if not config.token:
            return True
        got = query.get("token") or headers.get("x-mmfuse-token") or ""
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            got = auth[7:].strip()
        return hmac.compare_digest(got.encode(), config.token.encode())

    def http_error(status: int, error: str, detail: str, field: str | None = None) -> Any:
        state.count_error(error)
        return JSONResponse({"error": error, "detail": detail, "field": field}, status_code=status)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "streams": len(state.streams),
            "max_streams": config.max_streams,
            "uptime_s": round(time.time() - state.started, 3),
        }

    @app.get("/metrics")
    async def metrics(request: Request) -> Any:
        if not token_ok(request.headers, request.query_params):
            return http_error(401, "unauthorized", "A valid token is required.")
        return {
            "streams_active": len(state.streams),
            "streams_total": state.total_streams,
            "streams_refused": state.refused_streams,
            "messages": state.messages,
            "errors": state.errors,
            "model_step_ms": _percentiles(state.step_ms),
            "batch_size": _percentiles(state.batch_sizes),
            "dropped_outgoing": sum(s.dropped_out for s in state.streams.values()),
            "dropped_steps": sum(s.dropped_steps for s in state.streams.values()),
            "incremental": state.engine.incremental,
        }

    @app.get("/streams")
    async def streams(request: Request) -> Any:
        if not token_ok(request.headers, request.query_params):
            return http_error(401, "unauthorized", "A valid token is required.")
        return {
            "streams": [
                {
                    "id": s.id,
                    "steps": s.session.steps,
                    "buffer": s.session.buffer.stats(),
                    "dropped_outgoing": s.dropped_out,
                    "dropped_steps": s.dropped_steps,
                    "errors": s.errors,
                }
                for s in state.streams.values()
            ]
        }

    @app.get("/")
    async def page(request: Request) -> Any:
        if not token_ok(request.headers, request.query_params):
            return http_error(401, "unauthorized", "A valid token is required (?token=...).")
        return HTMLResponse(LIVE_PAGE)

    @app.post("/predict")
    async def predict(request: Request) -> Any:
        if not token_ok(request.headers, request.query_params):
            return http_error(401, "unauthorized", "A valid token is required.")
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > config.max_body_bytes):
            return http_error(413, "body_too_large", f"Request body over the limit of {config.max_body_bytes} bytes.")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > config.max_body_bytes:
                return http_error(
                    413, "body_too_large", f"Request body over the limit of {config.max_body_bytes} bytes."
                )
        try:
            msg = _parse(bytes(body), config.max_body_bytes)
            session = state.new_session(config.max_predict_steps)
            streams_in = msg.get("streams")
            if not isinstance(streams_in, dict) or not streams_in:
                raise _Error(
                    "invalid_message", "'streams' must be an object: modality -> {t, values[, ends]}.", "streams"
                )
            start = msg.get("start")
            if start is not None:
                session.buffer.start = _finite_number(start, "start")
            for m, s in streams_in.items():
                if m not in modality_dims:
                    raise _Error(
                        "unknown_modality",
                        f"Unknown modality {m!r}; modalities: {sorted(modality_dims)}.",
                        f"streams.{m}",
                    )
                if not isinstance(s, dict) or "t" not in s or "values" not in s:
                    raise _Error(
                        "invalid_message", f"streams.{m} must be an object with 't' and 'values'.", f"streams.{m}"
                    )
                try:
                    session.push_many(m, s["t"], s["values"], s.get("ends"))
                except StreamError as exc:
                    raise _Error("invalid_value", str(exc), f"streams.{m}") from None
            window = session.drain()  # gaps longer than max_gap are left out: no grid over empty time
            skipped = session.buffer.skipped_overflow
            if skipped or len(window) > config.max_predict_steps:
                return http_error(
                    413,
                    "too_many_steps",
                    f"The streams span {len(window) + skipped} grid steps, over the limit of "
                    f"{config.max_predict_steps} per request; send shorter recordings.",
                    "streams",
                )
            if len(window) == 0:
                raise _Error("no_steps", "The streams give no step to predict.", "streams")
            out = await asyncio.get_running_loop().run_in_executor(None, session.run_recording, window)
        except _Error as err:
            state.count_error(err.code)
            return JSONResponse({k: v for k, v in err.payload.items() if k != "type"}, status_code=400)
        res: dict[str, Any] = {
            "times": out["times"].tolist(),
            "raw": np.round(out["raw"], 6).tolist(),
            "stable": np.round(out["stable"], 6).tolist(),
            "held": out["held"].tolist(),
            "masks": {m: window.masks[m].tolist() for m in modality_dims},
        }
        if session.classification:
            res["labels"] = out["stable"].argmax(axis=1).tolist()
            res["class_names"] = list(state.class_names)
        return res

    def handle(st: _Stream, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if "seq" in msg:
            st.last_seq = _check_seq(msg["seq"])
        events: Any
        if kind == "event":
            events = [msg]
        elif kind == "events":
            events = msg.get("events")
            if not isinstance(events, list):
                raise _Error("invalid_message", "'events' must be a list of event objects.", "events")
        elif kind == "flush":
            st.session.collect()
            st.session.collect(flush=True)
            state.wake.set()
            return
        elif kind == "ping":
            t = msg.get("t")
            st.emit({"type": "pong", "t": None if t is None else _finite_number(t, "t")})
            return
        else:
            raise _Error(
                "invalid_message", f"Unknown message type {kind!r}; valid: event, events, flush, ping.", "type"
            )
        checked = []
        for i, ev in enumerate(events):
            where = "" if kind == "event" else f"events[{i}]."
            if not isinstance(ev, dict):
                raise _Error("invalid_message", "Each event must be an object.", f"{where}".rstrip(".") or "events")
            m = ev.get("modality")
            if m not in modality_dims:
                raise _Error(
                    "unknown_modality",
                    f"Unknown modality {m!r}; modalities: {sorted(modality_dims)}.",
                    f"{where}modality",
                )
            t = _finite_number(ev.get("t"), f"{where}t")
            values = ev.get("values")
            if not isinstance(values, list) or len(values) != modality_dims[m]:
                got = len(values) if isinstance(values, list) else type(values).__name__
                raise _Error(
                    "wrong_dimension",
                    f"Modality {m!r} needs a list of {modality_dims[m]} numbers. Got {got}.",
                    f"{where}values",
                )
            # fast path: plain finite numbers (bool is neither int nor float by type); otherwise find the culprit
            try:
                plain = all(type(v) is float or type(v) is int for v in values) and math.isfinite(sum(values))
            except OverflowError:  # an integer too large for a float
                plain = False
            if not plain:
                for j, v in enumerate(values):
                    _finite_number(v, f"{where}values[{j}]")
            end = ev.get("end")
            checked.append((str(m), t, values, None if end is None else _finite_number(end, f"{where}end")))
        buf = st.session.buffer
        rows: dict[str, tuple[list[float], list[Any], list[float | None]]] = {}
        for m, t, values, end in checked:
            ts, vs, es = rows.setdefault(m, ([], [], []))
            ts.append(t)
            vs.append(values)
            es.append(end)
        ready = []
        for m, (ts, vs, es) in rows.items():  # all checked first: none of a bad message is used
            v64 = np.array(vs, dtype=np.float64)  # [N, D_m]
            t_arr = np.array(ts, dtype=np.float64)  # [N]
            if bool((np.abs(v64) > _FLOAT32_MAX).any()):
                raise _Error("invalid_value", f"Values of modality {m!r} overflow float32 (|x| > 3.4e38).", "events")
            v = v64.astype(np.float32)
            e: np.ndarray | None = None
            if buf.specs[m].kind == "interval":
                if any(x is None for x in es):
                    raise _Error("invalid_value", f"Events of interval modality {m!r} need 'end' times.", "events")
                e = np.array(es, dtype=np.float64)
                if bool((e < t_arr).any()):
                    raise _Error("invalid_value", f"Event ends of modality {m!r} must be >= their starts.", "events")
            elif any(x is not None for x in es):
                raise _Error("invalid_value", f"'end' is only allowed for interval modalities; {m!r} is not.", "events")
            ready.append((m, t_arr, v, e))
        for m, t_arr, v, e in ready:
            buf._accept(m, t_arr, v, e)
        st.dirty = True  # the batcher aligns what arrived (several steps at once when it is behind)
        state.wake.set()

    def collect_many(streams: list[_Stream]) -> None:
        for st in streams:
            st.dirty = False
        collect_sessions([st.session for st in streams])  # one alignment call per modality for all of them
        for st in streams:
            skipped = st.session.buffer.skipped_overflow - st.skipped_seen  # steps the buffer never emitted
            st.skipped_seen += skipped
            drop_oldest(st, max(0, st.session.pending - config.queue_size), skipped)

    def drop_oldest(st: _Stream, over: int, skipped: int = 0) -> None:
        if over > 0 or skipped > 0:  # the model is behind this stream: drop its oldest steps, keep the newest
            for _ in range(over):
                st.session._pending.popleft()
            st.dropped_steps += over + skipped
            st.emit(
                {
                    "type": "backpressure",
                    "error": "steps_dropped",
                    "dropped": st.dropped_steps,
                    "detail": "The model fell behind this stream; the oldest steps were dropped.",
                }
            )

    @app.websocket("/ws")
    async def stream_ws(ws: WebSocket) -> None:
        await ws.accept()
        if not token_ok(ws.headers, ws.query_params):
            state.count_error("unauthorized")
            await _refuse(ws, "unauthorized", "A valid token is required.", field="token", code=1008)
            return
        if len(state.streams) >= config.max_streams:
            state.refused_streams += 1
            state.count_error("too_many_streams")
            await _refuse(ws, "too_many_streams", f"The server holds its maximum of {config.max_streams} streams.")
            return
        state.counter += 1
        state.total_streams += 1
        st = _Stream(f"s{state.counter}", state.new_session(config.queue_size), config.queue_size)
        st.ws, st.send_timeout = ws, config.send_timeout
        state.streams[st.id] = st
        st.emit(
            {
                "type": "hello",
                "stream_id": st.id,
                "modalities": modality_dims,
                "rate": state.stream_config.rate,
                "class_names": list(state.class_names),
                "limits": {"max_message_bytes": config.max_message_bytes, "queue_size": config.queue_size},
            }
        )
        unyielded = 0
        try:
            while not st.closed:
                try:
                    raw = await asyncio.wait_for(ws.receive(), timeout=config.idle_timeout)
                except asyncio.TimeoutError:
                    state.count_error("idle_timeout")
                    st.emit(
                        _Error(
                            "idle_timeout", f"No message for {config.idle_timeout:g} s; the stream is closed."
                        ).payload
                    )
                    with contextlib.suppress(Exception):
                        await ws.close(code=1001)
                    break
                if raw["type"] == "websocket.disconnect":
                    break
                data = raw.get("text")
                if data is None:
                    data_b = raw.get("bytes") or b""
                    err = _Error("binary_not_supported", "Send JSON text messages, not binary ones.")
                    if len(data_b) > config.max_message_bytes:
                        err = _Error(
                            "message_too_large",
                            f"Message of {len(data_b)} bytes is over the limit of {config.max_message_bytes} bytes.",
                        )
                    st.errors += 1
                    state.count_error(err.code)
                    st.emit(err.payload)
                    continue
                state.messages += 1
                try:
                    handle(st, _parse(data, config.max_message_bytes))
                except _Error as err:
                    st.errors += 1
                    state.count_error(err.code)
                    st.emit(err.payload)
                unyielded += 1
                if unyielded >= 16:  # a burst of queued messages: let the batcher and other streams run
                    unyielded = 0
                    await asyncio.sleep(0)
        except WebSocketDisconnect:
            pass
        except Exception:  # never let one connection take the server down
            logger.exception("stream %s failed", st.id)
        finally:
            st.closed = True
            state.streams.pop(st.id, None)
            if st.slow is not None:
                st.slow.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await st.slow
            for w in st.watchers:
                with contextlib.suppress(asyncio.QueueFull):
                    w.put_nowait({"type": "ended", "stream_id": st.id})

    @app.websocket("/ws/watch")
    async def watch_ws(ws: WebSocket) -> None:
        await ws.accept()
        if not token_ok(ws.headers, ws.query_params):
            await _refuse(ws, "unauthorized", "A valid token is required.", field="token", code=1008)
            return
        if state.watching >= config.max_watchers:
            state.count_error("too_many_watchers")
            detail = f"The server holds its maximum of {config.max_watchers} watchers (--max-watchers)."
            await _refuse(ws, "too_many_watchers", detail)
            return
        state.watching += 1
        try:
            await watch(ws)
        finally:
            state.watching -= 1

    async def watch(ws: WebSocket) -> None:
        sid = ws.query_params.get("stream")
        st = state.streams.get(sid) if sid else None
        deadline = time.monotonic() + 30.0
        while st is None and time.monotonic() < deadline:  # wait for a stream to start
            st = state.streams.get(sid) if sid else next(reversed(list(state.streams.values())), None)
            if st is None:
                await asyncio.sleep(0.1)
        if st is None:
            await _refuse(ws, "no_stream", "No such stream.", field="stream", code=1000)
            return
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=config.queue_size)
        st.watchers.append(queue)
        try:
            head = _dumps(
                {
                    "type": "watch",
                    "stream_id": st.id,
                    "modalities": sorted(modality_dims),
                    "class_names": list(state.class_names),
                }
            )
            await ws.send_text(f'{head[:-1]},"history":[{",".join(st.history)}]}}')
            while True:
                msg = await queue.get()
                await asyncio.wait_for(ws.send_text(_dumps(msg)), timeout=config.send_timeout)
                if msg.get("type") == "ended":
                    break
        except Exception:
            pass
        finally:
            with contextlib.suppress(ValueError):
                st.watchers.remove(queue)

    return app


class ServerHandle:
    """A server running in a background thread (tests, benchmarks, notebooks).

    Attributes:
        url: ``http://host:port``.
        ws_url: ``ws://host:port/ws``.
    """

    def __init__(self, server: Any, thread: threading.Thread, host: str, port: int) -> None:
        self._server, self._thread = server, thread
        self.host, self.port = host, port
        self.url = f"http://{host}:{port}"
        self.ws_url = f"ws://{host}:{port}/ws"

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the server to exit and wait for the thread."""
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _head_timeout_protocol(seconds: float) -> Any:
    """The h11 protocol of uvicorn with a deadline for every request head.

    A client that connects and sends its headers slowly (or never) is disconnected after ``seconds`` instead of
    holding a socket forever (slowloris). The deadline starts again after each response on a kept-alive connection,
    so a half-sent second request cannot hold the socket either.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeadTimeoutProtocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._start_head_timer()

        def _start_head_timer(self) -> None:
            # The request head is complete once h11 has made a new request cycle (a new object in self.cycle).
            self._awaited_cycle = self.cycle
            self._head_timer = self.loop.call_later(seconds, self._head_timeout)

        def _head_timeout(self) -> None:
            if self.cycle is self._awaited_cycle and not self.transport.is_closing():
                self.transport.close()

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not self._awaited_cycle:
                self._head_timer.cancel()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._head_timer.cancel()
            if not self.transport.is_closing():
                self._start_head_timer()

        def handle_websocket_upgrade(self, event: Any) -> None:
            self._head_timer.cancel()
            super().handle_websocket_upgrade(event)

        def connection_lost(self, exc: Exception | None) -> None:
            self._head_timer.cancel()
            super().connection_lost(exc)

    return HeadTimeoutProtocol


def bind_socket(host: str, port: int) -> Any:
    """A listening TCP socket on ``host:port``, or a :class:`StreamError` saying why not (before any banner).

    Raises:
        StreamError: a port outside [0, 65535], a host that does not resolve, a port in use or not permitted.

    Example:
        >>> bind_socket("127.0.0.1", 70000)
        Traceback (most recent call last):
        ...
        mmfuse.errors.StreamError: The port must be an integer in [0, 65535]. Got 70000.
    """
    import errno
    import socket

    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise StreamError(f"The port must be an integer in [0, 65535]. Got {port!r}.")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise StreamError(f"Cannot serve on host {host!r}: it does not resolve to an address ({exc}).") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        why = {
            errno.EADDRINUSE: "the port is already in use; choose another --port or stop the other server",
            errno.EACCES: "permission denied (ports below 1024 need privileges); choose another --port",
            errno.EADDRNOTAVAIL: "the address is not one of this machine's; choose another --host",
        }.get(exc.errno or 0, exc.strerror or str(exc))
        raise StreamError(f"Cannot serve on {host}:{port}: {why}.") from None
    sock.set_inheritable(True)
    return sock


def _uvicorn_server(app: Any, config: ServerConfig) -> Any:
    import uvicorn

    ucfg = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level="warning",
        http=_head_timeout_protocol(config.header_timeout),
        timeout_keep_alive=5,
        h11_max_incomplete_event_size=16 * 1024,  # a request head over 16 KiB is refused
        ws="websockets-sansio",
        ws_max_size=4 * config.max_message_bytes,  # larger frames are refused by the protocol (close 1009)
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        lifespan="on",
    )
    return uvicorn.Server(ucfg)


def run_in_thread(app: Any, config: ServerConfig, timeout: float = 20.0) -> ServerHandle:
    """Start ``app`` with uvicorn in a daemon thread and wait until it accepts connections.

    Raises:
        RuntimeError: the server did not start within ``timeout`` seconds.
    """
    sock = bind_socket(config.host, config.port)
    port = sock.getsockname()[1]
    cfg = ServerConfig(**{**config.__dict__, "port": port})
    server = _uvicorn_server(app, cfg)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="mmfuse-server")
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError(f"The mmfuse server did not start on {cfg.host}:{port}.")
        time.sleep(0.02)
    return ServerHandle(server, thread, cfg.host, port)


def serve(model_dir: str | Any, config: ServerConfig, on_ready: Any = None) -> None:
    """Serve ``model_dir`` until interrupted (what ``mmfuse serve`` runs).

    The model is loaded and checked and the socket bound before anything else, so a bad model directory, a port
    in use or an unresolvable host raises a :class:`StreamError` (or ``DataError``) before ``on_ready()`` is
    called (the CLI prints its banner there).

    Everything loaded before the server starts (torch, the model, the app) is moved out of the garbage
    collector's reach (``gc.freeze``): its full passes would walk all of it and stall the event loop for 100-300 ms
    every few seconds under load. :func:`run_in_thread` leaves the host process's collector alone.
    """
    app = create_app(model_dir, config)
    sock = bind_socket(config.host, config.port)
    server = _uvicorn_server(app, config)
    if on_ready is not None:
        on_ready()
    gc.collect()
    gc.freeze()
    server.run(sockets=[sock])
