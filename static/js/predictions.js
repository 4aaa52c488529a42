// What a model with an LM head adds to the page: the model picker's facts (family, size, heads, dtype),
// the causal triangle of decoder matrices, generated tokens styled apart, and the prediction tooltip
// (the response's `predictions`, asked for with `predictions: {top_k}` when the model can predict).
// The token strip lists the run's tokens: hover one for its predictions, click one to perturb it (perturb.js).

import { t } from "./i18n.js";

/** Top candidates the page asks for. */
export const TOP_K = 5;

/** 22713216 -> "22.7M", 494032768 -> "494M", 1.5e9 -> "1.5B". */
export function formatCount(n) {
  const units = [[1e9, "B"], [1e6, "M"], [1e3, "k"]];
  for (const [size, unit] of units) {
    if (n >= size) {
      const v = n / size;
      return `${v >= 100 ? v.toFixed(0) : v.toFixed(1).replace(/\.0$/, "")}${unit}`;
    }
  }
  return String(n);
}

/** "12 heads", or "14 query / 2 key-value heads" under grouped-query attention. */
export function headsText(m) {
  const kv = m.num_kv_heads ?? m.num_heads;
  return kv !== m.num_heads ? t("model.heads_gqa", { query: m.num_heads, kv }) : t("model.heads", { count: m.num_heads });
}

/** The model picker's option text: name, family and kind, parameters, heads, dtype. */
export function modelLabel(m) {
  if (m.num_parameters == null) return `${m.name} (${m.kind}, ${m.num_layers}×${m.num_heads})`;
  return t("model.option", {
    name: m.name,
    family: m.family ?? "",
    kind: m.kind,
    params: formatCount(m.num_parameters),
    heads: `${m.num_layers} × ${headsText(m)}`,
    dtype: m.dtype ?? "",
  });
}

/** What a run asks for beyond attention: predictions when the model can, generation on decoders. */
export function extraRequest(info, generate) {
  const extra = {};
  if (info?.can_predict) extra.predictions = { top_k: TOP_K };
  if (info?.can_predict && info.kind === "decoder" && generate > 0) extra.generate = { max_new_tokens: generate };
  return extra;
}

/**
 * The upper triangle of an n x n matrix (key after query) as one Plotly path shape: a decoder's query
 * never sees a later key, so those cells are drawn masked instead of as plain zeros. Axes are cell
 * centres 0..n-1 (y reversed), so row q's masked cells span x = q+0.5 .. n-0.5.
 */
export function causalShape(n) {
  if (n < 2) return null;
  let path = `M 0.5 -0.5 L ${n - 0.5} -0.5 L ${n - 0.5} ${n - 1.5}`;
  for (let q = n - 2; q >= 0; q--) path += ` L ${q + 0.5} ${q + 0.5} L ${q + 0.5} ${q - 0.5}`;
  return {
    type: "path",
    path: `${path} Z`,
    xref: "x",
    yref: "y",
    fillcolor: "rgba(100, 116, 139, 0.55)",
    line: { color: "rgba(71, 85, 105, 0.9)", width: 1, dash: "dot" },
    layer: "above",
    name: "causal-mask",
  };
}

/** The predictions of the response by token position. */
export function predictionsByPosition(resp) {
  const out = new Map();
  for (const p of resp.predictions ?? []) out.set(p.position, p);
  return out;
}

/**
 * Tooltip lines for token i of a response: its text, "generated" if the model wrote it, and the top
 * candidates with probabilities (next token for decoders, replacements at a mask); null when none apply.
 */
export function predictionLines(resp, i, byPosition = predictionsByPosition(resp)) {
  const token = resp.labels?.[i] ?? resp.tokens[i];
  const lines = [token];
  if (resp.generated?.[i]) lines.push(t("tokens.generated"));
  const pred = byPosition.get(i);
  if (pred) {
    lines.push(t(pred.kind === "mask" ? "predict.mask" : "predict.next", { token }));
    for (const c of pred.candidates) {
      lines.push(t("predict.item", { label: c.label, percent: `${(c.probability * 100).toFixed(1)}%` }));
    }
  }
  return lines.length > 1 ? lines : null;
}

/** The run's tokens as buttons: hover shows predictions, click (or Enter) picks one for perturbation. */
export class TokenStrip {
  /**
   * @param {HTMLElement} el container of the buttons
   * @param {import("./tooltip.js").Tooltip} tooltip
   * @param {(pos: number) => void} onPick
   */
  constructor(el, tooltip, onPick) {
    this.el = el;
    this.tooltip = tooltip;
    this.onPick = onPick;
    this.resp = null;
    this.byPosition = new Map();
    this.selected = null;
    el.addEventListener("mouseover", (ev) => this.hover(ev));
    el.addEventListener("focusin", (ev) => this.hover(ev));
    el.addEventListener("mouseleave", () => this.tooltip.hide());
    el.addEventListener("focusout", () => this.tooltip.hide());
    el.addEventListener("click", (ev) => {
      const b = ev.target.closest("button[data-pos]");
      if (b && !b.disabled) this.onPick(Number(b.dataset.pos));
    });
  }

  show(resp) {
    this.resp = resp;
    this.byPosition = predictionsByPosition(resp);
    this.selected = null;
    const nodes = resp.tokens.map((tok, i) => {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "token-chip";
      if (resp.special[i]) b.classList.add("special");
      if (resp.generated?.[i]) b.classList.add("gen");
      if (this.byPosition.get(i)?.kind === "mask") b.classList.add("has-pred");
      b.dataset.pos = String(i);
      b.textContent = resp.labels?.[i] ?? tok;
      // Special tokens and generated ones are not in the text, so there is nothing to edit.
      b.setAttribute("aria-disabled", String(!editable(resp, i)));
      return b;
    });
    this.el.replaceChildren(...nodes);
    this.el.closest("[data-tokens]")?.removeAttribute("hidden");
  }

  select(pos) {
    this.selected = pos;
    for (const b of this.el.querySelectorAll("button[data-pos]")) b.classList.toggle("selected", Number(b.dataset.pos) === pos);
  }

  hover(ev) {
    const b = ev.target.closest?.("button[data-pos]");
    if (!b || !this.resp) return;
    const lines = predictionLines(this.resp, Number(b.dataset.pos), this.byPosition);
    if (!lines) {
      this.tooltip.hide();
      return;
    }
    const r = b.getBoundingClientRect();
    this.tooltip.show(lines, r.left, r.bottom);
  }
}

/** Whether token i of a response is text the user typed (segment 0, not special, not generated). */
export function editable(resp, i) {
  return Boolean(resp.offsets?.[i]) && !resp.special[i] && !resp.generated?.[i] && (resp.segments?.[i] ?? 0) === 0;
}

/** Prediction tooltips on the head view's token labels (HTML spans with data-pos over the figure). */
export function bindLabelTooltips(labelsEl, tooltip, getResp, getGroups) {
  labelsEl.addEventListener("mouseover", (ev) => {
    const span = ev.target.closest?.("span[data-pos]");
    const resp = getResp();
    const groups = getGroups();
    if (!span || !resp || !groups) return;
    const g = groups[Number(span.dataset.pos)];
    if (!g) return;
    const lines = predictionLines(resp, g.members[g.members.length - 1]); // a merged word: its last piece
    if (lines) tooltip.show(lines, ev.clientX, ev.clientY);
  });
  labelsEl.addEventListener("mouseout", () => tooltip.hide());
}
