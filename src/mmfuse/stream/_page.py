"""The live page the server serves at ``/``: availability per modality and raw vs stabilised predictions.

Self-contained (no external scripts or fonts). It opens ``/ws/watch`` (``?stream=ID`` picks a stream, default the
newest; ``?token=...`` is passed on) and redraws on every prediction.
"""

from __future__ import annotations

__all__ = ["LIVE_PAGE"]

LIVE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mmfuse live</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.2em;color:#222}
h1{font-size:1.2em;margin:0 0 .4em} .muted{color:#777}
canvas{border:1px solid #ddd;display:block;margin:.4em 0 1em}
#legend span{margin-right:1em}
</style></head>
<body>
<h1>mmfuse live stream <span id="stream" class="muted">connecting...</span></h1>
<div>steps: <b id="steps">0</b> &middot; last t: <b id="last-t">-</b> s &middot; label: <b id="label">-</b>
 &middot; held: <b id="held">-</b> &middot; status: <b id="status">connecting</b></div>
<h2 style="font-size:1em">Availability per modality (green = present)</h2>
<canvas id="avail" width="900" height="120"></canvas>
<h2 style="font-size:1em">Prediction: raw (thin) and stabilised (thick), per class</h2>
<canvas id="pred" width="900" height="220"></canvas>
<div id="legend"></div>
<script>
const params = new URLSearchParams(location.search);
const proto = location.protocol === "https:" ? "wss:" : "ws:";
let q = [];
if (params.get("stream")) q.push("stream=" + encodeURIComponent(params.get("stream")));
if (params.get("token")) q.push("token=" + encodeURIComponent(params.get("token")));
const url = proto + "//" + location.host + "/ws/watch" + (q.length ? "?" + q.join("&") : "");
const N = 300;
const colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"];
let modalities = [], classes = [], rows = [], steps = 0;
function drawAvail() {
  const c = document.getElementById("avail"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const h = modalities.length ? (c.height - 4) / modalities.length : 0, w = c.width / N;
  modalities.forEach((m, i) => {
    g.fillStyle = "#333"; g.font = "11px sans-serif"; g.fillText(m, 2, i * h + h / 2 + 4);
    rows.forEach((r, k) => {
      g.fillStyle = r.masks[m] ? "#4caf50" : "#eeeeee";
      g.fillRect(60 + k * (c.width - 60) / N, i * h + 2, Math.max(1, (c.width - 60) / N - 0.5), h - 4);
    });
  });
}
function drawPred() {
  const c = document.getElementById("pred"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  if (!rows.length) return;
  const C = rows[0].raw.length;
  let lo = 0, hi = 1;
  rows.forEach(r => r.raw.concat(r.stable).forEach(v => { lo = Math.min(lo, v); hi = Math.max(hi, v); }));
  const y = v => c.height - 4 - (v - lo) / (hi - lo || 1) * (c.height - 8);
  const x = k => k * c.width / N;
  for (let j = 0; j < C; j++) {
    for (const [key, width] of [["raw", 1], ["stable", 3]]) {
      g.strokeStyle = colors[j % colors.length]; g.lineWidth = width; g.globalAlpha = key === "raw" ? 0.45 : 1;
      g.beginPath();
      rows.forEach((r, k) => { k ? g.lineTo(x(k), y(r[key][j])) : g.moveTo(x(k), y(r[key][j])); });
      g.stroke();
    }
  }
  g.globalAlpha = 1;
}
function legend() {
  const C = rows.length ? rows[0].raw.length : classes.length;
  let html = "";
  for (let j = 0; j < C; j++) html += '<span style="color:' + colors[j % colors.length] + '">&#9632; ' +
    (classes[j] || ("output " + j)) + "</span>";
  document.getElementById("legend").innerHTML = html;
}
function add(p) {
  rows.push(p); if (rows.length > N) rows.shift();
  steps += 1;
  document.getElementById("steps").textContent = steps;
  document.getElementById("last-t").textContent = p.t.toFixed(2);
  document.getElementById("label").textContent = p.class_name ?? p.label ?? "-";
  document.getElementById("held").textContent = p.held ? "yes" : "no";
}
const ws = new WebSocket(url);
ws.onopen = () => { document.getElementById("status").textContent = "connected"; };
ws.onclose = () => { document.getElementById("status").textContent = "closed"; };
ws.onmessage = ev => {
  const msg = JSON.parse(ev.data);
  if (msg.type === "watch") {
    modalities = msg.modalities; classes = msg.class_names || [];
    document.getElementById("stream").textContent = msg.stream_id;
    (msg.history || []).forEach(add);
  } else if (msg.type === "prediction") {
    add(msg);
  } else if (msg.type === "ended") {
    document.getElementById("status").textContent = "stream ended";
  } else if (msg.type === "error") {
    document.getElementById("status").textContent = "error: " + msg.detail;
  }
  drawAvail(); drawPred(); legend();
};
</script>
</body></html>
"""
