// The page's form controls: the run form (text, pair, model: the *next* run's inputs), the display
// options and selectors (written from the state by render(), never read back as state), busy, error
// and status display. No application logic here; main.js turns control events into store.setState.

import { SCALES } from "./colors.js";
import { MEASURES, setFormula } from "./definitions.js";
import { $ } from "./dom.js";
import { t } from "./i18n.js";
import { modelLabel } from "./predictions.js";

/** Share of unknown tokens above which the page says the model does not know the text's script. */
export const UNKNOWN_NOTICE_SHARE = 0.1;

export class Controls {
  constructor() {
    this.form = $("run-form");
    this.text = $("text");
    this.pair = $("pair");
    this.pairBox = $("pair-box");
    this.target = $("target");
    this.targetBox = $("target-box");
    this.model = $("model");
    this.modelInfo = $("model-info");
    this.truncate = $("truncate");
    this.generate = $("generate");
    this.generateRow = $("generate-row");
    this.runButton = $("run");
    this.stale = $("stale");
    this.progress = $("progress");
    this.progressText = $("progress-text");
    this.error = $("error");
    this.errorTitle = $("error-title");
    this.errorDetail = $("error-detail");
    this.status = $("status");
    this.unknownNotice = $("unknown-notice");
    this.unknownText = $("unknown-text");
    this.hide = $("hide-special");
    this.merge = $("merge-words");
    this.scale = $("colorscale");
    this.range = $("range");
    this.aggregate = $("aggregate");
    this.layer = $("layer");
    this.layerOut = $("layer-out");
    this.head = $("head");
    this.headOut = $("head-out");
    this.headSlider = $("head-slider");
    this.selectors = $("selectors");
    this.aggField = $("agg-field");
    this.aggHelp = $("agg-help");
    this.layerSlider = $("layer-slider");
    this.tabs = { head: $("tab-head"), text: $("tab-text"), lines: $("tab-lines"), model: $("tab-model"), stats: $("tab-stats"), heads: $("tab-heads"), compare: $("tab-compare"), explain: $("tab-explain"), seq2seq: $("tab-seq2seq"), corpus: $("tab-corpus") };
    this.panels = { head: $("head-view"), text: $("text-view"), lines: $("lines-view"), model: $("model-view"), stats: $("stats-view"), heads: $("heads-view"), compare: $("compare-view"), explain: $("explain-view"), seq2seq: $("seq2seq-view"), corpus: $("corpus-view") };
    this.view = "head";
    this.empty = $("empty");
    this.exports = [$("export-png"), $("export-svg"), $("export-csv"), $("export-json"), $("share")];
    this.models = [];
    this.timer = 0;
    for (const s of SCALES) this.scale.append(new Option(t(`colors.${s.id}`), s.id));
  }

  /** What the next run sends. */
  request() {
    const pairOpen = this.pairBox.open && !this.pairBox.hidden;
    return {
      text: this.text.value,
      pair: pairOpen && this.pair.value.trim() ? this.pair.value : "",
      model: this.model.value,
      truncate: this.truncate.checked,
      // Encoder–decoder models only (the box is shown for them): the teacher-forced target text.
      target: !this.targetBox.hidden && this.target.value.trim() ? this.target.value : "",
      generate: this.generateRow.hidden ? 0 : Math.max(0, Math.floor(Number(this.generate.value) || 0)),
    };
  }

  /** Put a link's inputs in the run form (fields that are null are left alone). */
  setInputs({ text = null, pair = null, model = null, target = null }) {
    if (text != null) this.text.value = text;
    if (target != null) this.target.value = target;
    if (pair != null) {
      this.pair.value = pair;
      if (pair) this.pairBox.open = true;
    }
    if (model && this.models.some((m) => m.name === model)) this.model.value = model;
    this.syncModelInfo();
  }

  /** Set the display options, selectors and tabs from the state (store.js). */
  render(state) {
    this.aggregate.value = state.agg;
    // The measure's name and formula in the page's language; its citation as written (<cite>, not translated).
    const id = state.agg === "head" ? "weights" : state.agg;
    const def = MEASURES[id];
    setFormula(this.aggHelp, def ? `${t(`measure.${id}.title`)}: ${t(`measure.${id}.help`)}` : "");
    if (def) {
      const cite = document.createElement("cite");
      cite.className = "citation";
      cite.lang = "en";
      cite.textContent = ` (${def.reference})`;
      this.aggHelp.append(cite);
    }
    this.hide.checked = state.hide;
    this.merge.checked = state.merge;
    this.scale.value = state.scale;
    this.range.value = state.range;
    this.setLayerHead(state.layer, state.head);
    this.showView(state.view);
  }

  setModels(list, preferred) {
    this.models = list.models;
    this.model.replaceChildren(...list.models.map((m) => new Option(modelLabel(m), m.name)));
    const pick = list.models.find((m) => m.name === preferred) || list.models.find((m) => m.name === list.default) || list.models[0];
    if (pick) this.model.value = pick.name;
    this.model.disabled = list.models.length === 0;
    this.syncModelInfo();
  }

  modelInfoFor(name) {
    return this.models.find((m) => m.name === name) || null;
  }

  syncModelInfo() {
    const info = this.modelInfoFor(this.model.value);
    this.modelInfo.textContent = info ? t("form.model_info", { description: info.description, max_tokens: info.max_tokens }) : "";
    this.pairBox.hidden = Boolean(info && !info.supports_pair);
    this.targetBox.hidden = info?.kind !== "encoder-decoder";
    this.generateRow.hidden = !(info?.can_predict && info.kind === "decoder"); // generation: decoders with an LM head
  }

  /** The encoder–decoder tab is offered while the response shown is an encoder–decoder's. */
  setSeq2seq(shown) {
    this.tabs.seq2seq.hidden = !shown;
  }

  /** Slider ranges for a response with `layers` x `heads`. */
  setShape(layers, heads) {
    this.layer.max = String(Math.max(0, layers - 1));
    this.head.max = String(Math.max(0, heads - 1));
    this.layer.disabled = layers <= 1;
    this.head.disabled = heads <= 1;
  }

  setLayerHead(layer, head) {
    this.layer.value = String(layer);
    this.head.value = String(head);
    this.layerOut.value = this.layer.value;
    this.headOut.value = this.head.value;
  }

  syncAggregate() {
    // The explainer follows one head whatever the head view's aggregate is.
    const single = ["head", "norms"].includes(this.aggregate.value) || ["explain", "seq2seq"].includes(this.view);
    this.headSlider.classList.toggle("inactive", !single);
  }

  showView(view) {
    this.view = view;
    for (const [name, tab] of Object.entries(this.tabs)) {
      const active = name === view;
      tab.setAttribute("aria-selected", String(active));
      tab.tabIndex = active ? 0 : -1;
      this.panels[name].hidden = !active;
    }
    // Which selectors a view uses: all of them (head, text, compare), the head only (explain), the layer and
    // head (seq2seq), the layer only (lines: it picks its own heads), none.
    const uses = { head: "all", text: "all", compare: "all", explain: "head", seq2seq: "layer_head", lines: "layer" }[view];
    this.selectors.classList.toggle("inactive", !uses);
    if (view !== "explain") this.selectors.classList.remove("gated"); // set by the explainer without a custom model
    this.aggField.hidden = uses === "head" || uses === "layer_head" || uses === "layer";
    this.layerSlider.hidden = uses === "head";
    this.headSlider.hidden = uses === "layer";
    this.syncAggregate();
  }

  setLoaded(loaded) {
    this.empty.hidden = loaded;
    for (const b of this.exports) b.disabled = !loaded;
  }

  setStale(stale) {
    this.stale.hidden = !stale;
  }

  busy(message) {
    clearInterval(this.timer);
    const t0 = performance.now();
    const tick = () => (this.progressText.textContent = t("progress.seconds", { message, seconds: ((performance.now() - t0) / 1000).toFixed(1) }));
    tick();
    this.timer = setInterval(tick, 100);
    this.progress.hidden = false;
    this.form.setAttribute("aria-busy", "true");
    this.runButton.classList.add("running");
  }

  idle() {
    clearInterval(this.timer);
    this.progress.hidden = true;
    this.form.removeAttribute("aria-busy");
    this.runButton.classList.remove("running");
  }

  /** Show an error readably: a title from the API's code, its detail as given (text, never HTML). */
  showError(title, detail) {
    this.errorTitle.textContent = title;
    this.errorDetail.textContent = detail;
    this.error.hidden = false;
  }

  clearError() {
    this.error.hidden = true;
  }

  setStatus(text) {
    this.status.textContent = text;
  }

  /** Say so when more than 10% of the response's tokens are unknown to its model (and how to add one). */
  setUnknown(resp) {
    const share = resp.unknown_share ?? 0;
    const show = share > UNKNOWN_NOTICE_SHARE;
    this.unknownNotice.hidden = !show;
    this.unknownText.textContent = show
      ? t("unknown.notice", {
          percent: `${Math.round(share * 100)}%`,
          count: resp.unknown_count,
          total: resp.special.filter((s) => !s).length, // the share is of the non-special tokens
          model: resp.model,
        })
      : "";
  }
}
