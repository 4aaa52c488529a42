// The head statistics and attention rollout as the server defines them (app/attention/definitions.py,
// the one source), embedded by the page template in #app's data-definitions. Outside a page (unit
// tests) there are none.

function embedded() {
  const raw = globalThis.document?.getElementById("app")?.dataset.definitions;
  return raw ? JSON.parse(raw) : { default_stat: null, stats: [], rollout: null, measures: {}, detectors: {}, similarity: null };
}

const definitions = embedded();

/** [{id, name, short, unit, formula, help}] in the order of the picker and the table. */
export const STATS = Object.freeze(definitions.stats);
export const DEFAULT_STAT = definitions.default_stat;
/** {source, step, product, explanation, help} */
export const ROLLOUT = definitions.rollout;
/** {id: {title, formula, reference}}: weights, norms, layer_norms, flow, rollout, alti, alti_rollout. */
export const MEASURES = Object.freeze(definitions.measures ?? {});
/** {id: {title, formula, reference}} of the head detectors (POST /api/heads), in their order. */
export const DETECTORS = Object.freeze(definitions.detectors ?? {});
/** {title, formula, reference} of head similarity (POST /api/stats similarity: true). */
export const SIMILARITY = definitions.similarity ?? null;

/** A measure's help line: "Title: formula (reference)". */
export function measureHelp(def) {
  return def ? `${def.title}: ${def.formula} (${def.reference})` : "";
}

const LETTER = /[\p{L}\p{N}]/u;

/**
 * `text` as nodes, with `x_i` / `x_ij` / `x_{ij}` as subscripts and `x^h` as superscripts (elements built with
 * textContent: definitions never become markup). Only a one-letter base counts (α^h_ij, W_V^h, Â_l), so
 * identifiers such as maximum_flow or cls_token stay as written.
 */
export function formulaNodes(text) {
  const parts = [];
  const re = /([_^])(\{([^}]*)\}|([a-z]{1,2}(?![a-z])|[\p{L}\p{N}]))/gu;
  let last = 0;
  let chain = -1; // end of the previous sub/superscript: a second one may follow it directly
  for (const m of text.matchAll(re)) {
    const i = m.index;
    const oneLetterBase = i >= 1 && LETTER.test(text[i - 1]) && (i < 2 || !LETTER.test(text[i - 2]));
    if (i !== chain && !oneLetterBase) continue;
    if (i > last) parts.push(document.createTextNode(text.slice(last, i)));
    const el = document.createElement(m[1] === "_" ? "sub" : "sup");
    el.textContent = m[3] ?? m[4];
    parts.push(el);
    last = chain = i + m[0].length;
  }
  if (last < text.length) parts.push(document.createTextNode(text.slice(last)));
  return parts;
}

/** Put `text` into `el` with its formula's sub- and superscripts (formulaNodes). */
export function setFormula(el, text) {
  el.replaceChildren(...formulaNodes(text));
}
