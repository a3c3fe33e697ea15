"""Streaming latency (run on demand: ``python benchmarks/bench_stream.py [--streams 100] [--seconds 10]``).

1. Model step: the default model (the basic-motions preset in its causal form: 2-layer causal conv encoder,
   H = 32, concat fusion, last-step pooling, 4 classes; random weights: latency does not depend on them), one
   step of one stream through :class:`mmfuse.stream.IncrementalModel` (inference mode, 1 torch thread, the
   process pinned to the idler core), p50 / p99 / max and the share of outliers over 3000 steps; and the whole
   session step (buffer alignment + normalisation + model + stabiliser) of one stream.
2. Server processing in one process, no network: N sessions sharing one model, each getting one 30 Hz message
   per tick (two modalities), then what the server's batcher runs per tick (``collect_sessions``: one merged
   alignment call per modality; ``step_sessions``: one batched model step; stabiliser; prediction messages
   encoded as JSON). Reported per stream-step; 100 streams at 30 Hz leave 333 us per stream-step on one core.
3. End to end: a real server (``mmfuse.stream.server.serve`` in a subprocess on loopback) and N concurrent
   WebSocket streams at 30 Hz from one asyncio client process (messages pre-encoded, so the client costs little;
   on uvloop when installed; ``gc.freeze()`` first so that full collections do not stall it). With two or more
   cores the server process is pinned to the first and the load generator to the second, so that the clients do
   not take the server's core; the CPU share of each process over the run is reported.
   Latency runs from sending the message that completes a step (step ``i`` is final once the message of step
   ``i + 2`` has arrived: tolerance one sample, no lateness) to receiving that step's prediction. The report
   counts predictions expected vs received and fails the goal when the server falls behind (fewer than 99 % of
   the expected predictions within 2 s of the end, or p99 over 50 ms). The client and the server share the
   machine's cores with whatever else runs: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
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
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"p50": math.nan, "p99": math.nan, "max": math.nan, "n": 0}
    return {
        "p50": round(float(np.percentile(a, 50)), 4),
        "p99": round(float(np.percentile(a, 99)), 4),
        "max": round(float(a.max()), 4),
        "n": int(a.size),
    }


def idler_core() -> int | None:
    """The core with the most idle time over 0.5 s (from /proc/stat), or None where that cannot be read."""
    try:

        def idle() -> dict[int, tuple[int, int]]:
            out = {}
            for line in open("/proc/stat").read().splitlines():
                if line.startswith("cpu") and line[3].isdigit():
                    f = [int(x) for x in line.split()[1:]]
                    out[int(line.split()[0][3:])] = (f[3] + f[4], sum(f))
            return out

        a = idle()
        time.sleep(0.5)
        b = idle()
        share = {c: (b[c][0] - a[c][0]) / max(1, b[c][1] - a[c][1]) for c in a if c in b}
        return max(share, key=share.get)
    except (OSError, ValueError, IndexError):
        return None


def model_step(n: int = 3000) -> dict[str, object]:
    core = idler_core()
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    model = default_model()
    engine = IncrementalModel(model)
    state = engine.init_state(1)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(n, 2, 3)).astype(np.float32))
    ones = torch.ones(1, dtype=torch.bool)
    masks = {"accelerometer": ones, "gyroscope": ones}
    times = []
    with torch.inference_mode():
        for k in range(n):
            inp = {"accelerometer": x[k, 0:1], "gyroscope": x[k, 1:2]}
            t0 = time.perf_counter()
            _, state = engine.step(inp, masks, state)
            times.append((time.perf_counter() - t0) * 1000)
    session = StreamingSession(model, stream_config(), start=0.0)
    xs = x.numpy()
    full = []
    for k in range(n):
        t0 = time.perf_counter()
        session.push("accelerometer", k / RATE, xs[k, 0])
        session.push("gyroscope", k / RATE, xs[k, 1])
        session.poll()
        full.append((time.perf_counter() - t0) * 1000)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    steps = np.asarray(times[100:])
    p50 = float(np.median(steps))
    return {
        "pinned_core": core,
        "model_step_ms": pct(steps),
        "model_step_outliers": {
            "over_2x_p50": round(float((steps > 2 * p50).mean()), 4),
            "over_5ms": round(float((steps > 5.0).mean()), 4),
        },
        "session_step_ms": pct(full[100:]),
    }


def server_tick(n_streams: int, ticks: int = 150) -> dict[str, object]:
    """What the server runs per 30 Hz tick for ``n_streams`` streams, in one process (no network)."""
    from mmfuse.stream import collect_sessions, step_sessions

    engine = IncrementalModel(default_model())
    sessions = [StreamingSession(engine, stream_config(), start=0.0) for _ in range(n_streams)]
    rng = np.random.default_rng(0)
    vals = rng.normal(size=(ticks, n_streams, 2, 1, 3)).astype(np.float32)
    per_tick = []
    n_pred = 0
    for k in range(ticks):
        t = np.array([k / RATE])
        t0 = time.perf_counter()
        for j, s in enumerate(sessions):
            s.buffer._accept("accelerometer", t, vals[k, j, 0], None)
            s.buffer._accept("gyroscope", t, vals[k, j, 1], None)
        collect_sessions(sessions)
        res = step_sessions(sessions, max_rounds=1)
        msgs = [json.dumps({"type": "prediction", **r.to_dict()}) for rr in res for r in rr]
        per_tick.append((time.perf_counter() - t0) * 1000)
        n_pred += len(msgs) if k >= 10 else 0
    tick_ms = np.asarray(per_tick[10:])
    return {
        "streams": n_streams,
        "tick_ms": pct(tick_ms),
        "us_per_stream_step": round(1000 * float(tick_ms.sum()) / max(1, n_pred), 1),
        "budget_us_per_stream_step_at_30hz": round(1e6 / (RATE * n_streams), 1),
    }


async def one_stream(url: str, seconds: float, lat: list[float], start_delay: float, stats: dict) -> None:
    import websockets

    await asyncio.sleep(start_delay)
    sent: dict[int, float] = {}
    got = 0
    rng = np.random.default_rng()
    n_msgs = int(seconds * RATE)
    payloads = [
        json.dumps(
            {
                "type": "events",
                "seq": k,
                "events": [
                    {"modality": m, "t": k / RATE, "values": rng.normal(size=3).round(4).tolist()}
                    for m in ("accelerometer", "gyroscope")
                ],
            }
        )
        for k in range(n_msgs)
    ]
    async with websockets.connect(url, max_size=2**22, compression=None) as ws:
        await ws.recv()  # hello

        async def reader() -> None:
            nonlocal got
            async for text in ws:
                msg = json.loads(text)
                if msg.get("type") == "prediction":
                    done = msg["index"] + 2  # the message that made step `index` final
                    if done in sent:
                        lat.append((time.perf_counter() - sent[done]) * 1000)
                        got += 1
                elif msg.get("type") == "backpressure":
                    stats["backpressure"] += 1

        task = asyncio.create_task(reader())
        t0 = time.perf_counter()
        for k in range(n_msgs):
            sent[k] = time.perf_counter()
            await ws.send(payloads[k])
            await asyncio.sleep(max(0.0, t0 + (k + 1) / RATE - time.perf_counter()))
        deadline = time.perf_counter() + 2.0
        while got < n_msgs - 2 and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        task.cancel()
    stats["expected"] += n_msgs - 2
    stats["received"] += got


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (from /proc; NaN where that cannot be read)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return math.nan


def end_to_end(
    n_streams: int, seconds: float, batch_interval: float | None = None, pin: bool = True
) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as d:
        save_model(default_model(), d)
        save_stream_config(d, stream_config())
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        code = (
            "from mmfuse.stream.server import ServerConfig, serve; "
            f"serve({d!r}, ServerConfig(port={port}, max_streams={n_streams + 10}"
            + ("" if batch_interval is None else f", batch_interval={batch_interval}")
            + "))"
        )
        proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "1"})
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        pinned = pin and len(cores) >= 2
        if pinned:  # the server on one core, this load generator on another: the clients do not starve the server
            os.sched_setaffinity(proc.pid, {cores[0]})
            os.sched_setaffinity(0, {cores[1]})
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
            stats = {"expected": 0, "received": 0, "backpressure": 0}
            url = f"ws://127.0.0.1:{port}/ws"

            async def main() -> None:
                await asyncio.gather(
                    *(one_stream(url, seconds, lat, i / n_streams / RATE, stats) for i in range(n_streams))
                )

            gc.collect()
            gc.freeze()  # no full collections over torch & co. in the load generator (100+ ms stalls)
            load_before = os.getloadavg()
            cpu0, own0, wall0 = cpu_seconds(proc.pid), time.process_time(), time.perf_counter()
            try:  # the clients on uvloop where installed (the serve extra): less client CPU per message
                import uvloop
            except ImportError:
                asyncio.run(main())
            else:
                uvloop.run(main())
            wall = time.perf_counter() - wall0
            server_cpu = (cpu_seconds(proc.pid) - cpu0) / wall
            client_cpu = (time.process_time() - own0) / wall
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").json()
        finally:
            proc.terminate()
            proc.wait(10)
            if pinned:
                os.sched_setaffinity(0, cores)
    e2e = pct(lat)
    share = stats["received"] / max(1, stats["expected"])
    return {
        "streams": n_streams,
        "seconds": seconds,
        "load_average_at_start": load_before,
        "predictions_expected": stats["expected"],
        "predictions_received": stats["received"],
        "received_share": round(share, 4),
        "backpressure_messages": stats["backpressure"],
        "end_to_end_ms": e2e,
        "pinned_server_core_client_core": [cores[0], cores[1]] if pinned else None,
        "server_cpu_share": round(server_cpu, 3),
        "client_cpu_share": round(client_cpu, 3),
        "server_model_round_ms": metrics["model_step_ms"],
        "server_batch_size": metrics["batch_size"],
        "dropped_steps": metrics["dropped_steps"],
        "dropped_outgoing": metrics["dropped_outgoing"],
        "goal_p99_50ms_met": bool(share >= 0.99 and e2e["p99"] <= 50.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--skip-server", action="store_true")
    parser.add_argument("--batch-interval", type=float, default=None, help="ServerConfig.batch_interval (s)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the server and the clients to cores")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"load average before: {os.getloadavg()}")
    res = model_step()
    print(json.dumps(res, indent=2))
    print(json.dumps(server_tick(args.streams), indent=2))
    if not args.skip_server:
        print(json.dumps(end_to_end(args.streams, args.seconds, args.batch_interval, not args.no_pin), indent=2))
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
