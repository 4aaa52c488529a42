// Deriving what the head view and the model view show from a run and the state: the aggregate
// (one head, mean, max, rollout), then hiding special tokens and merging words (tokens.js).
//
// A run is one response and what is kept of it: {id, resp, tensor, aggs: Aggregates, request, ...}.
// Token groups are memoised on the run (run.groups, keyed by the two display options).

import { t } from "./i18n.js";
import { isServerAgg } from "./measures.js";
import { groupTokens, project } from "./tokens.js";

/** Rows and columns shown for the state's hide/merge options. */
export function groupsOf(run, state) {
  const key = `${state.hide}:${state.merge}`;
  if (run.groupsKey !== key) {
    run.groups = groupTokens(run.resp, { hideSpecial: state.hide, mergeWords: state.merge });
    run.groupsKey = key;
  }
  return run.groups;
}

/** `base` (T x T, of aggregate `agg`) after hiding and merging. */
export function reshape(run, state, base, agg) {
  const g = groupsOf(run, state);
  const T = run.tensor.size;
  const hidden = g.reduce((n, x) => n + x.members.length, 0) < T;
  // Max over heads and norms are not row-stochastic, so hidden columns are dropped without renormalising.
  return project(base, T, g, hidden && agg !== "max" && agg !== "norms");
}

/** True when the state's matrix is not at hand yet (rollout of a long input runs in a worker). */
export function isPending(run, state) {
  if (isServerAgg(state.agg)) return !run.measures.has(state.agg);
  return state.agg === "rollout" && !run.aggs.rollout.done[state.layer];
}

/** The head view's matrix for the state (n x n Float32Array, n = groupsOf(...).length). */
export async function shownMatrix(run, state) {
  const { agg, layer, head } = state;
  const source = isServerAgg(agg) ? run.measures : run.aggs; // norms, flow, ALTI: asked of the server once
  return reshape(run, state, await source.get(agg, layer, head), agg);
}

/** The model view's matrix of layer l, head h (never an aggregate: the grid shows single heads). */
export function gridMatrix(run, state, l, h) {
  return reshape(run, state, run.aggs.getSync("head", l, h), "head");
}

/** The colour bar's title for the measures that are not attention weights. */
const ZLABELS = { norms: "norms", flow: "flow", alti: "contribution", alti_rollout: "contribution" };  // heatmap.zlabel.*

/** The head view's title: model, what is shown, and the display options in force. */
export function title(run, state) {
  const { model } = run.resp;
  const H = run.tensor.heads;
  const parts = {
    head: () => t("title.head", { model, layer: state.layer, head: state.head }),
    mean: () => t("title.mean", { model, layer: state.layer, heads: H }),
    max: () => t("title.max", { model, layer: state.layer, heads: H }),
    rollout: () => t("title.rollout", { model, layer: state.layer }),
    norms: () => t("title.norms", { model, layer: state.layer, head: state.head }),
    flow: () => t("title.flow", { model, layer: state.layer }),
    alti: () => t("title.alti", { model, layer: state.layer }),
    alti_rollout: () => t("title.alti_rollout", { model, layer: state.layer }),
  };
  const extra = [state.hide && t("title.hidden"), state.merge && t("title.merged")].filter(Boolean);
  return [parts[state.agg](), ...extra].join(" · ");
}

/**
 * Everything the head view draws: {matrix, n, groups, title, scale, zmax, boundaries, revision}.
 * zmax is 1 or the largest value shown (range "max"); boundaries are the group indices where a new
 * segment starts; revision changes when the tokens shown do (Plotly keeps the zoom otherwise).
 */
export async function shownView(run, state) {
  const matrix = await shownMatrix(run, state);
  const g = groupsOf(run, state);
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
    title: title(run, state),
    scale: state.scale,
    zmax,
    boundaries,
    revision: `${run.id}:${state.hide}:${state.merge}`,
    zlabel: state.agg in ZLABELS ? t(`heatmap.zlabel.${ZLABELS[state.agg]}`) : t("heatmap.colorbar"),
  };
}
