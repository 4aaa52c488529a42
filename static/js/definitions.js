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
