"""The live page in headless Chromium: it renders and updates while a stream runs."""

import json
import shutil
import subprocess
import threading
import time

import httpx
import pytest

pytest.importorskip("fastapi")
websockets_sync = pytest.importorskip("websockets.sync.client")

from mmfuse.stream.client import StreamClient  # noqa: E402
from mmfuse.stream.server import ServerConfig, create_app, run_in_thread  # noqa: E402

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _feed(url, stop):
    with StreamClient(url) as c:
        k = 0
        while not stop.is_set():
            c.send_event("acc", k / 30, [0.1 * (k % 7), 0.0, 1.0])
            if k % 3:
                c.send_event("gyro", k / 30, [0.5, -0.5])
            k += 1
            time.sleep(1 / 60)


def _evaluate(ws, expr, ident):
    ws.send(
        json.dumps({"id": ident, "method": "Runtime.evaluate", "params": {"expression": expr, "returnByValue": True}})
    )
    while True:
        msg = json.loads(ws.recv(timeout=10))
        if msg.get("id") == ident:
            return msg["result"]["result"].get("value")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (apt-get install chromium to run it)")
def test_live_page_renders_and_updates(model_dir, tmp_path):
    cfg = ServerConfig(port=0)
    stop = threading.Event()
    with run_in_thread(create_app(model_dir, cfg), cfg) as srv:
        feeder = threading.Thread(target=_feed, args=(srv.ws_url, stop), daemon=True)
        feeder.start()
        proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={tmp_path}",
                "--remote-debugging-port=0",
                srv.url + "/",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            port_file = tmp_path / "DevToolsActivePort"
            deadline = time.monotonic() + 15
            while not port_file.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            pages = []
            while not pages and time.monotonic() < deadline:
                pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page"]
                time.sleep(0.1)
            with websockets_sync.connect(pages[0]["webSocketDebuggerUrl"], max_size=2**24) as ws:
                first = second = 0
                while time.monotonic() < deadline and first == 0:
                    first = int(_evaluate(ws, "document.getElementById('steps').textContent", 1) or 0)
                    time.sleep(0.2)
                time.sleep(1.0)
                second = int(_evaluate(ws, "document.getElementById('steps').textContent", 2))
                status = _evaluate(ws, "document.getElementById('status').textContent", 3)
                stream = _evaluate(ws, "document.getElementById('stream').textContent", 4)
                # the availability canvas has drawn green (present) cells
                green = _evaluate(
                    ws,
                    "(() => { const c = document.getElementById('avail'); const d = c.getContext('2d')"
                    ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
                    " for (let i = 0; i < d.length; i += 4) if (d[i+1] > 150 && d[i] < 120) n++; return n; })()",
                    5,
                )
                # the modality names sit in the left margin that both plots share: no bar is drawn under them
                green_in_margin = _evaluate(
                    ws,
                    "(() => { const c = document.getElementById('avail'); const g = c.getContext('2d');"
                    " const m = leftMargin(g) * (window.devicePixelRatio || 1) - 2;"
                    " const d = g.getImageData(0, 0, m, c.height).data; let n = 0;"
                    " for (let i = 0; i < d.length; i += 4) if (d[i+1] > 150 && d[i] < 120) n++; return n; })()",
                    6,
                )
                title = _evaluate(ws, "document.querySelector('h1').textContent", 7)
        finally:
            proc.terminate()
            proc.wait(10)
            stop.set()
            feeder.join(5)
    assert first > 0 and second > first, (first, second)
    assert status == "connected" and stream.startswith("s")
    assert "connecting" not in title and title.endswith(stream)  # title and status agree
    assert green_in_margin == 0
    assert green > 100
