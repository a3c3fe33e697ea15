"""Server memory and ``/health`` under a bounded mixed abuse run (``python benchmarks/bench_abuse.py [--seconds 20]``).

A real server (``mmfuse serve`` in a subprocess, loopback only) on a tiny causal model, and from this process, for
``--seconds`` seconds at most, a fixed number of abusive clients at once:

* gap streams: WebSocket streams sending events at t = 0, then 1e5 s and 1e6 s later (before the fix one such
  stream grew the server past 4 GB);
* history fillers: streams sending 30 Hz events each carrying a 256-character ``seq`` (the longest allowed) and
  one 60 KB ``seq`` (refused), so every prediction history is full;
* bad messages: deeply nested JSON, 400-digit integers, 180 KB UTF-8 messages, in a loop;
* watchers: 100 ``/ws/watch`` connections (the limit is 64);
* slowloris: 200 sockets that send half a request head and never finish it;
* ``POST /predict`` with events 1e5 s apart and one spanning 3 million steps (refused with 413).

Meanwhile ``/health`` is probed every 0.25 s (5 s timeout) and the server's RSS read from ``/proc`` every 0.5 s.
The report: RSS before, peak and after, ``/health`` latency p50 / p99 / max and failures, and the load average.
Every count and the duration are bounded; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from websockets.sync.client import connect

from mmfuse.models import ModelConfig, build_model, save_model
from mmfuse.stream import StreamConfig, StreamSpec, save_stream_config


def _model_dir(root: Path) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig(
        {"acc": 3, "gyro": 2},
        out_dim=3,
        hidden=16,
        bidirectional=False,
        causal=True,
        fusion="gated",
        label_level="step",
    )
    save_model(build_model(cfg), root)
    specs = {"acc": StreamSpec(3, rate=30.0), "gyro": StreamSpec(2, rate=30.0)}
    save_stream_config(root, StreamConfig(rate=30.0, specs=specs))
    return root


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Run:
    def __init__(self, url: str, ws_url: str, deadline: float) -> None:
        self.url, self.ws_url, self.deadline = url, ws_url, deadline
        self.errors: dict[str, int] = {}
        self.lock = threading.Lock()

    def alive(self) -> bool:
        return time.monotonic() < self.deadline

    def note(self, what: str) -> None:
        with self.lock:
            self.errors[what] = self.errors.get(what, 0) + 1


def _gap_stream(run: _Run, k: int) -> None:
    try:
        with connect(run.ws_url, open_timeout=10) as ws:
            ws.recv(timeout=10)
            for t in (0.0, 1e5 * (k + 1), 1e6 * (k + 1), 1e6 * (k + 1) + 1):
                ws.send(json.dumps({"type": "event", "modality": "acc", "t": t, "values": [0.0, 0.0, 0.0]}))
                ws.send(json.dumps({"type": "event", "modality": "gyro", "t": t, "values": [0.0, 0.0]}))
            ws.send(json.dumps({"type": "flush"}))
            while run.alive():
                try:
                    ws.recv(timeout=0.5)
                except TimeoutError:
                    continue
    except Exception as exc:  # closed by the server (idle timeout) or at the end
        run.note(f"gap stream: {type(exc).__name__}")


def _history_filler(run: _Run, k: int) -> None:
    seq = "s" * 256
    try:
        with connect(run.ws_url, open_timeout=10) as ws:
            ws.recv(timeout=10)
            ws.send(json.dumps({"type": "ping", "seq": "x" * 60_000}))  # refused: longer than 256 characters
            i = 0
            while run.alive():
                batch = [
                    {"type": "event", "modality": "acc", "t": (i + j) / 30, "values": [0.1, 0.2, 0.3], "seq": seq}
                    for j in range(30)
                ]
                ws.send(json.dumps({"type": "events", "events": batch, "seq": seq}))
                i += 30
                try:
                    while True:
                        ws.recv(timeout=0.01)
                except TimeoutError:
                    pass
                time.sleep(0.05)
    except Exception as exc:
        run.note(f"history filler: {type(exc).__name__}")


def _bad_messages(run: _Run) -> None:
    msgs = [
        "[" * 5000 + "]" * 5000,
        '{"type": "event", "modality": "acc", "t": 1' + "0" * 400 + ', "values": [1, 2, 3]}',
        json.dumps({"type": "ping", "seq": "€" * 60_000}, ensure_ascii=False),
        '{"type": "ping", "seq": ' + "[" * 900 + "]" * 900 + "}",
    ]
    try:
        with connect(run.ws_url, open_timeout=10, max_size=2**22) as ws:
            ws.recv(timeout=10)
            while run.alive():
                for m in msgs:
                    ws.send(m)
                    ws.recv(timeout=5)
    except Exception as exc:
        run.note(f"bad messages: {type(exc).__name__}")


def _watchers(run: _Run, n: int, held: list[Any]) -> None:
    for _ in range(n):
        try:
            ws = connect(run.ws_url + "/watch", open_timeout=10)
            held.append(ws)
            if json.loads(ws.recv(timeout=10)).get("type") == "watch":
                run.note("watcher accepted")
            else:
                run.note("watcher refused")
        except Exception as exc:
            run.note(f"watcher: {type(exc).__name__}")


def _slowloris(run: _Run, host: str, port: int, n: int, held: list[socket.socket]) -> None:
    for _ in range(n):
        try:
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            held.append(s)
        except OSError as exc:
            run.note(f"slowloris: {type(exc).__name__}")


def _predicts(run: _Run) -> None:
    far = {"acc": {"t": [0.0, 1e5], "values": [[0, 0, 0]] * 2}, "gyro": {"t": [0.0, 1e5], "values": [[0, 0]] * 2}}
    t = np.arange(0, 1e5, 50.0).tolist()
    many = {"acc": {"t": t, "values": [[0, 0, 0]] * len(t)}}
    with httpx.Client(timeout=30) as client:
        while run.alive():
            for body in (far, many):
                try:
                    client.post(run.url + "/predict", json={"streams": body})
                except httpx.HTTPError as exc:
                    run.note(f"predict: {type(exc).__name__}")
            time.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="Length of the abuse run (at most 60).")
    ap.add_argument("--out", type=Path, default=None, help="Write the report as JSON here.")
    args = ap.parse_args()
    seconds = min(max(args.seconds, 5.0), 60.0)
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        model = _model_dir(Path(tmp))
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from mmfuse.cli import main; main()",
                "serve",
                str(model),
                "--port",
                str(port),
                "--idle-timeout",
                "30",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        url, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws"
        try:
            for _ in range(300):
                try:
                    if httpx.get(url + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            rss_before = _rss_mb(proc.pid)
            load_before = os.getloadavg()
            run = _Run(url, ws_url, time.monotonic() + seconds)
            held_ws: list[Any] = []
            held_socks: list[socket.socket] = []
            threads = [threading.Thread(target=_gap_stream, args=(run, k)) for k in range(8)]
            threads += [threading.Thread(target=_history_filler, args=(run, k)) for k in range(8)]
            threads += [threading.Thread(target=_bad_messages, args=(run,)) for _ in range(2)]
            threads += [threading.Thread(target=_predicts, args=(run,))]
            threads += [threading.Thread(target=_watchers, args=(run, 100, held_ws))]
            threads += [threading.Thread(target=_slowloris, args=(run, "127.0.0.1", port, 200, held_socks))]
            for th in threads:
                th.daemon = True
                th.start()
            rss, lat, failures, probes = [rss_before], [], 0, 0
            with httpx.Client(timeout=5) as probe:
                next_rss = time.monotonic()
                while run.alive():
                    probes += 1
                    t0 = time.perf_counter()
                    try:
                        ok = probe.get(url + "/health").status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    lat.append(1000 * (time.perf_counter() - t0))
                    failures += not ok
                    if time.monotonic() >= next_rss:
                        rss.append(_rss_mb(proc.pid))
                        next_rss += 0.5
                    time.sleep(0.25)
            for th in threads:
                th.join(10)
            for w in held_ws:
                w.close()
            for s in held_socks:
                s.close()
            time.sleep(1.0)
            rss_after = _rss_mb(proc.pid)
            alive = proc.poll() is None
        finally:
            proc.terminate()
            proc.wait(10)
    a = np.asarray(lat)
    report = {
        "seconds": seconds,
        "server_alive_after": alive,
        "rss_mb": {"before": round(rss_before, 1), "peak": round(max(rss), 1), "after": round(rss_after, 1)},
        "health_ms": {
            "probes": probes,
            "failures": failures,
            "p50": round(float(np.percentile(a, 50)), 1),
            "p99": round(float(np.percentile(a, 99)), 1),
            "max": round(float(a.max()), 1),
        },
        "client_errors": run.errors,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
