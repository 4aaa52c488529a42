// The export toolbar: PNG and CSV of the active view (when it offers them, see views.js), JSON of the
// whole response, and "Copy link". File names are built from the model and numbers only (exporter.js).

import { $ } from "./dom.js";
import * as exporter from "./exporter.js";
import { t } from "./i18n.js";

/** File name without extension for what `state` shows of `run`. */
export function fileStem(run, state) {
  const views = { text: `text_L${state.layer}_${state.agg === "head" ? `H${state.head}` : state.agg}`, lines: `lines_L${state.layer}`,
                  model: "model_view", stats: `stats_${state.stat}`, heads: "head_types", compare: "compare",
                  seq2seq: `seq2seq_L${state.layer}_H${state.head}`, explain: `explain_H${state.head}` }; // prettier-ignore
  const perHead = { head: `L${state.layer}_H${state.head}`, norms: `L${state.layer}_H${state.head}_norms` };
  const what = views[state.view] ?? perHead[state.agg] ?? `L${state.layer}_${state.agg}`;
  return exporter.safeName(`headmap_${run.resp.model}_${what}`);
}

export class Toolbar {
  /**
   * @param {import("./store.js").Store} store
   * @param {import("./views.js").Views} views
   * @param {() => object|null} currentRun the run shown, null before the first
   */
  constructor(store, views, currentRun) {
    this.store = store;
    this.views = views;
    this.currentRun = currentRun;
    this.png = $("export-png");
    this.csv = $("export-csv");
    this.shareButton = $("share");
    this.svg = $("export-svg");
    this.png.addEventListener("click", () => this.export("exportPng"));
    this.svg.addEventListener("click", () => this.export("exportSvg"));
    this.csv.addEventListener("click", () => this.export("exportCsv"));
    $("export-json").addEventListener("click", () => {
      const run = currentRun();
      if (run) exporter.downloadJson(run.resp, `${exporter.safeName(`headmap_${run.resp.model}`)}.json`);
    });
    this.shareButton.addEventListener("click", () => this.share());
  }

  /** Enable PNG and CSV where the active view offers them. */
  sync() {
    const loaded = Boolean(this.currentRun());
    const view = this.views.get(this.store.state.view);
    this.png.disabled = !(loaded && view.exportPng);
    this.svg.disabled = !(loaded && view.exportSvg);
    this.csv.disabled = !(loaded && view.exportCsv);
  }

  async export(method) {
    const run = this.currentRun();
    const state = this.store.state;
    const view = this.views.get(state.view);
    if (run && view[method]) await view[method](fileStem(run, state));
  }

  async share() {
    this.store.url.write(this.store.hash());
    const button = this.shareButton;
    try {
      await navigator.clipboard.writeText(location.href);
      button.textContent = t("export.copied");
    } catch {
      // Clipboard needs a secure context (https or localhost); the address bar has the link anyway.
      button.textContent = t("export.in_address_bar");
    }
    setTimeout(() => (button.textContent = t("export.share")), 2000);
  }
}
