// Client of the Headmap JSON API. Every error becomes an ApiError carrying the API's
// {"error", "detail"} (or a readable stand-in when the server or network gave none).

import { t } from "./i18n.js";

export class ApiError extends Error {
  /** @param {number} status HTTP status (0 for network failures) @param {string} code @param {string} detail */
  constructor(status, code, detail) {
    super(detail);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

let root = "";

/** Prefix for every URL (the app may be served below a path, e.g. behind a proxy). */
export function setRoot(prefix) {
  root = prefix || "";
}

async function errorFrom(response) {
  const text = await response.text().catch(() => "");
  try {
    const body = JSON.parse(text);
    if (body && typeof body.error === "string") {
      return new ApiError(response.status, body.error, String(body.detail ?? ""));
    }
  } catch {
    // not JSON: fall through
  }
  const detail = text.trim().slice(0, 300) || response.statusText || t("error.no_explanation");
  return new ApiError(response.status, `http_${response.status}`, detail);
}

async function request(path, options) {
  let response;
  try {
    response = await fetch(root + path, { credentials: "same-origin", ...options });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, "network_error", t("error.unreachable"));
  }
  if (!response.ok) throw await errorFrom(response);
  return response;
}

/** GET /api/models -> {default, models: [{name, kind, num_layers, num_heads, max_tokens, description, supports_pair}]} */
export async function getModels(signal) {
  const response = await request("/api/models", { signal });
  return response.json();
}

/**
 * POST /api/attention with the compact encoding.
 * @returns {Promise<{data: object, serverMs: number|null, bytes: number}>}
 */
export async function getAttention({ text, pair, model, truncate, measure, target, predictions, generate, layers, heads }, signal) {
  const body = { text, model, encoding: "compact", truncate: Boolean(truncate) };
  if (measure) body.measure = measure; // "norms": per-head vector norms instead of weights
  if (pair) body.text_pair = pair;
  if (target && !measure) body.target = target; // encoder–decoder models: the teacher-forced target
  if (predictions) body.predictions = predictions; // {top_k}: the model's own predictions (predictions.js)
  if (generate) body.generate = generate; // {max_new_tokens}: greedy generation on decoders
  if (layers) body.layers = layers;
  if (heads) body.heads = heads;
  const response = await request("/api/attention", {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(body),
    signal,
  });
  const text_ = await response.text();
  const timing = /app;dur=([\d.]+)/.exec(response.headers.get("Server-Timing") || "");
  return { data: JSON.parse(text_), serverMs: timing ? Number(timing[1]) : null, bytes: text_.length };
}

async function postJson(path, body, signal) {
  const response = await request(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(body),
    signal,
  });
  return response.json();
}

/** The request fields shared by the insight endpoints: {text, text_pair?, model, truncate}. */
function inputOf({ text, pair, model, truncate }) {
  const body = { text, model, truncate: Boolean(truncate) };
  if (pair) body.text_pair = pair;
  return body;
}

/** POST /api/stats -> {tokens, layers, heads, cls_positions, sep_positions, stats: {name: [layer][head] | null}} */
export function getStats(req, signal) {
  return postJson("/api/stats", inputOf(req), signal);
}

/**
 * POST /api/compare.
 * @param {{a: {text: string, model: string}, b: {text: string, model: string}, layers?: number[],
 *          heads?: number[]|null, view: "heads"|"mean"|"max"|"rollout", truncate?: boolean}} body
 * @returns {Promise<{aligned: boolean, reason: string|null, mismatched_positions: number[], a: object, b: object,
 *                    diff: number[][][][]|null}>}
 */
export function getCompare(body, signal) {
  return postJson("/api/compare", body, signal);
}

/** POST /api/explain (a model of kind custom) -> {tokens, head, head_size, steps: [{step, key, title, ...}]} */
export function getExplain(req, head, signal) {
  return postJson("/api/explain", { ...inputOf(req), head }, signal);
}

/** POST /api/aggregate -> {tokens, layers, heads, mean?, max?, rollout?, flow?, alti?, alti_rollout?: [layer][query][key]} */
export function getAggregate(req, methods, signal) {
  return postJson("/api/aggregate", { ...inputOf(req), methods }, signal);
}

/** POST /api/heads -> {model, num_layers, num_heads, tokens, random_tokens, seed, scores: {detector: [layer][head] | null}, definitions} */
export function getHeads(req, signal) {
  return postJson("/api/heads", inputOf(req), signal);
}

/** POST /api/stats with similarity: true -> the statistics plus {similarity: {heads, distance, embedding, definition}} */
export function getSimilarity(req, signal) {
  return postJson("/api/stats", { ...inputOf(req), similarity: true }, signal);
}

// -- runs (issue 13): a long input's captured state kept by the server, read as overviews and tiles --

/** POST /api/runs -> RunInfo {run_id, model, kind, tokens, labels, …, num_layers, num_heads, num_tokens, bytes, expires_at} */
export function createRun(req, signal) {
  return postJson("/api/runs", inputOf(req), signal);
}

async function getJson(path, params, signal) {
  const query = new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)]));
  const response = await request(`${path}?${query}`, { headers: { Accept: "application/json" }, signal });
  return response.json();
}

/** GET /api/runs/{id}/overview -> {num_tokens, size, q_bounds, k_bounds, matrix: [[float]]} (block max or mean) */
export function getOverview(runId, { layer, head, size, reduce = "max" }, signal) {
  return getJson(`/api/runs/${encodeURIComponent(runId)}/overview`, { layer, head, size, reduce }, signal);
}

/** GET /api/runs/{id}/tile -> {q0, q1, k0, k1, weights: [[float]]}: the exact weights of that range */
export function getTile(runId, { layer, head, q0, q1, k0, k1 }, signal) {
  return getJson(`/api/runs/${encodeURIComponent(runId)}/tile`, { layer, head, q0, q1, k0, k1, encoding: "json" }, signal);
}

/** GET /api/runs/{id}/vector -> {index, axis, weights: [float]}: query `index`'s row (axis "query") or key `index`'s column ("key") */
export function getVector(runId, { layer, head, index, axis }, signal) {
  return getJson(`/api/runs/${encodeURIComponent(runId)}/vector`, { layer, head, index, axis }, signal);
}

/** DELETE /api/runs/{id}: the server may free it now (it would expire anyway). */
export async function deleteRun(runId) {
  await request(`/api/runs/${encodeURIComponent(runId)}`, { method: "DELETE" });
}
