// thunderhelm dashboard. Every value from an event reaches the page through
// textContent or setAttribute, never as markup.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const state = { runs: new Map(), config: null, route: null, liveRunId: null };

function h(tag, props, ...children) {
  const node = document.createElement(tag);
  applyProps(node, props);
  appendAll(node, children);
  return node;
}

function s(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  appendAll(node, children);
  return node;
}

function applyProps(node, props) {
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null) continue;
    if (k === "text") node.textContent = String(v);
    else if (k === "className") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, String(v));
  }
}

function appendAll(node, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    node.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
  }
}

function fmt(x, digits = 4) {
  return typeof x === "number" && Number.isFinite(x) ? x.toFixed(digits) : "–";
}

function fmtDuration(seconds) {
  if (typeof seconds !== "number") return "–";
  if (seconds < 60) return seconds.toFixed(1) + " s";
  return Math.floor(seconds / 60) + " m " + Math.round(seconds % 60) + " s";
}

function fmtMicros(us) {
  if (us < 1000) return us + " µs";
  if (us < 1e6) return (us / 1000).toFixed(1) + " ms";
  return (us / 1e6).toFixed(2) + " s";
}

async function api(path, options) {
  const resp = await fetch(path, options);
  const text = await resp.text();
  let body = null;
  try { body = JSON.parse(text); } catch (e) { body = { error: text }; }
  if (!resp.ok) throw new Error((body && body.error) || text || resp.statusText);
  return body;
}

function post(path, data) {
  return api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(data),
  });
}

function statusBadge(status) {
  return h("span", { className: "status " + status, text: status });
}

function main() { return document.getElementById("main"); }

function show(...nodes) {
  const m = main();
  m.replaceChildren(...nodes.flat(Infinity));
}

// --- live updates ---------------------------------------------------------------

function connectEvents() {
  const live = document.getElementById("live");
  const source = new EventSource("/api/events");
  source.onopen = () => { live.textContent = "live"; live.className = "live on"; };
  source.onerror = () => { live.textContent = "offline"; live.className = "live off"; };
  source.addEventListener("run", (message) => {
    const summary = JSON.parse(message.data);
    state.runs.set(summary.run_id, summary);
    if (state.route && state.route.page === "runs") upsertRunRow(summary);
    if (state.route && state.route.page === "run" && state.route.runId === summary.run_id) {
      refreshRun(summary.run_id);
    }
  });
}

// A busy run changes many times a second: at most one refresh in flight, one queued.
const refreshing = { busy: false, again: false };
async function refreshRun(runId) {
  if (refreshing.busy) { refreshing.again = true; return; }
  refreshing.busy = true;
  try {
    do { refreshing.again = false; await renderRun(runId, true); } while (refreshing.again);
  } finally { refreshing.busy = false; }
}

// --- runs -------------------------------------------------------------------------

const RUN_COLUMNS = ["run", "status", "generation", "best so far", "evaluations", "duration"];

function runRow(r) {
  return h("tr", { "data-run-id": r.run_id, "data-status": r.status },
    h("td", { className: "run" }, h("a", { href: "#/runs/" + encodeURIComponent(r.run_id), text: r.run_id })),
    h("td", { className: "status-cell" }, statusBadge(r.status)),
    h("td", { className: "generation num", text: r.generation + "/" + r.generations }),
    h("td", { className: "best num", text: fmt(r.best_fitness) }),
    h("td", { className: "evaluations num", text: r.evaluations }),
    h("td", { className: "duration num", text: fmtDuration(r.duration_s) }));
}

function currentFilter() {
  const select = document.getElementById("status-filter");
  return select ? select.value : "";
}

function upsertRunRow(r) {
  const body = document.getElementById("runs-body");
  if (!body) return;
  const old = body.querySelector(`tr[data-run-id="${CSS.escape(r.run_id)}"]`);
  const filter = currentFilter();
  if (filter && r.status !== filter) { if (old) old.remove(); updateRunCount(); return; }
  const row = runRow(r);
  if (old) old.replaceWith(row); else body.prepend(row);
  updateRunCount();
}

function updateRunCount() {
  const body = document.getElementById("runs-body");
  const count = document.getElementById("runs-count");
  if (body && count) count.textContent = body.children.length + " runs";
}

async function renderRuns(status) {
  const list = await api("/api/runs");
  for (const r of list) state.runs.set(r.run_id, r);
  const select = h("select", { id: "status-filter", onchange: () => {
    location.hash = select.value ? "#/?status=" + encodeURIComponent(select.value) : "#/";
  } }, h("option", { value: "", text: "all" }),
    ["accepted", "running", "succeeded", "failed", "cancelled", "rejected", "cancel-pending"]
      .map((st) => h("option", { value: st, text: st })));
  select.value = status || "";
  const rows = [...state.runs.values()]
    .filter((r) => !status || r.status === status)
    .sort((a, b) => String(b.started_at || "").localeCompare(String(a.started_at || "")));
  show(
    h("h1", { text: "Runs" }),
    h("div", { className: "filters" }, h("label", { text: "status " }, select),
      h("span", { id: "runs-count" })),
    h("table", { id: "runs-table" },
      h("thead", {}, h("tr", {}, RUN_COLUMNS.map((c) => h("th", { text: c })))),
      h("tbody", { id: "runs-body" }, rows.map(runRow))));
  updateRunCount();
}

// --- one run ------------------------------------------------------------------------

function fitnessChart(history) {
  const width = 560, height = 240, pad = 40;
  const series = [
    { key: "best_fitness", cls: "best", color: "#1f7a3a", label: "best" },
    { key: "mean_fitness", cls: "mean", color: "#4a7bd0", label: "mean" },
  ];
  const values = history.flatMap((g) => series.map((se) => g[se.key]))
    .filter((v) => typeof v === "number");
  const svg = s("svg", { id: "fitness-chart", width, height, viewBox: `0 0 ${width} ${height}` });
  if (!values.length) { svg.appendChild(s("text", { x: pad, y: height / 2 }, "no generations yet")); return svg; }
  let lo = Math.min(...values), hi = Math.max(...values);
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
  const n = history.length;
  const x = (i) => pad + (n === 1 ? (width - 2 * pad) / 2 : (i * (width - 2 * pad)) / (n - 1));
  const y = (v) => height - pad - ((v - lo) / (hi - lo)) * (height - 2 * pad);
  svg.appendChild(s("line", { x1: pad, y1: height - pad, x2: width - pad, y2: height - pad, stroke: "#999" }));
  svg.appendChild(s("line", { x1: pad, y1: pad, x2: pad, y2: height - pad, stroke: "#999" }));
  svg.appendChild(s("text", { x: 2, y: y(hi) + 4 }, hi.toFixed(3)));
  svg.appendChild(s("text", { x: 2, y: y(lo) + 4 }, lo.toFixed(3)));
  history.forEach((g, i) => svg.appendChild(
    s("text", { x: x(i) - 3, y: height - pad + 16 }, String(g.generation))));
  svg.appendChild(s("text", { x: width / 2 - 30, y: height - 6 }, "generation"));
  series.forEach((se, k) => {
    const pts = history.map((g, i) => [i, g[se.key]]).filter(([, v]) => typeof v === "number");
    svg.appendChild(s("polyline", { class: "line " + se.cls, fill: "none", stroke: se.color,
      "stroke-width": 2, points: pts.map(([i, v]) => `${x(i)},${y(v)}`).join(" ") }));
    for (const [i, v] of pts) {
      svg.appendChild(s("circle", { class: "point " + se.cls, cx: x(i), cy: y(v), r: 4,
        fill: se.color, "data-generation": history[i].generation, "data-value": v },
        s("title", {}, `${se.label} ${v}`)));
    }
    svg.appendChild(s("rect", { x: width - pad - 70, y: 8 + k * 16, width: 10, height: 10, fill: se.color }));
    svg.appendChild(s("text", { x: width - pad - 55, y: 17 + k * 16 }, se.label));
  });
  return svg;
}

const CANDIDATE_COLUMNS = [
  ["generation", "generation", "int"], ["index", "candidate", "int"], ["fitness", "fitness", "f"],
  ["val_accuracy", "val accuracy", "f"], ["val_r2", "val R²", "f"], ["val_rmse", "val RMSE", "f"],
  ["val_loss", "val loss", "f"],
  ["train_loss", "train loss", "f"], ["params", "params", "int"], ["epochs_run", "epochs", "int"],
  ["status", "status", "text"],
];

// Shown only when a candidate has them: accuracy for classification, R² and RMSE for regression.
const TASK_COLUMNS = new Set(["val_accuracy", "val_r2", "val_rmse"]);

function candidateTable(candidates) {
  const rows = candidates.flatMap((gen, g) => gen.map((c) => ({ generation: g, ...c })));
  const columns = CANDIDATE_COLUMNS.filter(([key]) =>
    !TASK_COLUMNS.has(key) || rows.some((c) => c[key] !== null && c[key] !== undefined));
  const sort = { key: "generation", dir: 1 };
  const body = h("tbody", { id: "candidates-body" });
  const table = h("table", { id: "candidates" });
  const draw = () => {
    const sorted = [...rows].sort((a, b) => {
      const va = a[sort.key], vb = b[sort.key];
      if (va === vb) return a.generation - b.generation || a.index - b.index;
      if (va === null || va === undefined) return 1;
      if (vb === null || vb === undefined) return -1;
      return (va < vb ? -1 : 1) * sort.dir;
    });
    body.replaceChildren(...sorted.map((c) => h("tr", { "data-generation": c.generation, "data-index": c.index },
      columns.map(([key, , kind]) => h("td", {
        className: kind === "text" ? key : key + " num",
        "data-value": c[key] === null || c[key] === undefined ? "" : c[key],
        text: kind === "f" ? fmt(c[key]) : (c[key] === null || c[key] === undefined ? "–" : c[key]),
      })))));
    table.querySelectorAll("th").forEach((th) => {
      th.textContent = th.dataset.label + (th.dataset.key === sort.key ? (sort.dir > 0 ? " ▲" : " ▼") : "");
    });
  };
  table.append(h("thead", {}, h("tr", {}, columns.map(([key, label]) => h("th", {
    className: "sortable", "data-key": key, "data-label": label,
    onclick: () => { sort.dir = sort.key === key ? -sort.dir : (key === "generation" || key === "index" ? 1 : -1); sort.key = key; draw(); },
  })))), body);
  draw();
  return table;
}

function networkDrawing(best) {
  const genome = best && best.genome;
  const wiring = best && (best.wiring || (genome && genome.wiring));
  if (!genome || !Array.isArray(genome.levels) || !wiring) return h("p", { text: "no network yet" });
  const levels = genome.levels;
  const colWidth = 150, rowHeight = 56, pad = 30;
  const tallest = Math.max(1, ...levels.map((l) => l.length));
  const width = pad * 2 + colWidth * (levels.length + 1);
  const height = pad * 2 + rowHeight * tallest;
  const pos = new Map();
  pos.set(0, { x: pad, y: height / 2 });
  let id = 1;
  levels.forEach((level, k) => level.forEach((unit, i) => {
    pos.set(id++, { x: pad + colWidth * (k + 1), y: pad + rowHeight * (i + 0.5) + (rowHeight * (tallest - level.length)) / 2, unit });
  }));
  const out = { x: width - pad, y: height / 2 };
  const svg = s("svg", { id: "network", width, height, viewBox: `0 0 ${width} ${height}` });
  const edge = (a, b, cls) => svg.appendChild(s("line", { class: "edge " + cls, x1: a.x, y1: a.y, x2: b.x, y2: b.y, stroke: "#9aa7bb" }));
  (wiring.unit_inputs || []).forEach((inputs, u) => inputs.forEach((src) => {
    if (pos.has(src) && pos.has(u + 1)) edge(pos.get(src), pos.get(u + 1), "unit");
  }));
  (wiring.output_inputs || []).forEach((src) => { if (pos.has(src)) edge(pos.get(src), out, "output"); });
  const node = (p, label, cls, fill) => {
    svg.appendChild(s("circle", { class: "node " + cls, cx: p.x, cy: p.y, r: 16, fill, stroke: "#333" }));
    svg.appendChild(s("text", { x: p.x - 18, y: p.y + 30 }, label));
  };
  node(pos.get(0), "input", "input", "#ffe9a8");
  for (const [nid, p] of pos) {
    if (nid === 0) continue;
    node(p, `${p.unit.neurons} ${p.unit.activation}`, "unit", "#cfe0ff");
  }
  node(out, "output", "output", "#cdebd6");
  return svg;
}

function artifactCard(detail) {
  const artifact = detail.result && detail.result.artifact;
  if (!artifact) return h("p", { text: "no artifact yet (written when the run succeeds)" });
  const path = JSON.stringify(String(artifact));
  const usage = [
    "# Python: the found model on raw inputs (docs/artifact.md)",
    "import thunderhelm",
    `model = thunderhelm.load_model(${path})`,
    "labels = model.predict(rows)          # rows: raw features, one per row",
    "proba = model.predict_proba(rows)",
    "",
    "# shell",
    `thunderhelm predict ${path} --input rows.csv --json`,
    `thunderhelm export ${path} --onnx model.onnx`,
  ].join("\n");
  const metrics = (detail.result.best && detail.result.best.metrics) || {};
  const rows = [h("dt", { text: "artifact" }), h("dd", { id: "artifact-path", text: artifact })];
  for (const key of ["val_accuracy", "test_accuracy", "val_r2", "test_r2", "test_rmse"]) {
    if (typeof metrics[key] === "number") {
      rows.push(h("dt", { text: "best " + key.replace("_", " ") }), h("dd", { text: metrics[key].toFixed(4) }));
    }
  }
  const model = detail.result.model;
  const parts = [h("dl", { className: "kv" }, ...rows)];
  if (model) {
    const kind = model.kind === "ensemble" ? `ensemble of ${model.members.length}` : "single network";
    rows.push(h("dt", { text: "delivered" }), h("dd", { id: "model-kind", text: `${kind}: ${model.why}` }));
    if (model.test && typeof model.test.accuracy === "number") {
      rows.push(h("dt", { text: "model test accuracy" }), h("dd", { text: model.test.accuracy.toFixed(4) }));
    }
    const head = h("tr", {}, ...["member", "generation", "index", "fitness", "weight"].map((t) => h("th", { text: t })));
    const body = model.members.map((m, i) => h("tr", {},
      h("td", { text: String(i) }), h("td", { text: String(m.generation + 1) }),
      h("td", { text: String(m.index) }),
      h("td", { text: typeof m.fitness === "number" ? m.fitness.toFixed(4) : "-" }),
      h("td", { text: m.weight.toFixed(3) })));
    parts.push(h("table", { id: "model-members" }, h("thead", {}, head), h("tbody", {}, ...body)));
  }
  if (detail.result.stopped_by) {
    rows.push(h("dt", { text: "stopped by" }), h("dd", { text: detail.result.stopped_by }));
  }
  return h("div", {}, ...parts, h("pre", { id: "artifact-usage", text: usage }));
}

async function renderRun(runId, refresh) {
  let detail;
  try { detail = await api("/api/runs/" + encodeURIComponent(runId)); }
  catch (e) { show(h("h1", { text: "Run " + runId }), h("p", { className: "error-text", text: e.message })); return; }
  if (!(state.route && state.route.page === "run" && state.route.runId === runId)) return;
  const terminal = ["succeeded", "failed", "cancelled", "rejected"].includes(detail.status);
  const message = h("span", { id: "cancel-result" });
  const cancel = h("button", { id: "cancel", onclick: async () => {
    cancel.disabled = true;
    try { await post("/api/runs/" + encodeURIComponent(runId) + "/cancel", { reason: "cancelled from the dashboard" });
      message.textContent = "cancel requested"; }
    catch (e) { message.textContent = e.message; cancel.disabled = false; }
  } }, "Cancel run");
  cancel.disabled = terminal || Boolean(detail.cancel_reason);
  const more = h("input", { id: "continue-generations", type: "number", min: "1", max: "1000", value: "2" });
  more.setAttribute("aria-label", "more generations");
  const goOn = h("button", { id: "continue", onclick: async () => {
    goOn.disabled = true;
    try { await post("/api/runs/" + encodeURIComponent(runId) + "/continue", { generations: Number(more.value) });
      message.textContent = "continue requested"; }
    catch (e) { message.textContent = e.message; goOn.disabled = false; }
  } }, "Continue for");
  goOn.disabled = detail.status !== "succeeded";
  const err = detail.result && detail.result.error;
  const best = detail.best || (detail.result && detail.result.best);
  show(
    h("h1", {}, "Run ", h("span", { id: "run-id", text: detail.run_id }), " ", statusBadge(detail.status)),
    h("div", { className: "card" }, h("dl", { className: "kv" },
      h("dt", { text: "generation" }), h("dd", { id: "run-generation", text: detail.generation + "/" + detail.generations }),
      h("dt", { text: "best fitness" }), h("dd", { id: "run-best", text: fmt(detail.best_fitness) }),
      h("dt", { text: "evaluations" }), h("dd", { text: detail.evaluations }),
      h("dt", { text: "duration" }), h("dd", { text: fmtDuration(detail.duration_s) }),
      h("dt", { text: "dataset" }), h("dd", { text: detail.request && detail.request.dataset ? detail.request.dataset.name : "–" }),
      detail.cancel_reason ? [h("dt", { text: "cancel reason" }), h("dd", { text: detail.cancel_reason })] : [],
      err ? [h("dt", { text: "error" }), h("dd", { className: "error-text", text: `${err.class}: ${err.message}` })] : [],
      detail.reasons.length ? [h("dt", { text: "rejected" }), h("dd", { text: detail.reasons.join("; ") })] : []),
      h("p", {}, h("a", { id: "trace-link", href: "#/runs/" + encodeURIComponent(runId) + "/trace", text: "trace waterfall" }),
        " ", cancel, " ", goOn, " ", more, " more generations ", message)),
    h("h2", { text: "Fitness per generation" }), fitnessChart(detail.history),
    h("h2", { text: "Best network" }), networkDrawing(best),
    h("h2", { text: "Artifact" }), artifactCard(detail),
    h("h2", { text: "Candidates" }), candidateTable(detail.candidates));
  if (!refresh) window.scrollTo(0, 0);
}

// --- trace --------------------------------------------------------------------------

async function renderTrace(runId) {
  show(h("h1", { text: "Trace of " + runId }), h("p", { id: "trace-status", text: "loading…" }));
  let trace;
  try { trace = await api("/api/runs/" + encodeURIComponent(runId) + "/trace"); }
  catch (e) { document.getElementById("trace-status").textContent = e.message; return; }
  const total = Math.max(1, trace.duration_us);
  const rows = trace.spans.map((span) => {
    const bar = h("div", { className: "bar" + (span.error ? " error" : "") });
    bar.style.left = (100 * span.offset_us / total) + "%";
    bar.style.width = (100 * span.duration_us / total) + "%";
    const name = h("div", { className: "name", title: span.name, text: span.name + (span.service ? "  [" + span.service + "]" : "") });
    name.style.paddingLeft = (span.depth * 14) + "px";
    const attrs = h("div", { className: "attrs", hidden: "" },
      h("dl", { className: "kv" }, Object.entries(span.attributes).map(([k, v]) =>
        [h("dt", { text: k }), h("dd", { text: typeof v === "string" ? v : JSON.stringify(v) })])));
    const row = h("div", { className: "row", "data-name": span.name, onclick: () => { attrs.hidden = !attrs.hidden; } },
      name, h("div", { className: "lane" }, bar),
      h("div", { className: "duration num", text: fmtMicros(span.duration_us) }), attrs);
    return row;
  });
  const parts = [h("p", { id: "trace-status", text: `trace ${trace.trace_id} · ${trace.spans.length} spans · ${fmtMicros(trace.duration_us)} · click a span for its attributes` })];
  if (trace.jaeger_ui) parts.push(h("p", {}, h("a", { id: "jaeger-link", href: trace.jaeger_ui, text: "open in Jaeger's UI" })));
  show(h("h1", {}, "Trace of ", h("a", { href: "#/runs/" + encodeURIComponent(runId), text: runId })),
    parts, h("div", { className: "waterfall", id: "waterfall" }, rows));
}

// --- dead letters ---------------------------------------------------------------------

async function renderLetters(query) {
  const stage = h("select", { id: "dlq-stage" }, ["", "decode", "validate", "decide", "execute", "produce"]
    .map((st) => h("option", { value: st, text: st || "any stage" })));
  const error = h("input", { id: "dlq-error", placeholder: "error class" });
  const topic = h("input", { id: "dlq-topic", placeholder: "original topic" });
  stage.value = query.get("stage") || ""; error.value = query.get("error") || ""; topic.value = query.get("topic") || "";
  const apply = () => {
    const q = new URLSearchParams();
    for (const [k, el] of [["stage", stage], ["error", error], ["topic", topic]]) if (el.value) q.set(k, el.value);
    location.hash = "#/dead-letters?" + q.toString();
  };
  const detail = h("div", { id: "dlq-detail" });
  const result = h("p", { id: "redrive-result" });
  const body = h("tbody", { id: "letters-body" });
  const redrive = h("button", { id: "redrive", onclick: async () => {
    const records = [...body.querySelectorAll("input[type=checkbox]:checked")].map((c) => [Number(c.dataset.partition), Number(c.dataset.offset)]);
    if (!records.length) { result.textContent = "select dead letters first"; return; }
    redrive.disabled = true;
    try {
      const out = await post("/api/dead-letters/redrive", { records });
      result.textContent = "re-drove " + out.redriven.map((r) => `${r.from[0]}:${r.from[1]} → ${r.to.topic}[${r.to.partition}]@${r.to.offset}`).join(", ");
    } catch (e) { result.textContent = e.message; }
    redrive.disabled = false;
  } }, "Redrive selected");
  show(h("h1", { text: "Dead letters" }),
    h("div", { className: "filters" }, stage, error, topic, h("button", { id: "dlq-apply", onclick: apply }, "Filter"),
      h("button", { id: "dlq-reload", onclick: () => loadLetters(query, body, detail, result) }, "Reload"), redrive),
    result, h("table", { id: "letters" }, h("thead", {}, h("tr", {},
      ["", "record", "dead-lettered at", "stage", "error", "original", "attempt", "key", "message"].map((c) => h("th", { text: c })))), body),
    detail);
  await loadLetters(query, body, detail, result);
}

// The rows shown stay until the new ones arrive (reading the topic takes a
// moment), and a dead letter already shown keeps its row, checkbox included:
// a record at a partition and offset never changes.
async function loadLetters(query, body, detail, result) {
  let letters;
  try { letters = await api("/api/dead-letters?" + query.toString()); }
  catch (e) { result.textContent = e.message; return; }
  const shown = new Map([...body.children].map((tr) => [tr.dataset.record, tr]));
  body.replaceChildren(...letters.map((dl) => shown.get(`${dl.partition}:${dl.offset}`) || letterRow(dl, detail)));
}

function letterRow(dl, detail) {
  const id = `${dl.partition}:${dl.offset}`;
  return h("tr", { "data-record": id },
    h("td", {}, h("input", { type: "checkbox", "data-partition": dl.partition, "data-offset": dl.offset })),
    h("td", {}, h("button", { className: "show", text: id, onclick: () => showLetter(dl.partition, dl.offset, detail) })),
    h("td", { text: dl.dead_lettered_at }), h("td", { text: dl.stage }), h("td", { className: "error-class", text: dl.error_class }),
    h("td", { text: dl.original }), h("td", { className: "attempt", text: dl.attempt }),
    h("td", { className: "key", text: dl.key.text !== undefined ? dl.key.text : (dl.key.base64 !== undefined ? "base64:" + dl.key.base64 : "–") }),
    h("td", { className: "message", text: dl.error_message }));
}

async function showLetter(partition, offset, into) {
  const dl = await api(`/api/dead-letters/${partition}/${offset}`);
  const shown = (v) => (v.null ? "(null)" : v.text !== undefined ? v.text : "base64: " + v.base64);
  into.replaceChildren(h("h2", { text: `Dead letter ${partition}:${offset}` }),
    h("dl", { className: "kv card" },
      h("dt", { text: "error" }), h("dd", { text: `${dl.error_class}: ${dl.error_message || ""}` }),
      h("dt", { text: "original" }), h("dd", { text: dl.original }),
      h("dt", { text: "retryable" }), h("dd", { text: String(dl.retryable) })),
    h("h2", { text: "Headers" }),
    h("table", { id: "dlq-headers" }, h("tbody", {}, dl.headers.map((hd) =>
      h("tr", {}, h("td", { text: hd.name }), h("td", { text: shown(hd) }))))),
    h("h2", { text: "Record value" }), h("pre", { id: "dlq-value", text: shown(dl.value) }));
}

// --- routing ------------------------------------------------------------------------

function parseRoute() {
  const [path, qs] = (location.hash.slice(1) || "/").split("?");
  const query = new URLSearchParams(qs || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "runs" && parts[1] && parts[2] === "trace") return { page: "trace", runId: parts[1], query };
  if (parts[0] === "runs" && parts[1]) return { page: "run", runId: parts[1], query };
  if (parts[0] === "dead-letters") return { page: "dead-letters", query };
  return { page: "runs", query };
}

function route() {
  state.route = parseRoute();
  const r = state.route;
  const done = r.page === "runs" ? renderRuns(r.query.get("status"))
    : r.page === "run" ? renderRun(r.runId, false)
      : r.page === "trace" ? renderTrace(r.runId) : renderLetters(r.query);
  done.catch((e) => show(h("p", { className: "error-text", text: String(e.message || e) })));
}

window.addEventListener("hashchange", route);
connectEvents();
route();
