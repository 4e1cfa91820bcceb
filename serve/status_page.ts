/**
 * The status page at `GET /`: one self-contained HTML document (no external scripts, styles or
 * fonts) that polls `GET /status` every second and shows the engine's state, each rank with its
 * adapter and device memory, a tokens/s chart of the last minute and the recent restarts. When
 * the service has an API key, the page asks for it once and sends it as a Bearer token.
 */

/** The page. Values reach the DOM through `textContent` only, never as HTML. */
export const STATUS_PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Tessera status</title>
<style>
  :root { color-scheme: light; --ink: #1d2430; --muted: #5b6576; --line: #d9dee7; --accent: #2f6fde; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink); background: #f6f7fa; }
  header { display: flex; align-items: baseline; gap: 12px; padding: 16px 24px; background: #fff; border-bottom: 1px solid var(--line); }
  h1 { margin: 0; font-size: 18px; }
  h2 { margin: 0 0 8px; font-size: 14px; color: var(--muted); font-weight: 600; text-transform: uppercase; letter-spacing: .04em; }
  main { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; padding: 16px 24px; }
  section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px; }
  section.wide { grid-column: 1 / -1; }
  .badge { padding: 2px 10px; border-radius: 999px; font-weight: 600; background: #e6e9ef; }
  .badge.ready { background: #d7f3df; color: #14632f; }
  .badge.restarting, .badge.stalled, .badge.starting { background: #fff1c9; color: #7a5300; }
  .badge.draining, .badge.stopped, .badge.unreachable { background: #fbdada; color: #8a1c1c; }
  table { width: 100%; border-collapse: collapse; }
  th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); }
  th { color: var(--muted); font-weight: 600; }
  td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
  .stats { display: flex; gap: 28px; }
  .stat b { display: block; font-size: 22px; font-variant-numeric: tabular-nums; }
  .stat span { color: var(--muted); }
  svg { width: 100%; height: 160px; display: block; }
  #key { display: none; gap: 8px; margin-left: auto; }
  .muted { color: var(--muted); }
</style>
</head>
<body>
<header>
  <h1>Tessera</h1>
  <span id="model" class="muted"></span>
  <span id="state" class="badge">loading</span>
  <form id="key"><input id="key-input" type="password" placeholder="API key" autocomplete="off"><button>Use key</button></form>
</header>
<main>
  <section class="wide">
    <h2>Tokens per second, last minute</h2>
    <svg id="chart" viewBox="0 0 1000 160" preserveAspectRatio="none" role="img" aria-label="tokens per second">
      <g id="grid"></g>
      <polyline id="rate" fill="none" stroke="#2f6fde" stroke-width="2" points=""></polyline>
    </svg>
    <div class="stats">
      <div class="stat"><b id="now">0</b><span>tok/s (last second)</span></div>
      <div class="stat"><b id="avg">0</b><span>tok/s (minute average)</span></div>
      <div class="stat"><b id="running">0</b><span>running</span></div>
      <div class="stat"><b id="waiting">0</b><span>waiting</span></div>
      <div class="stat"><b id="restarts">0</b><span>restarts</span></div>
    </div>
  </section>
  <section class="wide">
    <h2>Ranks</h2>
    <table>
      <thead><tr><th>Rank</th><th>State</th><th>Backend</th><th>Adapter</th><th class="num">Weights</th><th class="num">KV cache</th><th class="num">Activations</th><th class="num">Total</th><th class="num">Budget</th><th class="num">Context</th></tr></thead>
      <tbody id="ranks"></tbody>
    </table>
  </section>
  <section class="wide">
    <h2>Recent restarts</h2>
    <table>
      <thead><tr><th>When</th><th>Rank</th><th>Reason</th></tr></thead>
      <tbody id="restart-list"><tr><td colspan="3" class="muted">none</td></tr></tbody>
    </table>
  </section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const mb = (bytes) => (bytes / 1e6).toFixed(1) + " MB";
let key = sessionStorage.getItem("tessera-key") || "";

const cell = (text, cls) => {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
};
const row = (cells) => {
  const tr = document.createElement("tr");
  for (const c of cells) tr.appendChild(c);
  return tr;
};

function drawChart(series) {
  const w = 1000, h = 160, pad = 4;
  const max = Math.max(1, ...series);
  const step = (w - 2 * pad) / Math.max(1, series.length - 1);
  $("rate").setAttribute("points", series.map((v, i) =>
    (pad + i * step).toFixed(1) + "," + (h - pad - (v / max) * (h - 2 * pad)).toFixed(1)).join(" "));
  const grid = $("grid");
  grid.replaceChildren();
  for (const f of [0.5, 1]) {
    const y = h - pad - f * (h - 2 * pad);
    const line = document.createElementNS("http://www.w3.org/2000/svg", "line");
    Object.entries({ x1: 0, x2: w, y1: y, y2: y, stroke: "#d9dee7" }).forEach(([k, v]) => line.setAttribute(k, v));
    const label = document.createElementNS("http://www.w3.org/2000/svg", "text");
    Object.entries({ x: 6, y: y + 12, fill: "#5b6576", "font-size": 11 }).forEach(([k, v]) => label.setAttribute(k, v));
    label.textContent = (max * f).toFixed(0) + " tok/s";
    grid.append(line, label);
  }
}

function render(s) {
  $("model").textContent = s.model + " · tp " + s.ranks.length;
  $("state").textContent = s.state;
  $("state").className = "badge " + s.state;
  const series = s.tokensPerSecond;
  drawChart(series);
  $("now").textContent = String(series[series.length - 1] ?? 0);
  $("avg").textContent = (series.reduce((a, b) => a + b, 0) / Math.max(1, series.length)).toFixed(1);
  $("running").textContent = String(s.running);
  $("waiting").textContent = String(s.waiting);
  $("restarts").textContent = String(s.restarts);
  $("ranks").replaceChildren(...s.ranks.map((r) => row([
    cell(String(r.rank)), cell(r.alive ? "alive" : "dead"), cell(r.backend), cell(r.adapter),
    cell(mb(r.weightBytes), "num"), cell(mb(r.kvCacheBytes), "num"), cell(mb(r.activationBytes), "num"),
    cell(mb(r.weightBytes + r.kvCacheBytes + r.activationBytes), "num"),
    cell(r.memoryBudgetBytes === undefined ? "unknown" : mb(r.memoryBudgetBytes), "num"),
    cell(r.contextLength + " of " + r.modelContextLength, "num"),
  ])));
  $("restart-list").replaceChildren(...(s.recentRestarts.length === 0
    ? [row([cell("none", "muted")])]
    : s.recentRestarts.slice().reverse().map((r) => row([
      cell(new Date(r.at).toLocaleTimeString()), cell(String(r.rank)), cell(r.reason),
    ]))));
}

async function poll() {
  try {
    const response = await fetch("/status", { headers: key ? { authorization: "Bearer " + key } : {} });
    if (response.status === 401) {
      $("key").style.display = "flex";
      $("state").textContent = "API key needed";
      return;
    }
    render(await response.json());
  } catch {
    $("state").textContent = "unreachable";
    $("state").className = "badge unreachable";
  } finally {
    setTimeout(poll, 1000);
  }
}

$("key").addEventListener("submit", (event) => {
  event.preventDefault();
  key = $("key-input").value;
  sessionStorage.setItem("tessera-key", key);
  $("key").style.display = "none";
});
poll();
</script>
</body>
</html>
`;
