// codeloop dashboard: fetches the JSON API and draws inline SVG. Plain ES2020, no build
// step, no dependencies. Everything from the server goes into the page through textContent
// or setAttribute (never innerHTML), so adapter names chosen by users cannot inject markup.
// Every drawn mark carries data-* attributes with its numbers (the browser test reads them).
"use strict";
(() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const BASE = "base"; // the API's name for "no adapter"
  const DAYS = 90;
  const MAX_LINES = 10;
  const REFRESH_MS = 1000 * Number(document.getElementById("app").dataset.refreshS || 30);
  const PALETTE = ["#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2", "#dc2626", "#65a30d", "#9333ea", "#ca8a04"];
  const BASE_COLOR = "#64748b";
  const PCT_COLORS = { p50: "#93c5fd", p90: "#3b82f6", p99: "#1e3a8a" };
  const TOKEN_KEY = "codeloop.token";

  let last = null; // the data of the last load, redrawn on resize
  let paint = () => PALETTE[0]; // adapter name -> colour, the same in every chart and the table
  let timer = null;
  let loading = false;

  // ---- small DOM helpers ---------------------------------------------------------------
  function put(node, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      node.setAttribute(k, v === true ? "" : String(v));
    }
    return node;
  }
  function add(node, children) {
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      node.append(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return node;
  }
  const h = (tag, attrs, ...children) => add(put(document.createElement(tag), attrs), children);
  const s = (tag, attrs, ...children) => add(put(document.createElementNS(SVG_NS, tag), attrs), children);
  const tip = (text) => s("title", null, text);

  // ---- formatting ----------------------------------------------------------------------
  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const pct = (v, digits = 1) => (isNum(v) ? `${(v * 100).toFixed(digits)} %` : "–");
  const ms = (v) => (isNum(v) ? (v >= 100 ? `${Math.round(v)} ms` : `${v.toFixed(1)} ms`) : "–");
  const num = (v, digits = 1) => (isNum(v) ? v.toFixed(digits) : "–");
  const count = (v) => (isNum(v) ? v.toLocaleString("en-US") : "–");
  const label = (name) => (name === BASE ? "base model" : name);
  const apiName = (key) => (key === null || key === undefined ? BASE : String(key));
  const dayLabel = (key) =>
    new Date(`${key}T00:00:00Z`).toLocaleDateString("en-US", { month: "short", day: "numeric", timeZone: "UTC" });
  const dateOf = (epochS) => (isNum(epochS) ? new Date(epochS * 1000).toISOString().slice(0, 10) : "–");
  const dataNum = (v) => (isNum(v) ? String(v) : null); // full precision for data-* attributes

  // by=adapter rows: the base model first, then adapters by name (the same order everywhere).
  const baseFirst = (rows) =>
    rows.slice().sort((a, b) => (a.key === null ? -1 : b.key === null ? 1 : String(a.key).localeCompare(String(b.key))));

  function colorFor(names) {
    const others = names.filter((n) => n !== BASE).sort();
    const map = new Map([[BASE, BASE_COLOR]]);
    others.forEach((n, i) => map.set(n, PALETTE[i % PALETTE.length]));
    return (n) => map.get(n) || PALETTE[0];
  }

  function niceStep(range, target) {
    const raw = range / Math.max(1, target);
    const mag = 10 ** Math.floor(Math.log10(raw));
    const f = raw / mag;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * mag;
  }

  function widthOf(id, fallback = 640) {
    const w = document.getElementById(id).clientWidth;
    return Math.max(300, Math.floor(w || fallback));
  }

  // ---- fetching ------------------------------------------------------------------------
  class HttpError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path) {
    const headers = { Accept: "application/json" };
    const token = localStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    const resp = await fetch(path, { headers, cache: "no-store" });
    let body = null;
    try {
      body = await resp.json();
    } catch (_) {
      body = null;
    }
    if (!resp.ok) throw new HttpError(resp.status, (body && body.error) || `${resp.status} ${resp.statusText}`);
    return body;
  }

  const settle = (p) => p.then((value) => ({ value }), (error) => ({ error }));

  async function fetchAll() {
    const since = new Date(Date.now() - DAYS * 86400e3);
    since.setUTCHours(0, 0, 0, 0);
    const [adapters, byAdapter, experiments] = await Promise.all([
      settle(api("/v1/adapters")),
      settle(api("/v1/metrics/acceptance?by=adapter")),
      settle(api("/v1/experiments")),
    ]);
    const data = { at: Date.now(), adapters, byAdapter, experiments, series: null, report: null, experiment: null };

    if (byAdapter.value) {
      const rows = byAdapter.value.rows || [];
      const names = rows
        .slice()
        .sort((a, b) => (b.shown || 0) - (a.shown || 0))
        .slice(0, MAX_LINES)
        .map((r) => apiName(r.key));
      const q = (n) =>
        `/v1/metrics/acceptance?by=day&adapter=${encodeURIComponent(n)}&since=${encodeURIComponent(since.toISOString())}`;
      const answers = await Promise.all(names.map((n) => settle(api(q(n)))));
      const failed = answers.find((a) => a.error);
      data.series = failed
        ? { error: failed.error }
        : { value: names.map((n, i) => ({ name: n, rows: answers[i].value.rows || [] })), hidden: rows.length - names.length };
    }

    if (experiments.value) {
      const list = experiments.value.experiments || [];
      const chosen = list.find((e) => e.status === "running") || list[0] || null;
      data.experiment = chosen;
      if (chosen) data.report = await settle(api(`/v1/experiments/${encodeURIComponent(chosen.id)}`));
    }
    return data;
  }

  // ---- sections ------------------------------------------------------------------------
  function fill(id, ...nodes) {
    const body = document.getElementById(id);
    body.replaceChildren(...nodes.filter(Boolean));
  }

  function empty(section, text, hint) {
    return h("div", { class: "empty", "data-empty": section }, h("p", null, text), hint ? h("p", { class: "muted" }, hint) : null);
  }

  function failure(what, error) {
    const off = error && error.status === 409;
    return h("div", { class: off ? "empty" : "error", "data-error": what },
      h("p", null, off ? error.message : `Could not load ${what}: ${error ? error.message : "unknown error"}`));
  }

  const NO_TELEMETRY = "No suggestions recorded yet.";
  const NO_TELEMETRY_HINT =
    "The charts fill in once editors ask for completions (POST /v1/completions) and report what became of them (POST /v1/events: shown, accepted, …).";

  // KPI cards: totals over all adapters.
  function renderKpis(data) {
    const box = document.getElementById("kpis");
    const rows = (data.byAdapter.value && data.byAdapter.value.rows) || [];
    const total = (k) => rows.reduce((a, r) => a + (r[k] || 0), 0);
    const shown = total("shown");
    const accepted = total("accepted");
    const running = data.experiment && data.experiment.status === "running" ? data.experiment.name : "none";
    const loaded = data.adapters.value ? data.adapters.value.adapters.length : null;
    const card = (key, title, value, raw) =>
      h("div", { class: "kpi", "data-mark": "kpi", "data-kpi": key, "data-value": raw }, h("div", { class: "kpi-value" }, value), h("div", { class: "kpi-title" }, title));
    box.replaceChildren(
      card("completions", "suggestions served", count(total("completions")), total("completions")),
      card("shown", "shown to a user", count(shown), shown),
      card("rate", "accepted overall", shown ? pct(accepted / shown) : "–", shown ? accepted / shown : null),
      card("adapters", "adapters loaded", loaded === null ? "–" : count(loaded), loaded),
      card("experiment", "running experiment", running, running),
    );
  }

  // 1. acceptance rate over time, one line per adapter.
  function renderAcceptance(data) {
    const id = "acceptance-body";
    if (data.byAdapter.error) return fill(id, failure("acceptance metrics", data.byAdapter.error));
    if (!data.series || data.series.error) return fill(id, failure("daily acceptance", data.series && data.series.error));
    const series = data.series.value;
    const days = [...new Set(series.flatMap((sr) => sr.rows.filter((r) => (r.shown || 0) > 0).map((r) => String(r.key))))].sort();
    if (!series.length || !days.length) {
      const served = (data.byAdapter.value.rows || []).some((r) => r.completions > 0);
      return fill(id, served
        ? empty("acceptance", "Suggestions were served, but none was reported shown yet.", "Rates need shown events (POST /v1/events with kind \"shown\").")
        : empty("acceptance", NO_TELEMETRY, NO_TELEMETRY_HINT));
    }
    // Every day from the first with data to the last, so gaps show as gaps.
    const all = [];
    for (let d = new Date(`${days[0]}T00:00:00Z`); d <= new Date(`${days[days.length - 1]}T00:00:00Z`); d = new Date(d.getTime() + 86400e3)) {
      all.push(d.toISOString().slice(0, 10));
    }
    const color = paint;
    const W = widthOf(id), H = 300, m = { l: 48, r: 16, t: 14, b: 34 };
    const pw = W - m.l - m.r, ph = H - m.t - m.b;
    const inset = 14; // keeps the first and last points off the axis
    const x = (i) => m.l + (all.length === 1 ? pw / 2 : inset + (i * (pw - 2 * inset)) / (all.length - 1));
    const y = (rate) => m.t + ph * (1 - rate);
    const chart = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": "acceptance rate per day and adapter", "data-chart": "acceptance" });
    for (let v = 0; v <= 100; v += 25) {
      chart.append(s("line", { class: "grid", x1: m.l, x2: W - m.r, y1: y(v / 100), y2: y(v / 100) }),
        s("text", { class: "tick", x: m.l - 6, y: y(v / 100) + 4, "text-anchor": "end" }, `${v} %`));
    }
    const every = Math.max(1, Math.ceil(all.length / Math.max(2, Math.floor(pw / 70))));
    all.forEach((d, i) => {
      if (i % every === 0 || i === all.length - 1) {
        chart.append(s("text", { class: "tick", x: x(i), y: H - m.b + 18, "text-anchor": "middle", "data-day": d }, dayLabel(d)));
      }
    });
    const legend = h("div", { class: "legend" });
    for (const sr of series) {
      const c = color(sr.name);
      const byDay = new Map(sr.rows.map((r) => [String(r.key), r]));
      let path = "", open = false, lastRow = null;
      const points = s("g", { class: "points" });
      all.forEach((d, i) => {
        const r = byDay.get(d);
        if (!r || !isNum(r.acceptance_rate) || !(r.shown > 0)) {
          open = false;
          return;
        }
        path += `${open ? "L" : "M"}${x(i).toFixed(1)},${y(r.acceptance_rate).toFixed(1)}`;
        open = true;
        lastRow = r;
        points.append(s("circle", {
          class: "point", cx: x(i), cy: y(r.acceptance_rate), r: 4, fill: c,
          "data-mark": "rate-point", "data-adapter": sr.name, "data-day": d, "data-rate": dataNum(r.acceptance_rate),
          "data-shown": r.shown, "data-accepted": r.accepted,
        }, tip(`${label(sr.name)} · ${d}: ${pct(r.acceptance_rate)} (${r.accepted} of ${r.shown} shown)`)));
      });
      chart.append(s("path", { class: "line", d: path, stroke: c, "data-mark": "rate-line", "data-adapter": sr.name }), points);
      legend.append(h("span", { class: "key", "data-mark": "legend", "data-adapter": sr.name },
        h("i", { class: "swatch", style: `background:${c}` }), h("b", null, label(sr.name)),
        lastRow ? h("span", { class: "muted" }, ` ${pct(lastRow.acceptance_rate)} on ${dayLabel(String(lastRow.key))}`) : null));
    }
    const more = data.series.hidden > 0 ? h("p", { class: "muted" }, `${data.series.hidden} more adapters with fewer suggestions are not drawn.`) : null;
    fill(id, legend, chart, more);
  }

  // 2. the experiment: dot + Wilson interval per arm.
  function renderExperiment(data) {
    const id = "experiment-body";
    if (data.experiments.error) return fill(id, failure("experiments", data.experiments.error));
    const exp = data.experiment;
    if (!exp) {
      return fill(id, empty("experiment", "No A/B experiment yet.",
        "Start one with POST /v1/experiments {\"name\": …, \"arms\": {\"base\": 50, \"my-adapter@1\": 50}}; its arms appear here."));
    }
    if (!data.report || data.report.error) return fill(id, failure(`experiment ${exp.id}`, data.report && data.report.error));
    const rep = data.report.value;
    const control = rep.control || exp.control;
    const arms = (rep.arms || []).slice().sort((a, b) => (a.name === control ? -1 : b.name === control ? 1 : a.name.localeCompare(b.name)));
    const head = h("div", { class: "exp-head", "data-mark": "experiment", "data-id": exp.id, "data-status": exp.status },
      h("b", { class: "exp-name" }, exp.name || exp.id),
      h("span", { class: `badge ${exp.status === "running" ? "running" : "stopped"}` }, exp.status),
      h("span", { class: "muted" }, ` id ${exp.id} · started ${dateOf(exp.created_at)}${exp.stopped_at ? ` · stopped ${dateOf(exp.stopped_at)}` : ""} · control ${label(control)} · α = ${rep.alpha}`));
    const shownAny = arms.some((a) => a.shown > 0);
    if (!shownAny) {
      return fill(id, head, empty("experiment-arms", "No suggestion of this experiment was shown yet.", "Arms fill in as users of the experiment see suggestions."));
    }
    const lows = arms.filter((a) => a.shown > 0).map((a) => a.wilson_low);
    const highs = arms.filter((a) => a.shown > 0).map((a) => a.wilson_high);
    let lo = Math.max(0, Math.floor((Math.min(...lows) - 0.03) * 20) / 20);
    let hi = Math.min(1, Math.ceil((Math.max(...highs) + 0.03) * 20) / 20);
    if (hi - lo < 0.1) hi = Math.min(1, lo + 0.1);
    const W = widthOf(id), rowH = 46, m = { l: 150, r: 210, t: 10, b: 30 };
    const H = m.t + m.b + rowH * arms.length, pw = Math.max(80, W - m.l - m.r);
    const x = (v) => m.l + ((v - lo) / (hi - lo)) * pw;
    const chart = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": "acceptance rate per arm with 95 % Wilson intervals", "data-chart": "experiment" });
    const step = niceStep(hi - lo, 6);
    for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + 1e-9; v += step) {
      chart.append(s("line", { class: "grid", x1: x(v), x2: x(v), y1: m.t, y2: H - m.b }),
        s("text", { class: "tick", x: x(v), y: H - m.b + 16, "text-anchor": "middle" }, `${Math.round(v * 1000) / 10} %`));
    }
    const ctrl = arms.find((a) => a.name === control);
    if (ctrl && isNum(ctrl.rate)) {
      chart.append(s("line", { class: "control-line", x1: x(ctrl.rate), x2: x(ctrl.rate), y1: m.t, y2: H - m.b, "data-mark": "control-line", "data-rate": dataNum(ctrl.rate) }));
    }
    const color = paint;
    arms.forEach((a, i) => {
      const cy = m.t + rowH * i + rowH / 2;
      const isControl = a.name === control;
      const isWinner = rep.winner === a.name;
      const g = s("g", {
        class: `arm${isControl ? " control" : ""}${isWinner ? " winner" : ""}`, "data-mark": "arm", "data-arm": a.name,
        "data-rate": dataNum(a.rate), "data-low": dataNum(a.wilson_low), "data-high": dataNum(a.wilson_high),
        "data-shown": a.shown, "data-accepted": a.accepted, "data-users": a.users, "data-control": String(isControl), "data-winner": String(isWinner),
      });
      g.append(s("text", { class: "arm-name", x: m.l - 12, y: cy - (isControl || isWinner ? 3 : -4), "text-anchor": "end" }, label(a.name)));
      if (isControl || isWinner) {
        g.append(s("text", { class: `arm-tag${isWinner ? " win" : ""}`, x: m.l - 12, y: cy + 13, "text-anchor": "end" }, isWinner ? (isControl ? "control · winner" : "winner") : "control"));
      }
      if (a.shown > 0 && isNum(a.rate)) {
        const c = color(a.name);
        g.append(
          s("line", { class: "interval", x1: x(a.wilson_low), x2: x(a.wilson_high), y1: cy, y2: cy, stroke: c, "data-mark": "interval" }),
          s("line", { class: "cap", x1: x(a.wilson_low), x2: x(a.wilson_low), y1: cy - 7, y2: cy + 7, stroke: c }),
          s("line", { class: "cap", x1: x(a.wilson_high), x2: x(a.wilson_high), y1: cy - 7, y2: cy + 7, stroke: c }),
          s("circle", { class: "dot", cx: x(a.rate), cy, r: 7, fill: c }, tip(`${label(a.name)}: ${pct(a.rate)} (95 % CI ${pct(a.wilson_low)} – ${pct(a.wilson_high)})`)),
          s("text", { class: "arm-value", x: W - m.r + 12, y: cy - 2 }, `${pct(a.rate)}  [${pct(a.wilson_low)} – ${pct(a.wilson_high)}]`),
          s("text", { class: "arm-count", x: W - m.r + 12, y: cy + 14 }, `${count(a.accepted)} of ${count(a.shown)} shown · ${count(a.users)} users`),
        );
      } else {
        g.append(s("text", { class: "arm-count", x: m.l + 8, y: cy + 4 }, "nothing shown yet"));
      }
      chart.append(g);
    });
    // The decision: per comparison with the control, then the winner.
    const list = h("ul", { class: "decisions" });
    for (const c of rep.comparisons || []) {
      const diff = c.decision === "difference";
      list.append(h("li", { "data-mark": "comparison", "data-arm": c.arm, "data-decision": c.decision, "data-effect": dataNum(c.effect), "data-p": dataNum(c.sequential_p_value) },
        h("b", null, label(c.arm)), ` vs ${label(control)}: `,
        h("span", { class: isNum(c.effect) && c.effect >= 0 ? "up" : "down" }, `${isNum(c.effect) && c.effect >= 0 ? "+" : ""}${num(isNum(c.effect) ? c.effect * 100 : null)} points`),
        ` · always-valid p = ${isNum(c.sequential_p_value) ? c.sequential_p_value.toPrecision(2) : "–"}`,
        h("span", { class: "muted" }, ` (z-test p = ${isNum(c.p_value) ? c.p_value.toPrecision(2) : "–"}, valid only for one planned look)`),
        " → ", h("span", { class: `badge ${diff ? "diff" : "cont"}` }, diff ? "difference" : "continue")));
    }
    const winner = rep.winner
      ? h("p", { class: "verdict win", "data-mark": "winner", "data-winner": rep.winner }, "Winner: ", h("b", null, label(rep.winner)),
        rep.winner === control ? " (the control: a challenger is significantly worse)" : " is significantly better than the control.")
      : h("p", { class: "verdict", "data-mark": "winner", "data-winner": "" }, exp.status === "running"
        ? "No winner yet: the sequential test says continue collecting (it stays valid however often you look)."
        : "Stopped without a winner.");
    const others = (data.experiments.value.experiments || []).length - 1;
    fill(id, head, chart, winner, list, others > 0 ? h("p", { class: "muted" }, `${others} other experiment${others > 1 ? "s" : ""}: GET /v1/experiments.`) : null);
  }

  // 3. latency percentiles (grouped bars) per adapter.
  function renderLatency(data) {
    const id = "latency-body";
    if (data.byAdapter.error) return fill(id, failure("latency", data.byAdapter.error));
    const rows = baseFirst((data.byAdapter.value.rows || []).filter((r) => isNum(r.latency_p50_ms)));
    if (!rows.length) return fill(id, empty("latency", "No latency measured yet.", "Each completion request adds its end-to-end time."));
    const pcts = ["p50", "p90", "p99"];
    const max = Math.max(...rows.flatMap((r) => pcts.map((p) => r[`latency_${p}_ms`] || 0)), 1);
    const step = niceStep(max, 5);
    const top = Math.ceil(max / step) * step;
    const W = widthOf(id), H = 260, m = { l: 58, r: 12, t: 22, b: 40 };
    const pw = W - m.l - m.r, ph = H - m.t - m.b;
    const y = (v) => m.t + ph * (1 - v / top);
    const chart = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": "latency percentiles per adapter", "data-chart": "latency" });
    for (let v = 0; v <= top + 1e-9; v += step) {
      chart.append(s("line", { class: "grid", x1: m.l, x2: W - m.r, y1: y(v), y2: y(v) }),
        s("text", { class: "tick", x: m.l - 6, y: y(v) + 4, "text-anchor": "end" }, `${Math.round(v)} ms`));
    }
    const gw = pw / rows.length, bw = Math.min(46, (gw * 0.8) / 3);
    rows.forEach((r, i) => {
      const name = apiName(r.key);
      const cx = m.l + gw * i + gw / 2;
      const g = s("g", { class: "bar-group", "data-adapter": name });
      pcts.forEach((p, j) => {
        const v = r[`latency_${p}_ms`];
        if (!isNum(v)) return;
        const bx = cx + (j - 1.5) * bw;
        g.append(
          s("rect", { class: "bar", x: bx + 1, y: y(v), width: bw - 2, height: Math.max(0, y(0) - y(v)), fill: PCT_COLORS[p],
            "data-mark": "latency-bar", "data-adapter": name, "data-percentile": p, "data-ms": dataNum(v) }, tip(`${label(name)} ${p}: ${ms(v)}`)),
          s("text", { class: "bar-value", x: bx + bw / 2, y: y(v) - 4, "text-anchor": "middle" }, ms(v).replace(" ms", "")),
        );
      });
      g.append(s("text", { class: "group-label", x: cx, y: H - m.b + 18, "text-anchor": "middle" }, label(name)),
        s("text", { class: "tick", x: cx, y: H - m.b + 32, "text-anchor": "middle" }, `${count(r.completions)} requests`));
      chart.append(g);
    });
    const legend = h("div", { class: "legend" }, ...pcts.map((p) => h("span", { class: "key" }, h("i", { class: "swatch", style: `background:${PCT_COLORS[p]}` }), `${p} (${p === "p50" ? "median" : `${p.slice(1)} % are faster`})`)));
    fill(id, legend, chart);
  }

  // 3b. accepted characters per shown suggestion and retained share at 2 min.
  function hbars(rows, { mark, value, fmt, max, title, missing }) {
    const color = paint;
    const W = Math.max(280, Math.floor((widthOf("quality-body") - 24) / 2)), rowH = 30, m = { l: 120, r: 70, t: 4, b: 4 };
    const H = m.t + m.b + rowH * rows.length, pw = W - m.l - m.r;
    const chart = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": title, "data-chart": mark });
    rows.forEach((r, i) => {
      const name = apiName(r.key);
      const v = value(r);
      const cy = m.t + rowH * i + rowH / 2;
      chart.append(s("text", { class: "bar-name", x: m.l - 8, y: cy + 4, "text-anchor": "end" }, label(name)));
      chart.append(s("rect", { class: "track", x: m.l, y: cy - 8, width: pw, height: 16 }));
      if (isNum(v)) {
        chart.append(s("rect", { class: "bar", x: m.l, y: cy - 8, width: Math.max(1, (pw * Math.min(v, max)) / max), height: 16, fill: color(name),
          "data-mark": mark, "data-adapter": name, "data-value": dataNum(v) }, tip(`${label(name)}: ${fmt(v)}`)),
        s("text", { class: "bar-value", x: W - m.r + 8, y: cy + 4 }, fmt(v)));
      } else {
        chart.append(s("text", { class: "bar-missing", x: m.l + 8, y: cy + 4, "data-mark": mark, "data-adapter": name, "data-value": "" }, missing));
      }
    });
    return h("figure", { class: "half" }, h("figcaption", null, title), chart);
  }

  function renderQuality(data) {
    const id = "quality-body";
    if (data.byAdapter.error) return fill(id, failure("acceptance metrics", data.byAdapter.error));
    const rows = baseFirst((data.byAdapter.value.rows || []).filter((r) => r.shown > 0));
    if (!rows.length) return fill(id, empty("quality", NO_TELEMETRY, "Accepted and retained characters appear with the first shown suggestions."));
    const maxChars = Math.max(...rows.map((r) => r.accepted_chars_per_shown || 0), 1);
    fill(id, h("div", { class: "pair" },
      hbars(rows, { mark: "chars-bar", value: (r) => r.accepted_chars_per_shown, fmt: (v) => `${num(v)} chars`, max: maxChars * 1.05, title: "Accepted characters per shown suggestion", missing: "–" }),
      hbars(rows, { mark: "retained-bar", value: (r) => r.retained_120s, fmt: (v) => pct(v, 0), max: 1, title: "Accepted characters still there after 2 min", missing: "no retention reports yet" })));
  }

  // 4. adapters: loaded ones (newest first) joined with their telemetry, then telemetry-only ones.
  function metricsOf(meta) {
    const src = meta && typeof meta === "object" ? (meta.metrics && typeof meta.metrics === "object" ? meta.metrics : meta.eval || null) : null;
    if (!src || typeof src !== "object") return [];
    const out = [];
    for (const [k, v] of Object.entries(src)) {
      if (isNum(v)) out.push([k, v]);
      else if (v && typeof v === "object") for (const [k2, v2] of Object.entries(v)) if (isNum(v2)) out.push([`${k}.${k2}`, v2]);
    }
    return out;
  }

  function renderAdapters(data) {
    const id = "adapters-body";
    if (data.adapters.error && data.byAdapter.error) return fill(id, failure("adapters", data.adapters.error));
    const loaded = data.adapters.value ? data.adapters.value.adapters.slice().sort((a, b) => b.created_at - a.created_at) : [];
    const live = data.adapters.value ? data.adapters.value.live : null;
    const stats = new Map(((data.byAdapter.value && data.byAdapter.value.rows) || []).map((r) => [apiName(r.key), r]));
    const entries = loaded.map((a) => ({ name: a.name, info: a }));
    for (const name of [...stats.keys()].sort()) if (name !== BASE && !loaded.some((a) => a.name === name)) entries.push({ name, info: null });
    entries.push({ name: BASE, info: null });
    const color = paint;
    const head = ["adapter", "status", "created", "rank", "size", "trainer metrics", "shown", "acceptance", "chars / shown", "kept 2 min", "p50 latency"];
    const tbody = h("tbody");
    for (const { name, info } of entries) {
      const st = stats.get(name);
      const isLive = name === BASE ? !live : name === live;
      const status = isLive ? "live" : info ? "loaded" : name === BASE ? "" : "not loaded";
      const metrics = info ? metricsOf(info.metadata) : [];
      tbody.append(h("tr", {
        "data-mark": "adapter-row", "data-adapter": name, "data-status": status || "base", "data-shown": st ? st.shown : 0,
        "data-rate": st ? dataNum(st.acceptance_rate) : null, "data-loaded": String(Boolean(info)),
      },
      h("td", null, h("i", { class: "swatch", style: `background:${color(name)}` }), h("span", { class: "name" }, label(name))),
      h("td", null, status ? h("span", { class: `badge ${status.replace(" ", "-")}` }, status) : ""),
      h("td", null, info ? dateOf(info.created_at) : ""),
      h("td", { class: "num" }, info ? String(info.rank) : ""),
      h("td", { class: "num" }, info ? `${(info.size_bytes / 2 ** 20).toFixed(1)} MiB` : ""),
      h("td", { class: "metrics", title: metrics.map(([k, v]) => `${k} = ${v}`).join("\n") || null },
        ...(metrics.length ? metrics.slice(0, 4).map(([k, v]) => h("span", { class: "metric", "data-metric": k, "data-value": dataNum(v) }, `${k} ${Math.abs(v) < 10 ? v.toFixed(3) : v.toFixed(1)}`)) : [h("span", { class: "muted" }, "–")])),
      h("td", { class: "num" }, st ? count(st.shown) : "0"),
      h("td", { class: "num" }, st && isNum(st.acceptance_rate) ? pct(st.acceptance_rate) : "–"),
      h("td", { class: "num" }, st ? num(st.accepted_chars_per_shown) : "–"),
      h("td", { class: "num" }, st ? pct(st.retained_120s, 0) : "–"),
      h("td", { class: "num" }, st ? ms(st.latency_p50_ms) : "–")));
    }
    const table = h("table", { class: "grid", id: "adapters-table" }, h("thead", null, h("tr", null, ...head.map((t) => h("th", null, t)))), tbody);
    const note = !loaded.length ? h("p", { class: "muted", "data-empty": "adapters" }, "No adapter is loaded: the base model serves every request. Load one with POST /v1/adapters.") : null;
    fill(id, h("div", { class: "scroll" }, table), note);
  }

  // ---- the loop ------------------------------------------------------------------------
  function allNames(data) {
    const names = new Set([BASE]);
    if (data.adapters.value) data.adapters.value.adapters.forEach((a) => names.add(a.name));
    if (data.byAdapter.value) (data.byAdapter.value.rows || []).forEach((r) => names.add(apiName(r.key)));
    if (data.report && data.report.value) (data.report.value.arms || []).forEach((a) => names.add(a.name));
    return [...names];
  }

  function render(data) {
    paint = colorFor(allNames(data));
    const live = data.adapters.value ? data.adapters.value.live : undefined;
    if (live !== undefined) document.getElementById("live").textContent = live || "base model";
    const parts = [renderKpis, renderAcceptance, renderExperiment, renderLatency, renderQuality, renderAdapters];
    for (const part of parts) {
      try {
        part(data);
      } catch (err) {
        // A drawing bug must not blank the other sections; it is shown where it happened.
        const section = { renderAcceptance: "acceptance-body", renderExperiment: "experiment-body", renderLatency: "latency-body", renderQuality: "quality-body", renderAdapters: "adapters-body" }[part.name];
        if (section) fill(section, h("div", { class: "error" }, h("p", null, `Drawing failed: ${err && err.message}`)));
        else throw err;
      }
    }
  }

  // The server's 401 when auth is on and this page has no (valid) token, else null.
  function tokenRefusal(data) {
    const refused = [data.adapters, data.byAdapter, data.experiments].find((r) => r.error && r.error.status === 401);
    return refused ? refused.error : null;
  }

  async function refresh() {
    if (loading) return;
    loading = true;
    clearTimeout(timer);
    try {
      const data = await fetchAll();
      last = data;
      // Without a token there is nothing to show but the prompt: no red panels, no zero counters.
      const refusal = tokenRefusal(data);
      document.getElementById("token-form").hidden = !refusal;
      document.getElementById("token-reason").textContent = refusal ? refusal.message : "";
      document.getElementById("app").hidden = Boolean(refusal);
      if (!refusal) render(data);
      const now = new Date();
      document.getElementById("updated").textContent = `Updated ${now.toLocaleTimeString("en-GB")}`;
      document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
      document.body.dataset.loaded = "1";
    } catch (err) {
      document.getElementById("updated").textContent = `Update failed (${err && err.message}); retrying in ${REFRESH_MS / 1000} s`;
    } finally {
      loading = false;
      timer = setTimeout(refresh, REFRESH_MS);
    }
  }

  document.getElementById("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = document.getElementById("token").value.trim();
    if (value) localStorage.setItem(TOKEN_KEY, value);
    else localStorage.removeItem(TOKEN_KEY);
    refresh();
  });

  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => last && render(last), 150);
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && last && Date.now() - last.at > REFRESH_MS) refresh();
  });

  refresh();
})();
