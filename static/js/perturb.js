// Perturbation: mask a token (the model's mask token), replace it (a typed word) or delete it, then run
// the edited text as B in the compare tab (A − B) and show how each head statistic of the chosen head
// changed, and, for masked-LM models, the top predictions at the masked position. The edit lives in
// the state (urlstate.js: edit=op:pos[:word]), so a shared link shows the same perturbation.

import { getAttention, getStats } from "./api.js";
import { RequestCache } from "./cache.js";
import { STATS } from "./definitions.js";
import { $ } from "./dom.js";
import { t } from "./i18n.js";
import { editable, TOP_K } from "./predictions.js";

export const OPS = ["mask", "replace", "delete"];

/**
 * The text with token `pos` of `resp` (offsets into `text`) masked, replaced by `word` or deleted;
 * null when the token has no span of its own in `text`. Leading whitespace a byte-level token carries
 * (GPT-2 offsets may include it) stays in the text.
 */
export function editText(resp, text, { op, pos, word = "" }, maskToken) {
  if (!editable(resp, pos)) return null;
  let [start, end] = resp.offsets[pos];
  while (start < end && /\s/u.test(text[start])) start++;
  if (start >= end) return null;
  if (op === "mask") return maskToken ? text.slice(0, start) + maskToken + text.slice(end) : null;
  if (op === "replace") return word.trim() ? text.slice(0, start) + word.trim() + text.slice(end) : null;
  // delete: one of two spaces that would meet is dropped with it
  if (/\s/u.test(text[start - 1] ?? "") && /\s/u.test(text[end] ?? "")) end++;
  return (text.slice(0, start) + text.slice(end)).trim() || null;
}

const signed = (v) => `${v >= 0 ? "+" : "−"}${Math.abs(v).toFixed(3)}`;

export class Perturbation {
  /**
   * @param {{store: import("./store.js").Store, strip: import("./predictions.js").TokenStrip,
   *          getRun: () => object|null, modelInfo: (name: string) => object|null}} hooks
   */
  constructor({ store, strip, getRun, modelInfo }) {
    this.store = store;
    this.strip = strip;
    this.getRun = getRun;
    this.modelInfo = modelInfo;
    this.bar = $("perturb-form");
    this.what = $("perturb-token");
    this.word = $("perturb-word");
    this.maskButton = $("perturb-mask");
    this.panel = $("perturb-result");
    this.pos = null;
    this.cache = new RequestCache(16);
    $("perturb-mask").addEventListener("click", () => this.apply("mask"));
    $("perturb-delete").addEventListener("click", () => this.apply("delete"));
    $("perturb-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.apply("replace");
    });
  }

  /** A token was picked in the strip: offer the three edits. */
  pick(pos) {
    const run = this.getRun();
    if (!run || !editable(run.resp, pos)) return;
    this.pos = pos;
    this.strip.select(pos);
    const info = this.modelInfo(run.resp.model);
    this.what.textContent = t("perturb.selected", { pos, token: run.resp.labels?.[pos] ?? run.resp.tokens[pos] });
    this.maskButton.disabled = !info?.mask_token;
    this.maskButton.title = info?.mask_token ? info.mask_token : t("perturb.no_mask", { model: run.resp.model });
    this.bar.hidden = false;
    this.word.focus();
  }

  /** Make B from the run's text and show the comparison. */
  apply(op) {
    const run = this.getRun();
    if (!run || this.pos == null) return;
    const edit = { op, pos: this.pos, word: op === "replace" ? this.word.value.trim() : "" };
    const b = editText(run.resp, run.request.text, edit, this.modelInfo(run.resp.model)?.mask_token);
    if (b == null) {
      this.word.focus();
      return;
    }
    const model = run.resp.model;
    this.store.setState({ view: "compare", cmp: { a: run.request.text, am: model, b, bm: model }, edit });
  }

  /** Called after every render: the perturbation's notes under the compare view, when there is an edit. */
  async show(run, state) {
    if (state.view !== "compare" || !state.edit || !state.cmp) {
      this.panel.hidden = true;
      return;
    }
    const { edit, cmp } = state;
    const token = run.request.text === cmp.a ? (run.resp.labels?.[edit.pos] ?? run.resp.tokens[edit.pos] ?? "") : "";
    const what = t(`perturb.what_${edit.op}`, { pos: edit.pos, token, word: edit.word });
    const title = document.createElement("p");
    title.className = "perturb-title";
    title.textContent = t("perturb.title", { what });
    const status = document.createElement("p");
    status.className = "hint";
    status.textContent = t("perturb.loading");
    this.panel.replaceChildren(title, status);
    this.panel.hidden = false;
    this.panel.dataset.status = "loading";
    const input = (text, model) => ({ text, model, truncate: run.request.truncate });
    const info = this.modelInfo(cmp.bm);
    const wantPredictions = edit.op === "mask" && info?.can_predict && info.kind === "encoder";
    try {
      const [sa, sb, pb] = await Promise.all([
        this.cached(["stats", cmp.a, cmp.am], () => getStats(input(cmp.a, cmp.am))),
        this.cached(["stats", cmp.b, cmp.bm], () => getStats(input(cmp.b, cmp.bm))),
        wantPredictions
          ? this.cached(["pred", cmp.b, cmp.bm], () => getAttention({ ...input(cmp.b, cmp.bm), layers: [0], heads: [0], predictions: { top_k: TOP_K } }).then((r) => r.data))
          : null,
      ]);
      if (this.store.state !== state) return; // a newer state is being drawn
      const nodes = [title, this.statsTable(sa, sb, state)];
      if (pb) nodes.push(...this.predictionList(pb, cmp.bm));
      this.panel.replaceChildren(...nodes);
      this.panel.dataset.status = "ready";
    } catch (err) {
      status.textContent = t("perturb.failed", { detail: err.detail || err.message || err });
      this.panel.dataset.status = "error";
    }
  }

  cached(key, fn) {
    return this.cache.get(JSON.stringify(key), fn);
  }

  /** Statistic | A | B | A − B for the state's layer and head (clamped to what both have). */
  statsTable(sa, sb, state) {
    const l = Math.min(state.layer, sa.layers.length - 1, sb.layers.length - 1);
    const h = Math.min(state.head, sa.heads.length - 1, sb.heads.length - 1);
    const table = document.createElement("table");
    table.className = "stats-table perturb-stats";
    const caption = table.createCaption();
    caption.textContent = t("perturb.stats", { layer: l, head: h });
    const head = table.createTHead().insertRow();
    for (const text of [t("perturb.col_stat"), "A", "B", t("perturb.col_diff")]) {
      const th = document.createElement("th");
      th.textContent = text;
      head.append(th);
    }
    const body = table.createTBody();
    for (const s of STATS) {
      const a = sa.stats[s.id]?.[l]?.[h];
      const b = sb.stats[s.id]?.[l]?.[h];
      const row = body.insertRow();
      row.dataset.stat = s.id;
      const cells = [t(`stat.${s.id}.name`), a == null ? "—" : a.toFixed(3), b == null ? "—" : b.toFixed(3)];
      for (const text of cells) row.insertCell().textContent = text;
      const d = row.insertCell();
      if (a != null && b != null) {
        d.textContent = signed(a - b);
        d.className = a - b >= 0 ? "pos" : "neg";
      } else d.textContent = "—";
    }
    return table;
  }

  /** The masked-LM's top candidates at each mask of B. */
  predictionList(resp, model) {
    const out = [];
    for (const p of resp.predictions ?? []) {
      const h = document.createElement("p");
      h.className = "hint";
      h.textContent = t("perturb.predictions", { model, pos: p.position });
      const list = document.createElement("ol");
      list.className = "perturb-predictions";
      for (const c of p.candidates) {
        const li = document.createElement("li");
        li.textContent = t("predict.item", { label: c.label, percent: `${(c.probability * 100).toFixed(1)}%` });
        list.append(li);
      }
      out.push(h, list);
    }
    return out;
  }
}
