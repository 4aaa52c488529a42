// Headmap page: the controller. It owns the run (the response shown) and turns events into
// store.setState(patch) (store.js); the store's subscribers set the controls and redraw the active
// tab view (views.js). Switching layer, head, view, aggregate or options works on the response
// already in memory.

import { Aggregates } from "./aggregate.js";
import { AltTable } from "./alttext.js";
import { ApiError, createRun, deleteRun, getAttention, getModels, getOverview, getTile, getVector, setRoot } from "./api.js";
import { CompareView } from "./compare.js";
import { Controls } from "./controls.js";
import { CorpusView } from "./corpustab.js";
import { DEFAULT_STAT, setFormula, STATS } from "./definitions.js";
import { shownView } from "./derive.js";
import { $ } from "./dom.js";
import { ExplainView } from "./explain.js";
import { ModelGrid } from "./grid.js";
import { HeadTypesView } from "./headtypes.js";
import { HeadView, perHead } from "./heatmap.js";
import { Seq2SeqView } from "./seq2seq.js";
import { maybe, t } from "./i18n.js";
import { addImageExports } from "./imageexport.js";
import { LineView } from "./lineview.js";
import { LongRun } from "./longrun.js";
import { clampView, LONG_TOKENS, runsFirst } from "./longview.js";
import { ServerMeasures } from "./measures.js";
import { Perturbation } from "./perturb.js";
import { bindLabelTooltips, extraRequest, TokenStrip } from "./predictions.js";
import { StatsView } from "./stats.js";
import { Store } from "./store.js";
import { tensorFromResponse } from "./tensor.js";
import { TextView } from "./textview.js";
import { initTheme } from "./theme.js";
import { Toolbar } from "./toolbar.js";
import { Tooltip } from "./tooltip.js";
import { urlCodec } from "./urlstate.js";
import { Views } from "./views.js";


const root = $("app");
setRoot(root.dataset.root || "");
const codec = urlCodec({ stats: STATS.map((s) => s.id), defaultStat: DEFAULT_STAT });
const store = new Store(codec);
const controls = new Controls();
const tooltip = new Tooltip($("tooltip"));

/**
 * The response shown and what is derived from it: {id, resp, tensor, aggs, request, kind, models,
 * groups, groupsKey}; null before the first run. A long input (more than LONG_TOKENS tokens) is a run
 * on the server instead: resp is its RunInfo (the token fields), tensor only {layers, heads, size},
 * aggs null and long a LongRun (overviews and tiles, longrun.js).
 */
let run = null;
let inflight = null;
let renders = 0;

/** The rollout's busy indicator, which must not end the one of a run in flight. */
const progress = {
  start: (message) => controls.busy(message),
  stop: () => {
    if (!inflight) controls.idle();
  },
};

/** Open one head in the head view (from the model grid or the statistics). */
function openHead(layer, head) {
  tooltip.hide();
  store.setState({ view: "head", agg: perHead(store.state.agg), layer, head });
  headView.el.focus({ preventScroll: true });
}

const headView = new HeadView($("heatmap"), tooltip, { progress, store });
const views = new Views({
  head: headView,
  text: new TextView(tooltip, (pin, dir) => store.setState({ pin, dir }, { render: false })), // issue 16: the reading views
  lines: new LineView(tooltip),
  model: new ModelGrid($("grid"), tooltip, openHead),
  stats: new StatsView(tooltip, openHead, (stat) => store.setState({ stat })),
  heads: new HeadTypesView(tooltip, openHead),
  compare: new CompareView(tooltip, (cmp) => store.setState({ cmp, edit: null })),
  corpus: new CorpusView(root.dataset.root || ""),
  explain: new ExplainView(tooltip, (model) => {
    controls.setInputs({ model });
    runText();
  }),
  seq2seq: new Seq2SeqView(tooltip),
});
addImageExports(views.byName); // SVG (and 2x PNG) for the views drawn before issue 16
const toolbar = new Toolbar(store, views, () => run);
// Predictions (hover a token) and perturbation (click one): predictions.js, perturb.js.
const strip = new TokenStrip($("token-strip"), tooltip, (pos) => perturbation.pick(pos));
const perturbation = new Perturbation({ store, strip, getRun: () => run, modelInfo: (name) => controls.modelInfoFor(name) });
bindLabelTooltips(headView.labels, tooltip, () => run?.resp, () => headView.view?.groups);
// Dark mode: the figures and canvases are redrawn in the new colours.
initTheme($("theme-toggle"), () => requestRender());

/** The head view's text alternative (top weights per token), filled while it is open. */
const headAlt = new AltTable($("head-alt"));
async function syncHeadAlt() {
  const state = store.state;
  if (!run || state.view !== "head" || !headAlt.details.open) return;
  const view = await shownView(run, state);
  const key = `${run.id}:${view.revision}:${state.agg}:${state.layer}:${state.head}`;
  headAlt.set({ key, matrix: view.matrix, n: view.n, groups: view.groups, caption: t("alt.caption", { what: view.title }) });
}
headAlt.details.addEventListener("toggle", () => syncHeadAlt().catch(() => {}));

function setPageState(value) {
  root.dataset.state = value; // "loading" | "busy" | "ready" | "error": for tests and styling
}

// -- rendering -------------------------------------------------------------------------------------

store.subscribe((state, changed, options) => {
  controls.render(state);
  toolbar.sync();
  if (options.render !== false) requestRender();
});

async function render(signal) {
  if (!run) return;
  const state = store.state;
  const t0 = performance.now();
  await views.show(run, state, signal);
  if (signal.aborted) return; // a newer render follows
  await perturbation.show(run, state);
  await syncHeadAlt();
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

let loop = null; // the render loop running, if one is
let pending = false;
let drawing = null; // AbortController of the render in progress

/**
 * Redraw the active view for the latest state. Renders never overlap: a burst of changes (a slider
 * dragged) while one is drawing aborts it and gives one more render, of the latest state. Resolves
 * when the loop has drawn the latest state.
 */
function requestRender() {
  drawing?.abort();
  if (loop) {
    pending = true;
    return loop;
  }
  loop = (async () => {
    try {
      do {
        pending = false;
        await nextTask();
        drawing = new AbortController();
        try {
          await render(drawing.signal);
        } catch (err) {
          if (!err?.shown) showError(err); // the insight tabs show their own errors in place
        }
      } while (pending);
    } finally {
      loop = null;
      drawing = null;
    }
  })();
  return loop;
}

// -- running ---------------------------------------------------------------------------------------

function showError(err) {
  if (err instanceof ApiError) {
    const title = `${maybe(`error.title.${err.code}`) || t("error.request_failed")} (${err.status || t("error.no_answer")} · ${err.code})`;
    let detail = err.detail;
    if (err.code === "too_many_tokens" && !controls.truncate.checked) {
      detail += ` ${t("error.tick_truncate", { option: t("form.truncate") })}`;
    }
    controls.showError(title, detail);
  } else {
    controls.showError(t("error.page"), String(err && err.message ? err.message : err));
    console.error(err);
  }
  setPageState("error");
}

const runsApi = { createRun, getOverview, getTile, getVector, deleteRun };

/**
 * Ask for `req` as the page shows it: a run (POST /api/runs) when it has more than LONG_TOKENS tokens,
 * else the whole response (POST /api/attention, as for every short input). Texts over LONG_CHARS
 * characters ask for the run first, whose answer counts the tokens (a short one is dropped and asked
 * of /api/attention); shorter texts go to /api/attention, and one whose response would pass the
 * server's size budget (413 response_too_large) becomes a run.
 * @returns {Promise<{long: LongRun|null, attention: {data: object, serverMs: number|null, bytes: number}|null}>}
 */
async function fetchRun(req, signal) {
  if (runsFirst(req)) {
    const info = await createRun(req, signal);
    if (info.num_tokens > LONG_TOKENS) return { long: new LongRun(req, info, runsApi), attention: null };
    deleteRun(info.run_id).catch(() => {}); // short after all: it would expire anyway
  }
  try {
    return { long: null, attention: await getAttention(req, signal) };
  } catch (err) {
    if (!(err instanceof ApiError && err.code === "response_too_large")) throw err;
    return { long: new LongRun(req, await createRun(req, signal), runsApi), attention: null };
  }
}

function sameRequest(a, b) {
  return a && b && a.text === b.text && a.pair === b.pair && a.model === b.model && a.truncate === b.truncate && a.target === b.target && a.generate === b.generate;
}

/** Run the form's text on the form's model and show the response. */
async function runText() {
  const req = controls.request();
  if (inflight) inflight.abort();
  const ctrl = new AbortController();
  inflight = ctrl;
  controls.clearError();
  controls.busy(t("status.running", { model: req.model || t("form.model") }));
  setPageState("busy");
  const t0 = performance.now();
  try {
    const extra = extraRequest(controls.modelInfoFor(req.model), req.generate);
    let got;
    try {
      got = await fetchRun({ ...req, ...extra }, ctrl.signal);
    } catch (err) {
      // Predictions have a length bound of their own (tokens × vocabulary): past it, show the attention without them.
      if (!(err instanceof ApiError && err.code === "too_many_tokens_for_predictions")) throw err;
      delete extra.predictions;
      got = await fetchRun({ ...req, ...extra }, ctrl.signal);
    }
    const { long, attention } = got;
    if (ctrl.signal.aborted) {
      long?.dispose();
      return;
    }
    const resp = long ? long.info : attention.data;
    const { serverMs = null, bytes = 0 } = attention ?? {};
    const tensor = long
      ? { layers: resp.num_layers, heads: resp.num_heads, size: resp.num_tokens }
      : tensorFromResponse(resp);
    run?.aggs?.dispose();
    run?.long?.dispose();
    run = {
      id: (run?.id ?? 0) + 1,
      resp,
      tensor,
      aggs: long ? null : new Aggregates(tensor),
      long,
      measures: new ServerMeasures(req), // norms, flow, ALTI: fetched when first shown
      request: req,
      kind: controls.modelInfoFor(resp.model)?.kind ?? resp.kind,
      models: controls.models,
      groupsKey: null,
    };
    strip.show(resp);
    controls.setShape(tensor.layers, tensor.heads);
    controls.setInputs({ model: resp.model });
    const seq2seq = Array.isArray(resp.target_tokens);
    controls.setSeq2seq(seq2seq);
    controls.setLoaded(true);
    controls.setStale(false);
    const { layer, head } = store.state;
    // A long input keeps its zoom when it is the text the state names (a link, a reload), else starts whole.
    const sameText = store.state.text === req.text && store.state.pair === req.pair;
    const keepZoom = long && store.state.zoom && sameText;
    store.setState({
      text: req.text,
      pair: req.pair,
      model: resp.model,
      layer: Math.min(layer, tensor.layers - 1),
      head: Math.min(head, tensor.heads - 1),
      ...(!seq2seq && store.state.view === "seq2seq" ? { view: "head" } : {}), // its tab is gone
      zoom: keepZoom ? clampView(store.state.zoom, tensor.size) : null,
      pin: sameText ? store.state.pin : null, // the text view's pin names a token of this text
    });
    await requestRender();
    const total = performance.now() - t0;
    const parts = [
      t("status.tokens", { count: tensor.size }),
      t("status.shape", { layers: tensor.layers, heads: tensor.heads }),
      serverMs != null ? t("status.server_ms", { ms: Math.round(serverMs) }) : null,
      t("status.shown_after", { ms: Math.round(total) }),
      long ? t("long.status", { mib: (resp.bytes / 2 ** 20).toFixed(1) }) : t("status.kib", { kib: (bytes / 1024).toFixed(0) }),
      resp.truncated ? t("status.truncated") : null,
    ];
    controls.setStatus(t("status.shown", { parts: parts.filter(Boolean).join(" · ") }));
    controls.setUnknown(resp);
    root.dataset.firstDrawMs = String(Math.round(total));
    root.dataset.runs = String(run.id);
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
      controls.setStatus(t("status.loading_models"));
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 503) throw err;
      controls.setStatus(t("status.loading_models"));
    }
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 1.5, 4000);
  }
}

// -- events ----------------------------------------------------------------------------------------

function bindEvents() {
  controls.form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    runText();
  });
  controls.form.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      runText();
    }
  });
  const markStale = () => {
    controls.syncModelInfo();
    controls.setStale(Boolean(run) && !sameRequest(controls.request(), run.request));
  };
  for (const el of [controls.text, controls.pair, controls.target, controls.model, controls.truncate, controls.pairBox, controls.generate]) {
    el.addEventListener(el === controls.pairBox ? "toggle" : "input", markStale);
  }
  controls.model.addEventListener("change", markStale);

  // Each display control patches its own field of the state; render() writes them all back.
  const on = (el, type, patch) => el.addEventListener(type, () => store.setState(patch()));
  on(controls.aggregate, "change", () => ({ agg: controls.aggregate.value }));
  on(controls.layer, "input", () => ({ layer: Number(controls.layer.value) }));
  on(controls.head, "input", () => ({ head: Number(controls.head.value), agg: perHead(store.state.agg) }));
  on(controls.hide, "change", () => ({ hide: controls.hide.checked }));
  on(controls.merge, "change", () => ({ merge: controls.merge.checked }));
  on(controls.scale, "change", () => ({ scale: controls.scale.value }));
  on(controls.range, "change", () => ({ range: controls.range.value }));

  const allNames = Object.keys(controls.tabs);
  for (const [view, tab] of Object.entries(controls.tabs)) {
    tab.addEventListener("click", () => {
      tooltip.hide();
      store.setState({ view });
    });
    tab.addEventListener("keydown", (ev) => {
      const names = allNames.filter((name) => !controls.tabs[name].hidden); // the encoder–decoder tab may be hidden
      const i = names.indexOf(view);
      const to = { ArrowLeft: i - 1, ArrowRight: i + 1, Home: 0, End: names.length - 1 }[ev.key];
      if (to === undefined) return;
      ev.preventDefault();
      const next = controls.tabs[names[(to + names.length) % names.length]];
      next.focus();
      next.click();
    });
  }

  // Example texts: put one in the text box and run it.
  for (const button of document.querySelectorAll("button.example")) {
    button.addEventListener("click", () => {
      controls.setInputs({ text: button.dataset.text });
      runText();
    });
  }
  // The language links keep what is shown (the fragment) and the rest of the query.
  for (const link of document.querySelectorAll(".lang-switch a[data-lang]")) {
    link.addEventListener("click", () => {
      const url = new URL(location.href);
      url.searchParams.set("lang", link.dataset.lang);
      url.hash = store.hash();
      link.href = url.href;
    });
  }

  window.addEventListener("hashchange", () => {
    if (location.hash === store.hash()) return;
    const state = store.state;
    const next = codec.parse(location.hash);
    const rerun = next.text != null && (next.text !== state.text || next.pair !== state.pair || (next.model && next.model !== state.model));
    controls.setInputs(next);
    // A new text is drawn when its run returns; anything else is drawn now.
    store.setState({ ...next, text: next.text ?? state.text }, { render: !rerun });
    if (rerun) runText();
  });
}

// -- start -----------------------------------------------------------------------------------------

async function start() {
  setPageState("loading");
  for (const el of document.querySelectorAll("[data-formula]")) setFormula(el, el.textContent); // help's measures
  if (!window.Plotly) {
    showError(new Error(t("error.plotly_missing")));
    return;
  }
  bindEvents();
  const state = store.state;
  controls.setInputs(state);
  controls.render(state);
  try {
    const list = await loadModels();
    controls.setModels(list, state.model);
    views.get("compare").setModels(list.models);
    const missing = state.model && !list.models.some((m) => m.name === state.model) ? state.model : null;
    controls.setStatus("");
    await runText();
    if (missing) {
      controls.showError(t("error.link_model"), t("error.link_model_detail", { missing, model: controls.model.value }));
    }
  } catch (err) {
    showError(err);
  }
}

start();
