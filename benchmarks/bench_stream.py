"""Streaming latency (run on demand: ``python benchmarks/bench_stream.py [--streams 100] [--seconds 10]``).

1. Model step: the default model (the basic-motions preset in its causal form: 2-layer causal conv encoder,
   H = 32, concat fusion, last-step pooling, 4 classes; random weights: latency does not depend on them), one
   step of one stream through :class:`mmfuse.stream.IncrementalModel`, 1 torch thread; and the whole session
   step (buffer alignment + normalisation + model + stabiliser). p50 / p99 over 3000 steps.
2. End to end: a real server (``mmfuse.stream.server.serve`` in a subprocess on loopback) and N concurrent
   WebSocket streams at 30 Hz from one asyncio client process; latency from sending the message that completes
   a step to receiving that step's prediction. The client and the server share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from mmfuse.models import ModelConfig, build_model, save_model
from mmfuse.stream import IncrementalModel, StreamConfig, StreamingSession, StreamSpec, save_stream_config

RATE = 30.0


def default_model():
    torch.manual_seed(0)
    cfg = ModelConfig(
        {"accelerometer": 3, "gyroscope": 3},
        out_dim=4,
        hidden=32,
        encoder="conv",
        encoder_layers=2,
        dropout=0.2,
        causal=True,
        bidirectional=False,
        pooling="last",
        fusion="concat",
    )
    return build_model(cfg).eval()


def stream_config():
    specs = {m: StreamSpec(3, rate=RATE) for m in ("accelerometer", "gyroscope")}
    return StreamConfig(rate=RATE, specs=specs, alpha=0.3, threshold=0.9)


def pct(values) -> dict[str, float]:
    a = np.asarray(values)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "n": int(a.size)}


def model_step(n: int = 3000) -> dict[str, dict[str, float]]:
    model = default_model()
    engine = IncrementalModel(model)
    state = engine.init_state(1)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(n, 2, 3)).astype(np.float32))
    ones = torch.ones(1, dtype=torch.bool)
    times = []
    for k in range(n):
        inp = {"accelerometer": x[k, 0:1], "gyroscope": x[k, 1:2]}
        t0 = time.perf_counter()
        _, state = engine.step(inp, {"accelerometer": ones, "gyroscope": ones}, state)
        times.append((time.perf_counter() - t0) * 1000)
    session = StreamingSession(model, stream_config(), start=0.0)
    full = []
    for k in range(n):
        t0 = time.perf_counter()
        session.push("accelerometer", k / RATE, x[k, 0].numpy())
        session.push("gyroscope", k / RATE, x[k, 1].numpy())
        session.poll()
        full.append((time.perf_counter() - t0) * 1000)
    return {"model_step_ms": pct(times[100:]), "session_step_ms": pct(full[100:])}


async def one_stream(url: str, seconds: float, lat: list[float], start_delay: float) -> int:
    import websockets

    await asyncio.sleep(start_delay)
    sent: dict[int, float] = {}
    got = 0
    async with websockets.connect(url, max_size=2**22) as ws:
        await ws.recv()  # hello

        async def reader() -> None:
            nonlocal got
            async for text in ws:
                msg = json.loads(text)
                if msg.get("type") == "prediction" and msg.get("seq") in sent:
                    lat.append((time.perf_counter() - sent[msg["seq"]]) * 1000)
                    got += 1

        task = asyncio.create_task(reader())
        rng = np.random.default_rng()
        t0 = time.perf_counter()
        k = 0
        while time.perf_counter() - t0 < seconds:
            t = k / RATE
            events = [
                {"modality": m, "t": t, "values": rng.normal(size=3).round(4).tolist()}
                for m in ("accelerometer", "gyroscope")
            ]
            sent[k] = time.perf_counter()
            await ws.send(json.dumps({"type": "events", "events": events, "seq": k}))
            k += 1
            await asyncio.sleep(max(0.0, t0 + k / RATE - time.perf_counter()))
        await asyncio.sleep(0.5)
        task.cancel()
    return got


def end_to_end(n_streams: int, seconds: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as d:
        save_model(default_model(), d)
        save_stream_config(d, stream_config())
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        code = (
            "from mmfuse.stream.server import ServerConfig, serve; "
            f"serve({d!r}, ServerConfig(port={port}, max_streams={n_streams + 10}))"
        )
        proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "1"})
        try:
            import httpx

            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            lat: list[float] = []
            url = f"ws://127.0.0.1:{port}/ws"

            async def main() -> list[int]:
                return await asyncio.gather(
                    *(one_stream(url, seconds, lat, i / n_streams / RATE) for i in range(n_streams))
                )

            counts = asyncio.run(main())
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").json()
        finally:
            proc.terminate()
            proc.wait(10)
    return {
        "streams": n_streams,
        "seconds": seconds,
        "predictions": int(sum(counts)),
        "end_to_end_ms": pct(lat[len(lat) // 10 :]),  # skip the connection ramp-up
        "server_model_round_ms": metrics["model_step_ms"],
        "server_batch_size": metrics["batch_size"],
        "dropped_steps": metrics["dropped_steps"],
        "dropped_outgoing": metrics["dropped_outgoing"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--skip-server", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"load average before: {os.getloadavg()}")
    res = model_step()
    print(json.dumps(res, indent=2))
    if not args.skip_server:
        print(json.dumps(end_to_end(args.streams, args.seconds), indent=2))
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
