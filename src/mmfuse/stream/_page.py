"""The live page the server serves at ``/``: availability per modality and raw vs stabilised predictions.

Self-contained (no external scripts or fonts). It opens ``/ws/watch`` (``?stream=ID`` picks a stream, default the
newest; ``?token=...`` is passed on) and redraws on every prediction.
"""

from __future__ import annotations

__all__ = ["LIVE_PAGE"]

LIVE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mmfuse live</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:1.2em;color:#222;max-width:1100px}
h1{font-size:1.2em;margin:0 0 .4em} h2{font-size:1em;margin:1em 0 .2em} .muted{color:#777}
canvas{border:1px solid #ddd;display:block;margin:.4em 0 .4em;width:100%}
#legend span{margin-right:1em;white-space:nowrap}
</style></head>
<body>
<h1>mmfuse live stream <span id="stream" class="muted">(connecting)</span></h1>
<div>status: <b id="status">connecting</b> &middot; steps: <b id="steps">0</b> &middot; last t: <b id="last-t">-</b> s
 &middot; label: <b id="label">-</b> &middot; held: <b id="held">-</b></div>
<h2>Availability per modality (green = present, grey = missing)</h2>
<canvas id="avail" data-h="150"></canvas>
<h2>Prediction per class: raw (thin) and stabilised (thick)</h2>
<canvas id="pred" data-h="260"></canvas>
<div id="legend"></div>
<script>
const params = new URLSearchParams(location.search);
const proto = location.protocol === "https:" ? "wss:" : "ws:";
let q = [];
if (params.get("stream")) q.push("stream=" + encodeURIComponent(params.get("stream")));
if (params.get("token")) q.push("token=" + encodeURIComponent(params.get("token")));
const url = proto + "//" + location.host + "/ws/watch" + (q.length ? "?" + q.join("&") : "");
const N = 300;  // steps kept on screen
const colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"];
const FONT = "12px system-ui, sans-serif", RIGHT = 12, TOP = 8, BOTTOM = 36;
let modalities = [], classes = [], rows = [], steps = 0, streamId = "";
// One status for the title and the status field, so they never disagree.
function setStatus(state) {
  document.getElementById("status").textContent = state;
  const title = document.getElementById("stream");
  if (streamId) title.textContent = streamId + (state === "connected" ? "" : " (" + state + ")");
  else title.textContent = "(" + state + ")";
}
// Both plots share one left margin (wide enough for the modality names and the y tick labels) and one time
// mapping, so a step sits at the same x in both.
function leftMargin(g) {
  g.font = FONT;
  const names = modalities.map(m => g.measureText(m).width);
  return Math.ceil(Math.max(48, ...names) + 12);
}
function setup(c) {
  const ratio = window.devicePixelRatio || 1, w = c.clientWidth, h = Number(c.dataset.h);
  c.style.height = h + "px";
  c.width = Math.round(w * ratio); c.height = Math.round(h * ratio);  // also clears the canvas
  const g = c.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, w, h);
  return [g, w, h];
}
function xOf(k, left, w) { return left + (k + 0.5) * (w - left - RIGHT) / N; }
function timeAxis(g, left, w, h) {
  const y0 = h - BOTTOM;
  g.strokeStyle = "#999"; g.lineWidth = 1; g.beginPath(); g.moveTo(left, y0 + 0.5); g.lineTo(w - RIGHT, y0 + 0.5);
  g.stroke();
  g.fillStyle = "#444"; g.font = FONT; g.textAlign = "center"; g.textBaseline = "top";
  const every = Math.max(1, Math.ceil(N / Math.max(2, Math.floor((w - left) / 90))));
  rows.forEach((r, k) => {
    if ((steps - rows.length + k) % every) return;
    const x = xOf(k, left, w);
    g.beginPath(); g.moveTo(x, y0); g.lineTo(x, y0 + 4); g.stroke();
    g.fillText(r.t.toFixed(1), x, y0 + 6);
  });
  g.fillText("time [s]", left + (w - left - RIGHT) / 2, y0 + 20);
  g.textAlign = "left"; g.textBaseline = "alphabetic";
}
function drawAvail() {
  const [g, w, h] = setup(document.getElementById("avail"));
  const left = leftMargin(g), band = modalities.length ? (h - TOP - BOTTOM) / modalities.length : 0;
  const cell = (w - left - RIGHT) / N;
  modalities.forEach((m, i) => {
    const top = TOP + i * band;
    g.fillStyle = "#333"; g.font = FONT; g.textAlign = "right"; g.textBaseline = "middle";
    g.fillText(m, left - 8, top + band / 2);
    rows.forEach((r, k) => {
      g.fillStyle = r.masks[m] ? "#4caf50" : "#dddddd";
      g.fillRect(xOf(k, left, w) - cell / 2, top + 2, Math.max(1, cell - 0.5), band - 4);
    });
  });
  g.textAlign = "left"; g.textBaseline = "alphabetic";
  timeAxis(g, left, w, h);
}
function drawPred() {
  const [g, w, h] = setup(document.getElementById("pred"));
  const left = leftMargin(g);
  let lo = 0, hi = 1;
  rows.forEach(r => r.raw.concat(r.stable).forEach(v => { lo = Math.min(lo, v); hi = Math.max(hi, v); }));
  const y = v => h - BOTTOM - (v - lo) / (hi - lo || 1) * (h - TOP - BOTTOM);
  // y axis: ticks and grid at 5 values, the axis title rotated at the far left
  g.font = FONT; g.fillStyle = "#444"; g.strokeStyle = "#eee"; g.textAlign = "right"; g.textBaseline = "middle";
  for (let i = 0; i <= 4; i++) {
    const v = lo + (hi - lo) * i / 4, yy = Math.round(y(v)) + 0.5;
    g.beginPath(); g.moveTo(left, yy); g.lineTo(w - RIGHT, yy); g.stroke();
    g.fillText(Math.abs(hi - lo) >= 10 ? v.toFixed(0) : v.toFixed(2), left - 6, yy);
  }
  g.strokeStyle = "#999"; g.beginPath(); g.moveTo(left + 0.5, TOP); g.lineTo(left + 0.5, h - BOTTOM); g.stroke();
  g.save(); g.translate(10, TOP + (h - TOP - BOTTOM) / 2); g.rotate(-Math.PI / 2); g.textAlign = "center";
  g.fillText(lo >= 0 && hi <= 1 ? "probability" : "output", 0, 0); g.restore();
  g.textAlign = "left"; g.textBaseline = "alphabetic";
  timeAxis(g, left, w, h);
  if (!rows.length) return;
  const C = rows[0].raw.length;
  for (let j = 0; j < C; j++) {
    for (const [key, width] of [["raw", 1], ["stable", 3]]) {
      g.strokeStyle = colors[j % colors.length]; g.lineWidth = width; g.globalAlpha = key === "raw" ? 0.45 : 1;
      g.beginPath();
      rows.forEach((r, k) => {
        const px = xOf(k, left, w), py = y(r[key][j]);
        k ? g.lineTo(px, py) : g.moveTo(px, py);
      });
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
function redraw() { drawAvail(); drawPred(); legend(); }
const ws = new WebSocket(url);
ws.onopen = () => setStatus("waiting for a stream");
ws.onclose = () => setStatus("closed");
ws.onmessage = ev => {
  const msg = JSON.parse(ev.data);
  if (msg.type === "watch") {
    modalities = msg.modalities; classes = msg.class_names || [];
    streamId = msg.stream_id;
    setStatus("connected");
    (msg.history || []).forEach(add);
  } else if (msg.type === "prediction") {
    add(msg);
  } else if (msg.type === "ended") {
    setStatus("stream ended");
  } else if (msg.type === "error") {
    setStatus("error: " + msg.detail);
  }
  redraw();
};
window.addEventListener("resize", redraw);
redraw();
</script>
</body></html>
"""
