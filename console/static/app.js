// demarc console charts. Every `.chart[data-kind][data-src]` is filled from its
// JSON endpoint; a chart that drew gets `data-drawn="1"` (the browser test checks it).
"use strict";

const SEGMENTS = [
  ["tx_host", "TX host"],
  ["net_up", "network (to relay)"],
  ["dwell", "relay dwell"],
  ["relay_relay", "relay → relay"],
  ["net_down", "network (from relay)"],
  ["rx_host", "RX host"],
];
const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f"];
const SVGNS = "http://www.w3.org/2000/svg";

const css = (name) => getComputedStyle(document.documentElement).getPropertyValue("--" + name).trim();
const ms = (ns) => (ns == null ? null : ns / 1e6);
const secs = (t) => t.map((x) => x / 1e9);
const utcTime = (ns) => new Date(ns / 1e6).toISOString().slice(11, 23);

function message(el, text, cls) {
  const p = document.createElement("p");
  p.className = cls || "msg";
  p.textContent = text;
  el.replaceChildren(p);
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text != null) e.textContent = text;
  return e;
}

function legend(el, items) {
  const d = document.createElement("div");
  d.className = "legend";
  for (const [color, label] of items) {
    const s = document.createElement("span");
    const i = document.createElement("i");
    i.style.background = color;
    s.append(i, label);
    d.append(s);
  }
  el.append(d);
}

function baseOpts(el, height) {
  return {
    width: Math.max(300, el.clientWidth - 8),
    height: height || 300,
    scales: { x: { time: true } },
    // Times in UTC, as every probe and page reports them.
    axes: [
      { space: 70, values: (u, v) => v.map((t) => new Date(t * 1e3).toISOString().slice(11, 19)) },
      { label: "ms", values: (u, v) => v.map((x) => x.toFixed(Math.abs(x) < 1 ? 3 : 1)) },
    ],
    legend: { live: true },
  };
}

const has = (arr) => arr.some((v) => v != null);
const TIME = { value: (u, v) => (v == null ? "—" : new Date(v * 1e3).toISOString().slice(11, 23) + " UTC") };

// App-to-App median per flow (overview).
function drawLines(el, d) {
  const flows = d.flows.filter((f) => has(f[2]));
  if (!flows.length) return message(el, "No App-to-App samples in this range.");
  const opts = baseOpts(el, 260);
  opts.series = [TIME].concat(flows.map((f, i) => ({
    label: f[1], stroke: PALETTE[i % PALETTE.length], width: 1.5, spanGaps: true,
    value: (u, v) => (v == null ? "—" : v.toFixed(3) + " ms"),
  })));
  new uPlot(opts, [secs(d.t_ns)].concat(flows.map((f) => f[2].map(ms))), el);
  return true;
}

// Stacked segments with App-to-App on top; a click loads the waterfall there.
function drawStack(el, d) {
  const present = SEGMENTS.filter(([name]) => has(d.segments[name] || []));
  if (!present.length) return message(el, "No segment could be measured in this range.");
  const n = d.t_ns.length;
  const acc = new Array(n).fill(null);
  const stacked = present.map(([name]) => d.segments[name].map((v, i) => {
    if (v == null) return acc[i];
    acc[i] = (acc[i] || 0) + v;
    return acc[i];
  }));
  const opts = baseOpts(el, 340);
  opts.series = [TIME];
  opts.bands = [];
  present.forEach(([name, label], i) => {
    const color = css(name);
    opts.series.push({
      label, stroke: color, width: 1, spanGaps: true,
      fill: i === 0 ? color + "cc" : undefined,
      value: (u, v, si, di) => (di == null || d.segments[name][di] == null ? "—" : ms(d.segments[name][di]).toFixed(3) + " ms"),
    });
    if (i > 0) opts.bands.push({ series: [i + 1, i], fill: color + "cc" });
  });
  opts.series.push({ label: "App-to-App p50", stroke: "#111", width: 2, dash: [6, 3], spanGaps: true,
    value: (u, v) => (v == null ? "—" : v.toFixed(3) + " ms") });
  opts.series.push({ label: "App-to-App p99", stroke: "#777", width: 1, spanGaps: true,
    value: (u, v) => (v == null ? "—" : v.toFixed(3) + " ms") });
  const data = [secs(d.t_ns)].concat(stacked.map((s) => s.map(ms)), [d.segments.app.map(ms), d.app_p99.map(ms)]);
  const u = new uPlot(opts, data, el);
  const target = el.dataset.waterfall && document.getElementById(el.dataset.waterfall);
  if (target) {
    u.over.addEventListener("click", () => {
      const x = u.posToVal(u.cursor.left, "x");
      load(target, "at=" + Math.round(x * 1e9));
    });
  }
  return true;
}

// Which segment lies between two consecutive points of a path.
function segmentOf(a, b) {
  const key = a + ">" + b;
  return {
    "app_send>tx_wire": "tx_host", "tx_wire>relay_in": "net_up", "relay_in>relay_out": "dwell",
    "relay_out>relay_in": "relay_relay", "relay_out>rx_wire": "net_down", "tx_wire>rx_wire": "net_up",
    "rx_wire>app_recv": "rx_host",
  }[key] || "other";
}

// One row per packet, bars from its first point: a trace view.
function drawWaterfall(el, rows) {
  if (!rows.length) return message(el, "No packets here.");
  const spans = rows.map((r) => r.path[r.path.length - 1][2] - r.path[0][2]);
  const maxNs = Math.max(1, ...spans);
  const W = Math.max(500, el.clientWidth - 8), left = 190, right = 110, rowH = 16, top = 22;
  const H = top + rows.length * rowH + 8;
  const x = (ns) => left + (W - left - right) * ns / maxNs;
  const s = svg("svg", { class: "waterfall", width: W, height: H, viewBox: `0 0 ${W} ${H}` });
  for (let i = 0; i <= 4; i++) {
    const ns = maxNs * i / 4;
    s.append(svg("line", { class: "axis", x1: x(ns), x2: x(ns), y1: top - 4, y2: H - 4 }));
    s.append(svg("text", { x: x(ns), y: 12, "text-anchor": "middle" }, (ns / 1e6).toFixed(2) + " ms"));
  }
  rows.forEach((r, i) => {
    const y = top + i * rowH;
    const t0 = r.path[0][2];
    const label = (r.seq != null ? "seq " + r.seq : r.key.slice(0, 8)) + " " + utcTime(t0);
    s.append(svg("text", { x: 4, y: y + 11 }, label));
    for (let k = 1; k < r.path.length; k++) {
      const [pa, ha, ta] = r.path[k - 1];
      const [pb, hb, tb] = r.path[k];
      const seg = segmentOf(pa, pb);
      const rect = svg("rect", { x: x(ta - t0), y: y + 2, width: Math.max(1, x(tb - t0) - x(ta - t0)), height: rowH - 4,
        fill: css(seg) || "#999" });
      rect.append(svg("title", {}, `${pa}@${ha} → ${pb}@${hb}: ${((tb - ta) / 1e6).toFixed(3)} ms`));
      s.append(rect);
    }
    const marks = [r.app_ns == null ? "incomplete" : null, r.unsynced ? "unsynchronised" : null].filter(Boolean);
    if (marks.length) s.append(svg("text", { x: x(spans[i]) + 4, y: y + 11, fill: "#b3261e" }, marks.join(", ")));
  });
  el.replaceChildren(s);
  legend(el, SEGMENTS.map(([n, l]) => [css(n), l]));
  return true;
}

// Horizontal bars: packets seen at each point along the path.
function drawCoverage(el, d) {
  if (!d.points.length) return message(el, "No coverage data in this range.");
  const W = Math.max(500, el.clientWidth - 8), left = 170, rowH = 22;
  const H = d.points.length * rowH + 6;
  const s = svg("svg", { class: "bars", width: W, height: H, viewBox: `0 0 ${W} ${H}` });
  const total = Math.max(1, d.packets);
  d.points.forEach((p, i) => {
    const y = i * rowH + 3;
    const w = (W - left - 170) * p.packets / total;
    s.append(svg("text", { x: 4, y: y + 14 }, `${p.point} @ ${p.host}`));
    s.append(svg("rect", { x: left, y, width: Math.max(1, w), height: rowH - 6, fill: p.packets < d.packets ? "#e15759" : "#4e79a7" }));
    s.append(svg("text", { x: left + w + 6, y: y + 14 }, `${p.packets} of ${d.packets} (${(100 * p.packets / total).toFixed(2)} %)`));
  });
  el.replaceChildren(s);
  return true;
}

function directionSeries(el, d, which) {
  const a = el.dataset.a, b = el.dataset.b;
  const val = (u, v) => (v == null ? "—" : v.toFixed(3) + " ms");
  if (which === "owd") {
    return [
      [{ label: `${a} → ${b}`, stroke: css("ab"), width: 2, value: val }, d.ab],
      [{ label: `${b} → ${a}`, stroke: css("ba"), width: 2, value: val }, d.ba],
      [{ label: "RTT/2 (ICE)", stroke: css("half"), width: 2, dash: [8, 4], spanGaps: true, points: { show: true, size: 4 }, value: val }, d.rtt_half_ice],
      [{ label: "RTT/2 (sum of one-ways)", stroke: css("sum"), width: 1.5, dash: [3, 3], value: val }, d.rtt_half_sum],
    ];
  }
  const minus = (h, x) => h.map((v, i) => (v == null || x[i] == null ? null : v - x[i]));
  return [
    [{ label: `${a} → ${b} (ICE RTT/2)`, stroke: css("ab"), width: 2, spanGaps: true, points: { show: true, size: 4 }, value: val }, d.ab_error_ice],
    [{ label: `${b} → ${a} (ICE RTT/2)`, stroke: css("ba"), width: 2, spanGaps: true, points: { show: true, size: 4 }, value: val }, d.ba_error_ice],
    [{ label: `${a} → ${b} (sum RTT/2)`, stroke: css("ab"), width: 1, dash: [3, 3], value: val }, minus(d.rtt_half_sum, d.ab)],
    [{ label: `${b} → ${a} (sum RTT/2)`, stroke: css("ba"), width: 1, dash: [3, 3], value: val }, minus(d.rtt_half_sum, d.ba)],
  ];
}

function drawDirection(el, d, which) {
  const series = directionSeries(el, d, which).filter(([, v]) => has(v));
  if (!series.length) return message(el, "No one-way delays in this range.");
  const opts = baseOpts(el, which === "owd" ? 320 : 240);
  opts.series = [TIME].concat(series.map(([s]) => s));
  new uPlot(opts, [secs(d.t_ns)].concat(series.map(([, v]) => v.map(ms))), el);
  return true;
}

// One histogram per direction through the relay (bins on a 1-2-5 µs scale).
function drawDwell(el, d) {
  if (!d.directions.length) return message(el, "No dwell samples in this range.");
  el.replaceChildren();
  d.directions.forEach((dir, k) => {
    const last = dir.counts.reduce((m, c, i) => (c > 0 ? i : m), 0);
    const first = dir.counts.findIndex((c) => c > 0);
    const bins = dir.counts.slice(first, last + 1), edges = dir.edges_us.slice(first, last + 1);
    const W = Math.max(400, el.clientWidth - 8), H = 150, left = 10, bottom = 34;
    const bw = (W - left * 2) / bins.length, max = Math.max(...bins);
    const labelEvery = Math.ceil(60 / bw);
    const s = svg("svg", { class: "bars", width: W, height: H + 20, viewBox: `0 0 ${W} ${H + 20}` });
    s.append(svg("text", { x: left, y: 14 }, `${dir.tx_host} → ${dir.rx_host}: p50 ${(dir.summary.p50_ns / 1e3).toFixed(1)} µs, p99 ${(dir.summary.p99_ns / 1e3).toFixed(1)} µs, ${dir.summary.count} packets`));
    bins.forEach((c, i) => {
      const h = (H - bottom) * c / max;
      const r = svg("rect", { x: left + i * bw + 1, y: 20 + H - bottom - h, width: bw - 2, height: Math.max(c > 0 ? 1 : 0, h), fill: PALETTE[k % PALETTE.length] });
      r.append(svg("title", {}, `≤ ${edges[i]} µs: ${c}`));
      s.append(r);
      if (i % labelEvery === 0) s.append(svg("text", { x: left + i * bw + bw / 2, y: 20 + H - bottom + 14, "text-anchor": "middle" }, "≤" + edges[i] + " µs"));
    });
    el.append(s);
  });
  return true;
}

const DRAW = {
  lines: drawLines,
  stack: drawStack,
  waterfall: drawWaterfall,
  coverage: drawCoverage,
  direction: (el, d) => drawDirection(el, d, "owd"),
  "direction-error": (el, d) => drawDirection(el, d, "err"),
  dwell: drawDwell,
};

async function load(el, query) {
  const src = el.dataset.src + (query ? (el.dataset.src.includes("?") ? "&" : "?") + query : "");
  try {
    const r = await fetch(src, { headers: { Accept: "application/json" } });
    if (!r.ok) throw new Error(`${src}: HTTP ${r.status}`);
    el.replaceChildren();
    if (DRAW[el.dataset.kind](el, await r.json()) === true) el.dataset.drawn = "1";
  } catch (e) {
    message(el, "Chart failed: " + e.message, "err");
    console.error("chart", el.dataset.kind, e);
  }
}

document.querySelectorAll(".chart[data-kind]").forEach((el) => load(el));
