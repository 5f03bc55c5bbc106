// Forecaster live page: snapshot from /api/v1, updates from the SSE stream, last known values in
// localStorage for offline use. No framework, no build step.
"use strict";

const API = "/api/v1";
const HISTORY = 60;            // realized closes drawn per chart
const KIOSK_CYCLE_MS = 8000;
const SVGNS = "http://www.w3.org/2000/svg";
const state = { symbols: {}, nowcasts: {}, fleet: {}, staleAfter: 120, lastEvent: 0 };
const kiosk = new URLSearchParams(location.search).get("kiosk") === "1";
let source = null;
let backoff = 1000;

const $ = (sel, root = document) => root.querySelector(sel);
const fmt = (x, d = 2) => (x === null || x === undefined || !isFinite(x)) ? "–" :
  Number(x).toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
const pct = (x) => `${(100 * x).toFixed(0)}%`;

function age(iso) {
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 90) return `${s.toFixed(0)} s ago`;
  if (s < 5400) return `${(s / 60).toFixed(0)} min ago`;
  if (s < 172800) return `${(s / 3600).toFixed(0)} h ago`;
  return `${(s / 86400).toFixed(0)} days ago`;
}

function setConn(mode, text) {
  const el = $("#conn");
  el.dataset.state = mode;
  el.textContent = text || mode;
  document.body.dataset.conn = mode;
}

// ----- state updates --------------------------------------------------------------------------

function entry(symbol) {
  return state.symbols[symbol] || (state.symbols[symbol] = { price: null, trend: null, closes: [] });
}

function newer(old, next) {
  return !old || next.seq > old.seq || (next.seq === old.seq && next.produced_at >= old.produced_at);
}

function addClose(e, ts, seq, close) {
  const last = e.closes[e.closes.length - 1];
  if (last && seq <= last.seq) return;
  e.closes.push({ ts, seq, close });
  if (e.closes.length > HISTORY) e.closes.splice(0, e.closes.length - HISTORY);
}

function apply(update) {
  const { kind, name, data } = update;
  if (kind === "price" || kind === "trend") {
    const e = entry(name);
    if (data === null) { e[kind] = null; return; }
    if (newer(e[kind], data)) e[kind] = data;
    if (kind === "price") addClose(e, data.ts, data.seq, data.last_close);
  } else {
    const table = kind === "nowcast" ? state.nowcasts : state.fleet;
    if (data === null) delete table[name]; else table[name] = data;
  }
}

function mergeSymbol(detail) {
  const e = entry(detail.symbol);
  for (const c of detail.closes) addClose(e, c.ts, c.seq, c.close);
  e.closes.sort((a, b) => a.seq - b.seq);
  for (const kind of ["price", "trend"]) {
    if (detail[kind] && newer(e[kind], detail[kind])) e[kind] = detail[kind];
  }
}

async function getJSON(path) {
  const r = await fetch(API + path, { credentials: "same-origin", cache: "no-store" });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

async function loadSnapshot() {
  const [info, symbols, nowcasts, fleet] = await Promise.all(
    ["/gateway", "/symbols", "/nowcasts", "/fleet"].map(getJSON));
  state.staleAfter = info.stale_after_s;
  const details = await Promise.all(symbols.map((s) =>
    getJSON(`/symbols/${encodeURIComponent(s.symbol)}?limit=${HISTORY}`)));
  details.forEach(mergeSymbol);
  nowcasts.forEach((n) => { state.nowcasts[n.region] = n; });
  fleet.forEach((a) => { state.fleet[a.agent] = a; });
  if (!info.connected) setConn("stale", "stale · gateway has no broker");
  render();
}

function save() {
  try { localStorage.setItem("forecaster", JSON.stringify(state)); } catch (_) { /* quota */ }
}

function restore() {
  try {
    const saved = JSON.parse(localStorage.getItem("forecaster") || "null");
    if (saved) Object.assign(state, saved, { lastEvent: 0 });
  } catch (_) { /* a corrupt copy is ignored */ }
}

// ----- the stream -----------------------------------------------------------------------------

function connect() {
  if (source) source.close();
  setConn("reconnecting", "reconnecting…");
  source = new EventSource(`${API}/stream`);
  source.addEventListener("hello", () => {
    backoff = 1000;
    state.lastEvent = Date.now();
    setConn("live", "live");
    loadSnapshot().catch(() => setConn("stale", "stale · snapshot failed"));
  });
  source.addEventListener("ping", () => { state.lastEvent = Date.now(); });
  source.addEventListener("update", (ev) => {
    state.lastEvent = Date.now();
    JSON.parse(ev.data).forEach(apply);
    scheduleRender();
  });
  source.onerror = () => {
    setConn("reconnecting", navigator.onLine ? "reconnecting…" : "offline · last known values");
    if (source.readyState === EventSource.CLOSED) retryLater();
  };
}

function retryLater() {
  setTimeout(connect, backoff);
  backoff = Math.min(backoff * 2, 15000);
}

// A connection that is open but silent (no ping for 3 intervals) is dead: start a new one.
setInterval(() => {
  if (state.lastEvent && Date.now() - state.lastEvent > 15000 && source) {
    state.lastEvent = 0;
    connect();
  }
  renderAges();
}, 1000);

let pending = false;
function scheduleRender() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => { pending = false; render(); });
}

// ----- rendering ------------------------------------------------------------------------------

function svg(tag, attrs, parent) {
  const el = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (parent) parent.appendChild(el);
  return el;
}

function bandPairs(quantiles) {
  // Outer pair first: (0, n-1), (1, n-2), ... while lo < 0.5.
  const pairs = [];
  for (let i = 0, j = quantiles.length - 1; i < j && quantiles[i] < 0.5; i++, j--) pairs.push([i, j]);
  return pairs;
}

function medianIndex(quantiles) {
  let best = 0;
  quantiles.forEach((q, i) => { if (Math.abs(q - 0.5) < Math.abs(quantiles[best] - 0.5)) best = i; });
  return best;
}

function drawChart(el, symbol, e) {
  const chart = $("svg", el);
  chart.replaceChildren(svg("title", {}));
  const p = e.price;
  const closes = e.closes.slice(-HISTORY);
  if (!closes.length && !p) return;
  const maxH = p ? Math.max(...p.horizons) : 0;
  const n = closes.length;
  const span = Math.max(1, (n - 1) + maxH);
  const values = closes.map((c) => c.close);
  if (p) p.prices.forEach((row) => values.push(...row));
  let lo = Math.min(...values), hi = Math.max(...values);
  if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
  const W = 320, H = 150, L = 4, R = 4, T = 8, B = 16;
  const x = (i) => L + (W - L - R) * (i / span);
  const y = (v) => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
  const now = n - 1;
  svg("line", { x1: x(now), x2: x(now), y1: T, y2: H - B, class: "now" }, chart);
  if (p && n) {
    const last = closes[n - 1].close;
    const order = p.horizons.map((h, k) => [h, k]).sort((a, b) => a[0] - b[0]);
    bandPairs(p.quantiles).forEach(([i, j], depth) => {
      const up = order.map(([h, k]) => `${x(now + h)},${y(p.prices[k][j])}`);
      const down = order.slice().reverse().map(([h, k]) => `${x(now + h)},${y(p.prices[k][i])}`);
      svg("polygon", { points: [`${x(now)},${y(last)}`, ...up, ...down].join(" "),
        class: `band band-${depth}` }, chart);
    });
    const m = medianIndex(p.quantiles);
    svg("polyline", { points: [`${x(now)},${y(last)}`,
      ...order.map(([h, k]) => `${x(now + h)},${y(p.prices[k][m])}`)].join(" "), class: "median" }, chart);
  }
  if (n > 1) svg("polyline", { points: closes.map((c, i) => `${x(i)},${y(c.close)}`).join(" "), class: "past" }, chart);
  const label = (v, yy) => { const t = svg("text", { x: W - R, y: yy, class: "axis", "text-anchor": "end" }, chart); t.textContent = fmt(v, 0); };
  label(hi, T + 8);
  label(lo, H - B - 2);
  const t = svg("text", { x: x(now), y: H - 3, class: "axis", "text-anchor": "middle" }, chart);
  t.textContent = "now";
  const desc = p ? `${symbol}: ${n} closes and the forecast for ${p.horizons.join(", ")} days ahead`
    : `${symbol}: ${n} closes`;
  $("title", chart).textContent = desc;
  chart.setAttribute("aria-label", desc);
}

function fillHorizons(el, p) {
  const body = $("tbody", el);
  body.replaceChildren();
  if (!p) return;
  const m = medianIndex(p.quantiles), last = p.quantiles.length - 1;
  $('[data-field="band-head"]', el).textContent =
    `Band ${pct(p.quantiles[0])}–${pct(p.quantiles[last])}`;
  p.horizons.forEach((h, k) => {
    const row = document.createElement("tr");
    row.dataset.horizon = h;
    const cells = [`${h} d`, fmt(p.prices[k][m]), `${fmt(p.prices[k][0])} – ${fmt(p.prices[k][last])}`];
    cells.forEach((text, c) => {
      const cell = document.createElement(c === 0 ? "th" : "td");
      if (c === 0) cell.scope = "row";
      cell.dataset.field = ["horizon", "median", "band"][c];
      cell.textContent = text;
      row.appendChild(cell);
    });
    body.appendChild(row);
  });
}

function fillTrend(el, t) {
  const box = $('[data-field="trend"]', el);
  box.hidden = !t;
  if (!t) return;
  const list = $("ul", box);
  list.replaceChildren();
  const top = t.proba.indexOf(Math.max(...t.proba));
  t.classes.forEach((name, i) => {
    const li = document.createElement("li");
    li.dataset.class = name;
    if (i === top) li.classList.add("lead");
    const label = document.createElement("span");
    label.textContent = `${name} ${pct(t.proba[i])}`;
    const bar = document.createElement("meter");
    bar.min = 0; bar.max = 1; bar.value = t.proba[i];
    bar.setAttribute("aria-label", `${name} probability`);
    li.append(label, bar);
    list.appendChild(li);
  });
}

function card(symbol) {
  let el = document.querySelector(`article[data-symbol="${CSS.escape(symbol)}"]`);
  if (!el) {
    el = $("#card-template").content.firstElementChild.cloneNode(true);
    el.dataset.symbol = symbol;
    $(".sym", el).textContent = symbol;
    el.setAttribute("aria-label", `${symbol} forecast`);
    $("#symbols").appendChild(el);
  }
  return el;
}

function renderSymbol(symbol, e) {
  const el = card(symbol);
  const p = e.price, t = e.trend;
  const lastClose = e.closes.length ? e.closes[e.closes.length - 1].close : (p ? p.last_close : null);
  $('[data-field="last-close"]', el).textContent = fmt(lastClose);
  const models = [["price", p], ["trend", t]].filter(([, f]) => f)
    .map(([task, f]) => `${task} ${f.model.name} v${f.model.version}`);
  $('[data-field="model"]', el).textContent = models.join(" · ") || "–";
  drawChart(el, symbol, e);
  fillHorizons(el, p);
  fillTrend(el, t);
}

function renderAges() {
  for (const [symbol, e] of Object.entries(state.symbols)) {
    const el = document.querySelector(`article[data-symbol="${CSS.escape(symbol)}"]`);
    const f = [e.price, e.trend].filter(Boolean).sort((a, b) => (a.produced_at < b.produced_at ? 1 : -1))[0];
    if (!el || !f) continue;
    $('[data-field="age"]', el).textContent = `forecast ${age(f.produced_at)}`;
    const stale = (Date.now() - Date.parse(f.produced_at)) / 1000 > state.staleAfter;
    $('[data-field="stale"]', el).hidden = !stale;
    el.classList.toggle("is-stale", stale);
  }
  document.querySelectorAll("[data-age]").forEach((n) => { n.textContent = age(n.dataset.age); });
}

function dl(pairs) {
  const list = document.createElement("dl");
  for (const [k, v] of pairs) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    list.append(dt, dd);
  }
  return list;
}

const NOWCAST_KNOWN = new Set(["agent", "region", "quarter", "nowcast", "units", "band", "information",
  "model", "as_of", "produced_at", "latency_ms"]);

function renderGdp() {
  const body = $("#gdp-body");
  const n = state.nowcasts.us || Object.values(state.nowcasts)[0];
  if (!n) return;
  body.replaceChildren();
  const big = document.createElement("p");
  big.className = "big";
  big.dataset.field = "nowcast";
  big.textContent = `${fmt(n.nowcast, 1)}%`;
  const band = n.band;
  const pairs = [
    ["Quarter", `${n.quarter} (${n.region})`],
    [`Band ${pct(band.levels[0])}–${pct(band.levels[1])}`, `${fmt(band.lo, 1)}% – ${fmt(band.hi, 1)}%`],
    ["Units", n.units],
    ["Data as of", new Date(n.as_of).toISOString().slice(0, 10)],
    ["Inputs", `${n.information.cells - n.information.missing} of ${n.information.cells} released`],
    ["Model", `${n.model.name} v${n.model.version}`],
  ];
  // Fields a newer agent adds (track, impacts, news): shown as they come.
  for (const [k, v] of Object.entries(n)) {
    if (!NOWCAST_KNOWN.has(k)) pairs.push([k, typeof v === "object" ? JSON.stringify(v).slice(0, 200) : String(v)]);
  }
  body.append(big, dl(pairs));
}

function renderFleet() {
  const list = $("#fleet-list");
  const agents = Object.values(state.fleet);
  if (!agents.length) return;
  list.replaceChildren();
  for (const a of agents) {
    const li = document.createElement("li");
    li.dataset.agent = a.agent;
    li.className = a.online ? "online" : "offline";
    const name = document.createElement("strong");
    name.textContent = `${a.agent}: ${a.online ? "online" : "offline"}`;
    const info = document.createElement("span");
    info.textContent = ` · ${a.models.length} model(s) · up ${(a.uptime_s / 3600).toFixed(1)} h · heartbeat `;
    const when = document.createElement("span");
    when.dataset.age = a.ts;
    li.append(name, info, when);
    list.appendChild(li);
  }
}

function render() {
  const names = Object.keys(state.symbols).sort();
  $("#no-symbols").hidden = names.length > 0;
  for (const s of names) renderSymbol(s, state.symbols[s]);
  renderGdp();
  renderFleet();
  renderAges();
  $("#updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  save();
}

// ----- kiosk: one symbol at a time, large -----------------------------------------------------

function cycle() {
  const cards = [...document.querySelectorAll("article.symbol")];
  if (!cards.length) return;
  const i = cards.findIndex((c) => c.classList.contains("active"));
  cards.forEach((c) => c.classList.remove("active"));
  cards[(i + 1) % cards.length].classList.add("active");
}

function start() {
  if (kiosk) {
    document.body.classList.add("kiosk");
    setInterval(cycle, KIOSK_CYCLE_MS);
    new MutationObserver(() => { if (!document.querySelector("article.active")) cycle(); })
      .observe($("#symbols"), { childList: true });
  }
  restore();
  render();
  if ("serviceWorker" in navigator) navigator.serviceWorker.register("/sw.js").catch(() => {});
  window.addEventListener("offline", () => setConn("reconnecting", "offline · last known values"));
  connect();
}

document.addEventListener("DOMContentLoaded", start);
