// The compare tab: two inputs (two texts, or one text through two models sharing a tokenizer) side
// by side, and A − B on a diverging scale when their tokens line up. Only the chosen layer and head
// (or aggregate) is asked of /api/compare, so responses stay small.

import { getCompare } from "./api.js";
import { RequestCache } from "./cache.js";
import { divergingScale, plotlyScale } from "./colors.js";
import { $ } from "./dom.js";
import { t } from "./i18n.js";
import { absMax, MatrixPlot, tokenGroups } from "./matrixplot.js";

const signed = (v) => `${v >= 0 ? "+" : "−"}${Math.abs(v).toFixed(3)}`;

/** What token i of one side reads as (its label, else its own string). */
const rowsLabel = (side, i) => side.labels?.[i] ?? side.tokens[i];

export class CompareView {
  /**
   * @param {import("./tooltip.js").Tooltip} tooltip
   * @param {(inputs: {a: string, am: string, b: string, bm: string}) => void} onSubmit the user asked
   *   for a comparison, or a link's was taken with changes (main.js puts it in the state)
   */
  constructor(tooltip, onSubmit) {
    this.onSubmit = onSubmit;
    this.panel = $("compare-view");
    this.form = $("compare-form");
    this.textA = $("cmp-a-text");
    this.modelA = $("cmp-a-model");
    this.textB = $("cmp-b-text");
    this.modelB = $("cmp-b-model");
    this.message = $("compare-message");
    this.notes = $("cmp-notes");
    this.results = $("compare-results");
    this.plots = {
      a: new MatrixPlot($("cmp-plot-a"), tooltip),
      b: new MatrixPlot($("cmp-plot-b"), tooltip),
      diff: new MatrixPlot($("cmp-plot-diff"), tooltip),
    };
    this.models = [];
    this.inputs = null; // {a: {text, model}, b: {text, model}, truncate} once the user has compared
    this.cache = new RequestCache(32); // request body -> Promise<response>
    this.shown = null; // {resp, l, h} of the drawn comparison
    this.form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.submit();
      onSubmit(this.linkInputs());
    });
    this.form.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
        ev.preventDefault();
        this.form.requestSubmit();
      }
    });
    $("cmp-copy").addEventListener("click", () => {
      this.textB.value = this.textA.value;
      this.textB.focus();
    });
  }

  setModels(models) {
    this.models = models;
    for (const select of [this.modelA, this.modelB]) {
      const keep = select.value;
      select.replaceChildren(...models.map((m) => new Option(`${m.name} (${m.num_layers}×${m.num_heads})`, m.name)));
      if (models.some((m) => m.name === keep)) select.value = keep;
    }
  }

  /** Fill A with the text last run (once), so a comparison starts from what is on screen. */
  prefill(request) {
    if (this.textA.value || this.inputs) return;
    this.textA.value = request.text;
    if (this.models.some((m) => m.name === request.model)) this.modelA.value = this.modelB.value = request.model;
    this.truncate = request.truncate;
  }

  /**
   * Take the inputs of a shared link ({a, am, b, bm}, from the URL) as if the user had compared them,
   * and return them as taken: a model this server does not serve keeps the current choice.
   */
  restore(cmp) {
    const cur = this.inputs && this.linkInputs();
    if (!cur || ["a", "am", "b", "bm"].some((key) => cur[key] !== cmp[key])) {
      this.textA.value = cmp.a;
      this.textB.value = cmp.b;
      if (this.info(cmp.am)) this.modelA.value = cmp.am;
      if (this.info(cmp.bm)) this.modelB.value = cmp.bm;
      this.submit();
    }
    return this.linkInputs();
  }

  /** The compared inputs as the URL holds them: {a, am, b, bm}. */
  linkInputs() {
    const { a, b } = this.inputs;
    return { a: a.text, am: a.model, b: b.text, bm: b.model };
  }

  submit() {
    this.inputs = {
      a: { text: this.textA.value, model: this.modelA.value },
      b: { text: this.textB.value, model: this.modelB.value },
      truncate: Boolean(this.truncate),
    };
  }

  setStatus(status, message = "", kind = "info") {
    this.panel.dataset.status = status; // "idle" | "loading" | "ready" | "misaligned" | "error"
    this.message.textContent = message;
    this.message.hidden = !message;
    this.message.className = `notice ${kind}`;
  }

  info(name) {
    return this.models.find((m) => m.name === name);
  }

  /**
   * The view interface (views.js): A starts as the run's text; a link's inputs (`state.cmp`) are taken
   * as if compared; then the comparison for the state's layer/head or aggregate is drawn.
   */
  async show(run, state) {
    if (state.cmp) {
      const taken = this.restore(state.cmp);
      if (["a", "am", "b", "bm"].some((key) => taken[key] !== state.cmp[key])) this.onSubmit(taken);
    }
    this.prefill(run.request);
    await this.compare(state);
  }

  hide() {}

  exportPng(stem) {
    return this.exportPlot()?.downloadPng(stem);
  }

  /**
   * Draw the comparison for the chosen layer/head or aggregate.
   * @param {{agg: string, layer: number, head: number, scale: string, range: string}} opts
   */
  async compare({ agg, layer, head, scale, range }) {
    if (!this.inputs) {
      this.results.hidden = true;
      this.setStatus("idle", t("compare.need_b"));
      return;
    }
    if (!["head", "mean", "max", "rollout"].includes(agg)) {
      // norms, flow and ALTI are not in /api/compare: say so instead of asking for a 422.
      this.results.hidden = true;
      this.setStatus("error", "Compare shows one head, mean, max or rollout: pick one of them in Show.", "warn");
      return;
    }
    const { a, b, truncate } = this.inputs;
    const ia = this.info(a.model);
    const ib = this.info(b.model);
    // Layers and heads both models have: minilm has 6 layers, the custom block 1.
    const l = Math.min(layer, Math.min(ia?.num_layers ?? 1, ib?.num_layers ?? 1) - 1);
    const h = Math.min(head, Math.min(ia?.num_heads ?? 1, ib?.num_heads ?? 1) - 1);
    const view = agg === "head" ? "heads" : agg;
    const body = { a, b, layers: [l], view, truncate };
    if (view === "heads") body.heads = [h];
    const pending = this.cache.get(JSON.stringify(body), () => getCompare(body));
    this.setStatus("loading", t("compare.loading"));
    let resp;
    try {
      resp = await pending;
    } catch (err) {
      this.results.hidden = true;
      this.setStatus("error", t("compare.failed", { detail: err.detail || err.message || err }), "error");
      throw Object.assign(err, { shown: true });
    }
    const what = view === "heads" ? t("compare.what_head", { layer: l, head: h }) : view === "rollout" ? t("compare.what_rollout", { layer: l }) : t(`compare.what_${view}`, { layer: l });
    const clamped = l !== layer || (view === "heads" && h !== head);
    this.results.hidden = false;
    await this.draw(resp, { what, scale, range });
    this.shown = { resp, l, h, view };
    this.panel.dataset.layer = String(l);
    this.panel.dataset.head = String(h);
    if (!resp.aligned) {
      this.setStatus("misaligned", t("compare.misaligned", { reason: resp.reason }), "warn");
    } else {
      const note = clamped ? ` ${t("compare.clamped", { what, last: Math.min(ia.num_layers, ib.num_layers) - 1 })}` : "";
      this.setStatus("ready", note.trim(), "info");
    }
  }

  async draw(resp, { what, scale, range }) {
    const A = resp.a.attention[0][0]; // T_a x T_a
    const B = resp.b.attention[0][0]; // T_b x T_b
    const D = resp.aligned ? resp.diff[0][0] : null; // T x T, A − B
    const rowsA = tokenGroups(resp.a.tokens, resp.a.special, resp.a.labels);
    const rowsB = tokenGroups(resp.b.tokens, resp.b.special, resp.b.labels);
    const zmax = range === "one" ? 1 : Math.max(absMax(A), absMax(B));
    const half = Math.floor((this.panel.clientWidth - 24) / 2);
    const width = Math.max(300, Math.min(560, half));
    const side = (name, side_, rows, z) => ({
      z,
      rows,
      cols: rows,
      zmin: 0,
      zmax,
      colorscale: plotlyScale(scale),
      title: `${name} · ${side_.model} · ${what}`,
      colorbar: t("heatmap.colorbar"),
      width,
      square: true,
      hover: (q, k, v) => {
        const lines = [`${rows[q].label} → ${rows[k].label}: ${v.toFixed(3)}`, `${name} · ${t("heatmap.hover_pos", { query: q, key: k })}`];
        if (D) lines[1] += ` · A − B ${signed(D[q][k])}`;
        return lines;
      },
    });
    await this.plots.a.draw(side("A", resp.a, rowsA, A));
    await this.plots.b.draw(side("B", resp.b, rowsB, B));
    if (!D) {
      this.plots.diff.clear();
      this.plots.diff.el.hidden = true;
      this.notes.replaceChildren();
      return;
    }
    // Positions where the two texts have different tokens are labelled "a / b".
    const mismatched = new Set(resp.mismatched_positions);
    const rows = rowsA.map((g, i) => (mismatched.has(i) ? { ...g, label: `${g.label} / ${rowsB[i].label}` } : g));
    const dmax = absMax(D);
    this.plots.diff.el.hidden = false;
    await this.plots.diff.draw({
      z: D,
      rows,
      cols: rows,
      zmin: -dmax,
      zmax: dmax,
      colorscale: divergingScale(),
      title: `A − B · ${what}`,
      colorbar: "A − B",
      width,
      square: true,
      hover: (q, k, v) => [
        `${rows[q].label} → ${rows[k].label}: A − B ${signed(v)}`,
        t("compare.hover_values", { a: A[q][k].toFixed(3), b: B[q][k].toFixed(3), query: q, key: k }),
      ],
    });
    this.renderNotes(resp, rows, D);
  }

  /** The largest differences, and the positions whose tokens differ, as plain text. */
  renderNotes(resp, rows, D) {
    const cells = [];
    D.forEach((row, q) => row.forEach((v, k) => cells.push([Math.abs(v), q, k, v])));
    cells.sort((x, y) => y[0] - x[0]);
    const h = document.createElement("h3");
    h.textContent = t("compare.largest");
    const list = document.createElement("ol");
    for (const [, q, k, v] of cells.slice(0, 6)) {
      const li = document.createElement("li");
      const value = document.createElement("span");
      value.className = v >= 0 ? "pos" : "neg";
      value.textContent = signed(v);
      const what = document.createElement("span");
      what.textContent = `${rows[q].label} → ${rows[k].label}`;
      li.append(value, what);
      list.append(li);
    }
    const legend = document.createElement("p");
    legend.className = "hint";
    legend.textContent = t("compare.legend");
    const nodes = [h, list, legend];
    if (resp.mismatched_positions.length) {
      const p = document.createElement("p");
      p.className = "hint";
      const parts = resp.mismatched_positions.map((i) => `${i}: ${rowsLabel(resp.a, i)} / ${rowsLabel(resp.b, i)}`);
      p.textContent = t("compare.differing", { parts: parts.join(", ") });
      nodes.push(p);
    }
    this.notes.replaceChildren(...nodes);
  }

  /** The plot to export: the difference when there is one, else A. */
  exportPlot() {
    if (!this.shown) return null;
    return this.shown.resp.aligned ? this.plots.diff : this.plots.a;
  }
}
