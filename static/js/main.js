// Headmap page: wires the controls to the API client and the two views. All switching of layer,
// head, view, aggregate and options happens here, on the response already in memory.

import { Aggregates } from "./aggregate.js";
import { ApiError, getAttention, getModels, setRoot } from "./api.js";
import { CompareView } from "./compare.js";
import { Controls } from "./controls.js";
import { ExplainView } from "./explain.js";
import * as exporter from "./exporter.js";
import { ModelGrid } from "./grid.js";
import { HeadView } from "./heatmap.js";
import { StatsView } from "./stats.js";
import { tensorFromResponse } from "./tensor.js";
import { groupTokens, project } from "./tokens.js";
import { Tooltip } from "./tooltip.js";
import { formatState, parseState, writeState } from "./urlstate.js";

const ERROR_TITLES = {
  empty_text: "Nothing to analyse",
  invalid_text: "Text not accepted",
  invalid_request: "Request not accepted",
  model_not_found: "Unknown model",
  pair_unsupported: "This model takes one segment only",
  payload_too_large: "Request too large",
  too_many_tokens: "Input too long",
  not_ready: "Models are still loading",
  overloaded: "The server is busy",
  timeout: "The request took too long",
  network_error: "Server unreachable",
};

const root = document.getElementById("app");
setRoot(root.dataset.root || "");
const controls = new Controls();
const tooltip = new Tooltip(document.getElementById("tooltip"));
const headView = new HeadView(document.getElementById("heatmap"), tooltip);
/** Open one head in the head view (from the model grid or the statistics). */
function openHead(layer, head) {
  tooltip.hide();
  Object.assign(state, { view: "head", agg: "head", layer, head });
  controls.apply({ ...state, text: null, pair: null });
  update({ grid: false });
  headView.el.focus({ preventScroll: true });
}
const grid = new ModelGrid(document.getElementById("grid"), tooltip, openHead);
const stats = new StatsView(tooltip, openHead, (stat) => {
  state.stat = stat;
  update({ grid: false });
});
const compare = new CompareView(tooltip, (cmp) => {
  state.cmp = cmp;
  update({ grid: false });
});
const explain = new ExplainView(tooltip, (model) => {
  controls.model.value = model;
  controls.syncModelInfo();
  run();
});

/** View state (what the URL holds). text/pair/model are those of the response shown. */
const state = parseState(location.hash);
/** The response shown and what is derived from it. */
let data = null;
let inflight = null;
let rendering = false;
let pending = false;
let gridDirty = true;
let renders = 0;

function setPageState(value) {
  root.dataset.state = value; // "loading" | "busy" | "ready" | "error": for tests and styling
}

// -- deriving the shown matrix ---------------------------------------------------------------------

function groups() {
  const key = `${state.hide}:${state.merge}`;
  if (data.groupsKey !== key) {
    data.groups = groupTokens(data.resp, { hideSpecial: state.hide, mergeWords: state.merge });
    data.groupsKey = key;
  }
  return data.groups;
}

/** `base` (T x T, for aggregate `agg`) after hiding and merging. */
function reshape(base, agg) {
  const g = groups();
  const T = data.tensor.size;
  const hidden = g.reduce((n, x) => n + x.members.length, 0) < T;
  // Max over heads is not row-stochastic, so hidden columns are dropped without renormalising.
  return project(base, T, g, hidden && agg !== "max");
}

/** The head-view matrix for the current state (rollout of a long input may take a moment). */
async function shownMatrix() {
  const { agg, layer, head } = state;
  const slow = agg === "rollout" && !data.aggs.rollout.done[layer];
  if (slow) controls.busy("Computing rollout…");
  try {
    return reshape(await data.aggs.get(agg, layer, head), agg);
  } finally {
    if (slow && !inflight) controls.idle();
  }
}

function title() {
  const { model } = data.resp;
  const H = data.tensor.heads;
  const parts = {
    head: `${model} · layer ${state.layer} · head ${state.head}`,
    mean: `${model} · layer ${state.layer} · mean over ${H} heads`,
    max: `${model} · layer ${state.layer} · max over ${H} heads`,
    rollout: `${model} · attention rollout, layers 0–${state.layer}`,
  };
  const extra = [state.hide && "special tokens hidden", state.merge && "words merged"].filter(Boolean);
  return [parts[state.agg], ...extra].join(" · ");
}

async function currentView() {
  const matrix = await shownMatrix();
  const g = groups();
  let zmax = 1;
  if (state.range === "max") {
    zmax = 0;
    for (let i = 0; i < matrix.length; i++) if (matrix[i] > zmax) zmax = matrix[i];
    zmax = Math.max(zmax, 1e-6);
  }
  const boundaries = [];
  for (let i = 1; i < g.length; i++) if (g[i].segment !== g[i - 1].segment) boundaries.push(i);
  return {
    matrix,
    n: g.length,
    groups: g,
    title: title(),
    scale: state.scale,
    zmax,
    boundaries,
    revision: `${data.id}:${state.hide}:${state.merge}`,
  };
}

// -- rendering -------------------------------------------------------------------------------------

async function render() {
  if (!data) return;
  const t0 = performance.now();
  if (state.view === "head") {
    const key = formatState(state);
    const view = await currentView();
    if (key !== formatState(state)) return; // the state moved on while rollout ran; a newer render follows
    await headView.draw(view);
  } else if (state.view === "stats") {
    await stats.show({ request: data.request, stat: state.stat, scale: state.scale, selected: { layer: state.layer, head: state.head } });
  } else if (state.view === "compare") {
    if (state.cmp) state.cmp = compare.restore(state.cmp);
    compare.prefill(data.request);
    await compare.show(state);
  } else if (state.view === "explain") {
    const kind = controls.modelInfoFor(data.resp.model)?.kind ?? data.resp.kind;
    const head = Math.min(state.head, data.tensor.heads - 1);
    await explain.show({ request: data.request, kind, models: controls.models, head, scale: state.scale });
  } else if (state.view === "model" && gridDirty) {
    const n = groups().length;
    grid.draw({
      layers: data.resp.layers,
      heads: data.resp.heads,
      n,
      matrixAt: (l, h) => reshape(data.aggs.getSync("head", l, h), "head"),
      scale: state.scale,
      range: state.range,
      selected: { layer: state.layer, head: state.head },
    });
    gridDirty = false;
  }
  const ms = performance.now() - t0;
  root.dataset.renderMs = String(Math.round(ms));
  root.dataset.renders = String(++renders);
  root.dataset.view = state.view;
  // For benchmarks and tests: a draw finished (listeners time it against their own performance.now()).
  document.dispatchEvent(new CustomEvent("headmap:drawn", { detail: { view: state.view, ms, renders } }));
}

// One task's yield (not a whole frame): changes queued in the same burst are folded into one render,
// and a switch is not delayed by up to 16 ms waiting for the next animation frame.
const nextTask = () => new Promise((resolve) => setTimeout(resolve, 0));

/**
 * Record the state in the URL and redraw. Renders never overlap: a burst of changes (a slider
 * dragged) while one is drawing gives one more render, of the latest state.
 */
async function update({ grid: gridChanged = true } = {}) {
  if (gridChanged) gridDirty = true;
  writeState(state);
  if (rendering) {
    pending = true;
    return;
  }
  rendering = true;
  try {
    do {
      pending = false;
      await nextTask();
      try {
        await render();
      } catch (err) {
        if (!err?.shown) showError(err); // the insight tabs show their own errors in place
      }
    } while (pending);
  } finally {
    rendering = false;
  }
}

// -- running ---------------------------------------------------------------------------------------

function showError(err) {
  if (err instanceof ApiError) {
    const title = `${ERROR_TITLES[err.code] || "Request failed"} (${err.status || "no answer"} · ${err.code})`;
    let detail = err.detail;
    if (err.code === "too_many_tokens" && !controls.truncate.checked) {
      detail += " Tick “Cut long text to the model's token limit” to analyse the first part.";
    }
    controls.showError(title, detail);
  } else {
    controls.showError("Something went wrong in the page", String(err && err.message ? err.message : err));
    console.error(err);
  }
  setPageState("error");
}

function sameRequest(a, b) {
  return a && b && a.text === b.text && a.pair === b.pair && a.model === b.model && a.truncate === b.truncate;
}

async function run() {
  const req = controls.request();
  if (inflight) inflight.abort();
  const ctrl = new AbortController();
  inflight = ctrl;
  controls.clearError();
  controls.busy(`Running ${req.model || "model"}…`);
  setPageState("busy");
  const t0 = performance.now();
  try {
    const { data: resp, serverMs, bytes } = await getAttention(req, ctrl.signal);
    const tensor = tensorFromResponse(resp);
    data?.aggs.dispose();
    data = { id: (data?.id ?? 0) + 1, resp, tensor, aggs: new Aggregates(tensor), request: req, groupsKey: null };
    Object.assign(state, {
      text: req.text,
      pair: req.pair,
      model: resp.model,
      layer: Math.min(state.layer, tensor.layers - 1),
      head: Math.min(state.head, tensor.heads - 1),
    });
    controls.setShape(tensor.layers, tensor.heads);
    controls.apply({ ...state, text: null, pair: null });
    controls.setLoaded(true);
    syncExports();
    controls.setStale(false);
    gridDirty = true;
    writeState(state);
    await update();
    const total = performance.now() - t0;
    const parts = [
      `${tensor.size} tokens`,
      `${tensor.layers} layers × ${tensor.heads} heads`,
      serverMs != null ? `server ${Math.round(serverMs)} ms` : null,
      `shown after ${Math.round(total)} ms`,
      `${(bytes / 1024).toFixed(0)} KiB`,
      resp.truncated ? "input truncated to the model's limit" : null,
    ];
    controls.setStatus(`Shown: ${parts.filter(Boolean).join(" · ")}`);
    root.dataset.firstDrawMs = String(Math.round(total));
    root.dataset.runs = String(data.id);
    setPageState("ready");
  } catch (err) {
    if (err && err.name === "AbortError") return;
    showError(err);
  } finally {
    if (inflight === ctrl) {
      inflight = null;
      controls.idle();
    }
  }
}

async function loadModels() {
  let delay = 500;
  for (;;) {
    try {
      const list = await getModels();
      if (list.models.length) return list;
      controls.setStatus("Models are loading…");
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 503) throw err;
      controls.setStatus("Models are loading…");
    }
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 1.5, 4000);
  }
}

// -- events ----------------------------------------------------------------------------------------

function bindEvents() {
  controls.form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    run();
  });
  controls.form.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      run();
    }
  });
  const markStale = () => {
    controls.syncModelInfo();
    controls.setStale(Boolean(data) && !sameRequest(controls.request(), data.request));
  };
  for (const el of [controls.text, controls.pair, controls.model, controls.truncate, controls.pairBox]) {
    el.addEventListener(el === controls.pairBox ? "toggle" : "input", markStale);
  }
  controls.model.addEventListener("change", markStale);

  const onOption = (gridChanged) => () => {
    Object.assign(state, controls.options());
    controls.setLayerHead(state.layer, state.head);
    controls.syncAggregate();
    update({ grid: gridChanged });
  };
  controls.aggregate.addEventListener("change", onOption(false));
  controls.layer.addEventListener("input", onOption(false));
  controls.head.addEventListener("input", () => {
    if (controls.aggregate.value !== "head") controls.aggregate.value = "head";
    onOption(false)();
  });
  for (const el of [controls.hide, controls.merge, controls.scale, controls.range]) {
    el.addEventListener("change", onOption(true));
  }

  for (const [view, tab] of Object.entries(controls.tabs)) {
    tab.addEventListener("click", () => {
      tooltip.hide();
      state.view = view;
      controls.showView(view);
      syncExports();
      update({ grid: false });
    });
    tab.addEventListener("keydown", (ev) => {
      const names = Object.keys(controls.tabs);
      const i = names.indexOf(view);
      const to = { ArrowLeft: i - 1, ArrowRight: i + 1, Home: 0, End: names.length - 1 }[ev.key];
      if (to === undefined) return;
      ev.preventDefault();
      const next = controls.tabs[names[(to + names.length) % names.length]];
      next.focus();
      next.click();
    });
  }

  headView.el.addEventListener("keydown", (ev) => {
    if (!data || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const L = data.tensor.layers;
    const H = data.tensor.heads;
    const moves = {
      ArrowLeft: [0, -1],
      ArrowRight: [0, 1],
      ArrowUp: [-1, 0],
      ArrowDown: [1, 0],
    };
    const move = moves[ev.key];
    if (!move) return;
    ev.preventDefault();
    state.layer = Math.min(L - 1, Math.max(0, state.layer + move[0]));
    if (move[1]) {
      state.head = Math.min(H - 1, Math.max(0, state.head + move[1]));
      state.agg = "head";
    }
    controls.apply({ ...state, text: null, pair: null });
    controls.syncAggregate();
    update({ grid: false });
  });

  document.getElementById("export-png").addEventListener("click", () => exportPng());
  document.getElementById("export-csv").addEventListener("click", async () => {
    if (!data) return;
    if (state.view === "stats") {
      const csv = `${stats.csvRows().map((r) => r.map(exporter.csvField).join(",")).join("\r\n")}\r\n`;
      exporter.download(new Blob(["\ufeff", csv], { type: "text/csv;charset=utf-8" }), `${fileStem()}.csv`);
      return;
    }
    const view = await currentView();
    exporter.downloadCsv(view.matrix, view.n, view.groups.map((g) => g.label), `${fileStem()}.csv`);
  });
  document.getElementById("export-json").addEventListener("click", () => {
    if (data) exporter.downloadJson(data.resp, `${exporter.safeName(`headmap_${data.resp.model}`)}.json`);
  });
  document.getElementById("share").addEventListener("click", share);

  window.addEventListener("hashchange", () => {
    if (location.hash === formatState(state)) return;
    const next = parseState(location.hash);
    const rerun = next.text != null && (next.text !== state.text || next.pair !== state.pair || (next.model && next.model !== state.model));
    Object.assign(state, next, { text: next.text ?? state.text });
    controls.apply(next);
    if (rerun) run();
    else update();
  });
}

/** PNG and CSV apply to the head view, the model view (PNG) and the statistics; the others export JSON only. */
function syncExports() {
  const loaded = Boolean(data);
  const png = loaded && ["head", "model", "stats", "compare"].includes(state.view);
  const csv = loaded && ["head", "stats"].includes(state.view);
  document.getElementById("export-png").disabled = !png;
  document.getElementById("export-csv").disabled = !csv;
}

function fileStem() {
  const model = data.resp.model;
  const views = { model: "model_view", stats: `stats_${state.stat}`, compare: "compare" };
  const what = views[state.view] ?? (state.agg === "head" ? `L${state.layer}_H${state.head}` : `L${state.layer}_${state.agg}`);
  return exporter.safeName(`headmap_${model}_${what}`);
}

async function exportPng() {
  if (!data) return;
  if (state.view === "model") await exporter.downloadCanvas(grid.composite(), `${fileStem()}.png`);
  else if (state.view === "stats") await stats.plot.downloadPng(fileStem());
  else if (state.view === "compare") await compare.exportPlot()?.downloadPng(fileStem());
  else if (state.view === "head") await headView.downloadPng(fileStem());
}

async function share() {
  writeState(state);
  const button = document.getElementById("share");
  try {
    await navigator.clipboard.writeText(location.href);
    button.textContent = "Link copied";
  } catch {
    // Clipboard needs a secure context (https or localhost); the address bar has the link anyway.
    button.textContent = "Link in address bar";
  }
  setTimeout(() => (button.textContent = "Copy link"), 2000);
}

// -- start -----------------------------------------------------------------------------------------

async function start() {
  setPageState("loading");
  if (!window.Plotly) {
    showError(new Error("plotly.js did not load (/vendor/plotly.min.js)."));
    return;
  }
  bindEvents();
  controls.apply(state);
  controls.syncAggregate();
  try {
    const list = await loadModels();
    controls.setModels(list, state.model);
    compare.setModels(list.models);
    const missing = state.model && !list.models.some((m) => m.name === state.model) ? state.model : null;
    controls.setStatus("");
    await run();
    if (missing) {
      controls.showError("Unknown model in the link", `The link names model “${missing}”, which this server does not serve; showing ${controls.model.value} instead.`);
    }
  } catch (err) {
    showError(err);
  }
}

start();
