"""A Python client for the streaming server, and replay of a recorded folder in real time or faster.

Needs the ``serve`` extra (``websockets``). :class:`StreamClient` is synchronous: it sends from the calling
thread and receives on a background thread into a queue.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mmfuse.align import STREAM_SUFFIXES, Stream, read_stream_file
from mmfuse.errors import StreamError

__all__ = ["StreamClient", "load_recording", "recording_events", "replay_recording"]


class StreamClient:
    """A WebSocket connection to ``mmfuse serve`` for one stream.

    Args:
        url: ``ws://host:port/ws``.
        token: Sent as ``Authorization: Bearer TOKEN`` when given.
        max_size: Largest message accepted from the server.

    Attributes:
        hello: The server's first message (stream id, modalities, rate, class names, limits).
        messages: Every message received, in order (predictions, errors, backpressure notices, ...).
    """

    def __init__(
        self, url: str, *, token: str | None = None, max_size: int = 2**22, open_timeout: float = 10.0
    ) -> None:
        try:
            from websockets.sync.client import connect
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("StreamClient needs the 'serve' extra: pip install 'mmfuse[serve]'.") from exc
        if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
            raise StreamError(
                f"The 'url' parameter of StreamClient must be a WebSocket URL (ws://host:port/ws or wss://...). "
                f"Got {url!r}."
            )
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            self._ws = connect(url, additional_headers=headers, max_size=max_size, open_timeout=open_timeout)
        except ConnectionRefusedError:
            raise StreamError(
                f"No server answers at {url}: the connection was refused (start 'mmfuse serve' first)."
            ) from None
        except TimeoutError:
            raise StreamError(f"The server at {url} did not answer within {open_timeout} s.") from None
        except OSError as exc:
            raise StreamError(f"Cannot connect to {url}: {exc.strerror or exc}.") from None
        except Exception as exc:  # websockets' handshake errors (a page that is not the stream endpoint, a 4xx)
            raise StreamError(f"The WebSocket handshake with {url} failed: {exc}.") from None
        self._inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.messages: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        hello = self.receive(timeout=open_timeout)
        if hello is None or hello.get("type") != "hello":
            self.close()
            raise StreamError(f"The server refused the stream: {hello}")
        self.hello = hello

    def _read(self) -> None:
        try:
            for text in self._ws:
                msg = json.loads(text)
                msg["_received"] = time.perf_counter()
                self.messages.append(msg)
                self._inbox.put(msg)
        except Exception:
            pass
        finally:
            self._inbox.put(None)

    def send(self, message: Mapping[str, Any]) -> None:
        """Send one JSON message."""
        self._ws.send(json.dumps(message))

    def send_event(self, modality: str, t: float, values: Any, end: float | None = None, seq: Any = None) -> None:
        """Send one event."""
        msg: dict[str, Any] = {
            "type": "event",
            "modality": modality,
            "t": float(t),
            "values": np.asarray(values, dtype=float).reshape(-1).tolist(),
        }
        if end is not None:
            msg["end"] = float(end)
        if seq is not None:
            msg["seq"] = seq
        self.send(msg)

    def receive(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next message (None when the connection closed or ``timeout`` passed)."""
        try:
            return self._inbox.get(timeout=timeout)
        except queue.Empty:
            return None

    def flush(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Ask the server to emit every remaining step; return the predictions received until it goes quiet."""
        self.send({"type": "flush"})
        out: list[dict[str, Any]] = []
        while True:
            msg = self.receive(timeout=min(timeout, 0.5))
            if msg is None:
                return out
            if msg.get("type") == "prediction":
                out.append(msg)

    def close(self) -> None:
        """Close the connection."""
        self._ws.close()

    def __enter__(self) -> StreamClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_recording(directory: str | os.PathLike[str]) -> dict[str, Stream]:
    """Read every ``<modality>.csv|npz|parquet`` of a recording folder (as ``mmfuse align`` does).

    Raises:
        FileNotFoundError: no such folder or no stream file in it.
    """
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"Recording folder {d} does not exist.")
    files = sorted(p for p in d.iterdir() if p.suffix in STREAM_SUFFIXES and p.stem != "labels")
    if not files:
        raise FileNotFoundError(f"{d} holds no stream file ({', '.join(STREAM_SUFFIXES)}).")
    return {p.stem: read_stream_file(p) for p in files}


def recording_events(streams: Mapping[str, Stream]) -> list[tuple[float, str, float, np.ndarray, float | None]]:
    """Every sample of every stream as ``(arrival time, modality, t, values, end)``, in arrival order.

    A sample arrives at its time (interval rows at their end, when they are complete).
    """
    rows: list[tuple[float, str, float, np.ndarray, float | None]] = []
    for m, s in streams.items():
        arrive = s.ends if s.ends is not None else s.timestamps
        for i in range(len(s)):
            rows.append(
                (float(arrive[i]), m, float(s.timestamps[i]), s.values[i], None if s.ends is None else float(s.ends[i]))
            )
    rows.sort(key=lambda r: (r[0], r[1]))
    return rows


def replay_recording(
    recording: str | os.PathLike[str] | Mapping[str, Stream],
    url: str,
    *,
    speed: float = 1.0,
    token: str | None = None,
    on_message: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Send a recording to the server as a live stream, in real time (``speed=1``), faster, or at once (0).

    Args:
        recording: A recording folder or a mapping modality -> stream.
        url: ``ws://host:port/ws``.
        speed: Playback speed factor; 0 sends as fast as possible.
        token: Server token.
        on_message: Called with every message received (predictions, errors).

    Returns:
        ``stream_id``, ``events`` sent, ``predictions`` (list of prediction messages), ``errors`` and
        ``latency_ms`` percentiles (from sending the event that completed a step to receiving its prediction).
    """
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or speed < 0:
        raise ValueError(f"The 'speed' parameter of replay_recording must be a number >= 0. Got {speed!r}.")
    streams = load_recording(recording) if not isinstance(recording, Mapping) else recording
    events = recording_events(streams)
    client = StreamClient(url, token=token)
    sent_at: dict[int, float] = {}
    try:
        t0_wall, t0 = time.perf_counter(), events[0][0] if events else 0.0
        for k, (arrive, m, t, v, end) in enumerate(events):
            if speed > 0:
                delay = (arrive - t0) / speed - (time.perf_counter() - t0_wall)
                if delay > 0:
                    time.sleep(delay)
            sent_at[k] = time.perf_counter()
            client.send_event(m, t, v, end, seq=k)
        client.flush()
    finally:
        client.close()
    preds = [m for m in client.messages if m.get("type") == "prediction"]
    errors = [m for m in client.messages if m.get("type") == "error"]
    if on_message is not None:
        for msg in client.messages:
            on_message(msg)
    lat = [1000.0 * (p["_received"] - sent_at[p["seq"]]) for p in preds if isinstance(p.get("seq"), int)]
    pct = {f"p{q}": float(np.percentile(lat, q)) for q in (50, 99)} if lat else {}
    return {
        "stream_id": client.hello.get("stream_id"),
        "events": len(events),
        "predictions": preds,
        "errors": errors,
        "latency_ms": pct,
    }
