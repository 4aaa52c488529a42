// Long inputs (issue 13): the arithmetic of the head view over a run (POST /api/runs). Pure (no DOM,
// no fetch) so node tests check it. A view is {q0, q1, k0, k1}: half-open token ranges of the queries
// (rows) and keys (columns) shown. Plotly's axes are in token coordinates (token i is the cell
// centred on i), for the overview's uneven blocks and the exact tiles alike.

/** More tokens than this and the head view works on a run (overview, then exact tiles). */
export const LONG_TOKENS = 256;
/** A view at most this many tokens a side shows the exact tile with every token label. */
export const TILE_SPAN = 256;
/**
 * Texts (text + pair) longer than this many characters go to POST /api/runs first: its answer says
 * how many tokens there are. Shorter ones go to POST /api/attention as before; a tokenizer that makes
 * more tokens than characters (byte-level BPE on CJK or emoji) either fits its response budget there or
 * gets 413 response_too_large, which also sends the page to a run.
 */
export const LONG_CHARS = 256;
/** The model grid's overview side (one per head). */
export const GRID_SIZE = 32;
/** The span a search jumps to when the view is not already an exact tile. */
export const SEARCH_SPAN = 64;

/** True when `req` ({text, pair}) should ask for a run first. */
export function runsFirst(req) {
  // An encoder–decoder's three views and generated tokens need the whole response (runs keep neither).
  if (req.target || req.generate) return false;
  return Array.from(req.text ?? "").length + Array.from(req.pair ?? "").length > LONG_CHARS;
}

export function fullView(T) {
  return { q0: 0, q1: T, k0: 0, k1: T };
}

export function isFull(v, T) {
  return v.q0 === 0 && v.k0 === 0 && v.q1 === T && v.k1 === T;
}

/** True when the view is small enough for the exact tile (both sides at most TILE_SPAN). */
export function isExact(v) {
  return v.q1 - v.q0 <= TILE_SPAN && v.k1 - v.k0 <= TILE_SPAN;
}

function clampRange(a, b, T) {
  let lo = Math.max(0, Math.min(T - 1, Math.round(a)));
  let hi = Math.max(lo + 1, Math.min(T, Math.round(b)));
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) [lo, hi] = [0, T];
  return [lo, hi];
}

/** `v` made whole, inside [0, T) and at least one token a side; null or nonsense gives the full view. */
export function clampView(v, T) {
  if (!v || ![v.q0, v.q1, v.k0, v.k1].every(Number.isFinite)) return fullView(T);
  const [q0, q1] = clampRange(v.q0, v.q1, T);
  const [k0, k1] = clampRange(v.k0, v.k1, T);
  return { q0, q1, k0, k1 };
}

/** The tokens an axis range [a, b] (either order; cell i spans i-0.5..i+0.5) shows, half-open. */
export function tokensIn(range, T) {
  const lo = Math.min(range[0], range[1]);
  const hi = Math.max(range[0], range[1]);
  const first = Math.max(0, Math.floor(lo + 0.5));
  const end = Math.min(T, Math.ceil(hi - 0.5) + 1);
  return end > first ? [first, end] : [Math.min(first, T - 1), Math.min(first, T - 1) + 1];
}

/** The view Plotly's x (keys) and y (queries) ranges show. */
export function viewOfRanges(xrange, yrange, T) {
  const [k0, k1] = tokensIn(xrange, T);
  const [q0, q1] = tokensIn(yrange, T);
  return { q0, q1, k0, k1 };
}

/** Plotly ranges for a view: x left to right, y reversed (query 0 at the top). */
export function rangesOf(v) {
  return { x: [v.k0 - 0.5, v.k1 - 0.5], y: [v.q1 - 0.5, v.q0 - 0.5] };
}

function centred(c, span, T) {
  const s = Math.max(1, Math.min(T, Math.round(span)));
  const lo = Math.max(0, Math.min(T - s, Math.round(c - s / 2)));
  return [lo, lo + s];
}

/** A view `span` tokens a side (clipped to T) centred on query q and key k, shifted to stay inside. */
export function centreOn(q, k, span, T) {
  const [q0, q1] = centred(q, span, T);
  const [k0, k1] = centred(k, span, T);
  return { q0, q1, k0, k1 };
}

/** Where a search jumps to: token i on both axes, at the current span when exact, else SEARCH_SPAN. */
export function searchView(current, i, T) {
  const span = isExact(current) ? Math.max(current.q1 - current.q0, current.k1 - current.k0) : SEARCH_SPAN;
  return centreOn(i, i, span, T);
}

/** Case- and space-insensitive form of a label or query (NFKC, so full-width forms match too). */
function fold(s) {
  return String(s ?? "").normalize("NFKC").toLocaleLowerCase().replace(/\s+/g, " ").trim();
}

/**
 * The first token after `after` (wrapping round) whose label contains `query`; -1 when none does or
 * the query is blank. Labels are the text each token covers (the run's `labels`).
 */
export function findToken(labels, query, after = -1) {
  const q = fold(query);
  if (!q) return -1;
  const n = labels.length;
  for (let step = 1; step <= n; step++) {
    const i = (((after + step) % n) + n) % n;
    if (fold(labels[i]).includes(q)) return i;
  }
  return -1;
}

/** The block of `bounds` (n+1 increasing token indices) holding token `i`. */
export function blockOf(bounds, i) {
  let lo = 0;
  let hi = bounds.length - 2;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (bounds[mid] <= i) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** Cell edges on a token axis for an overview's bounds (block i covers tokens bounds[i]..bounds[i+1]-1). */
export function edgesOf(bounds) {
  return bounds.map((b) => b - 0.5);
}

/** A JSON matrix (rows of numbers) as a row-major Float32Array with its shape. */
export function flatten(rows) {
  const n = rows.length;
  const m = n ? rows[0].length : 0;
  const out = new Float32Array(n * m);
  for (let i = 0; i < n; i++) out.set(rows[i], i * m);
  return { matrix: out, rows: n, cols: m };
}

/** Largest value of `matrix` (at least `floor`). */
export function maxOf(matrix, floor = 1e-6) {
  let v = floor;
  for (let i = 0; i < matrix.length; i++) if (matrix[i] > v) v = matrix[i];
  return v;
}

/** The share of an overview's blocks its colour scale's top may leave above it (see colourTop). */
export const CLIP_SHARE = 0.01;

/**
 * The top of an overview's colour scale: the value (1 - CLIP_SHARE) of its blocks stay within (the
 * 99th percentile, nearest rank), at least `floor`. With plain max, one block (a decoder's first
 * token, which can only attend to itself, is 1.0) turns every other block white; the few blocks above
 * take the darkest colour and the tooltip still says their value.
 */
export function colourTop(matrix, floor = 1e-6) {
  if (!matrix.length) return floor;
  const sorted = Float32Array.from(matrix).sort();
  const rank = Math.min(sorted.length - 1, Math.ceil((1 - CLIP_SHARE) * sorted.length) - 1);
  return Math.max(floor, sorted[Math.max(0, rank)]);
}

/** The API's `head` for the state's aggregate: a head index, "mean" or "max"; null when runs have no such view. */
export function runHead(agg, head) {
  if (agg === "head") return head;
  if (agg === "mean" || agg === "max") return agg;
  return null;
}

/** The minimap's box for view `v` on a `side`-pixel map of T tokens (at least 2 px a side, so it stays visible). */
export function minimapBox(v, T, side) {
  const px = (t) => (t / T) * side;
  const w = Math.max(2, px(v.k1) - px(v.k0));
  const h = Math.max(2, px(v.q1) - px(v.q0));
  return { left: Math.min(side - w, px(v.k0)), top: Math.min(side - h, px(v.q0)), width: w, height: h };
}

/** The view a click at (x, y) pixels of the minimap moves to: centred there, the current span kept (TILE_SPAN from the full view). */
export function minimapJump(current, x, y, T, side) {
  const q = Math.floor((y / side) * T);
  const k = Math.floor((x / side) * T);
  const full = isFull(current, T);
  const qs = full ? TILE_SPAN : current.q1 - current.q0;
  const ks = full ? TILE_SPAN : current.k1 - current.k0;
  const [q0, q1] = centred(q, qs, T);
  const [k0, k1] = centred(k, ks, T);
  return { q0, q1, k0, k1 };
}

/** The URL's form of a view range: "a-b". */
export function formatSpan(a, b) {
  return `${a}-${b}`;
}

/** [a, b] from "a-b" (0 <= a < b), or null. */
export function parseSpan(text) {
  const m = /^(\d{1,7})-(\d{1,7})$/.exec(String(text ?? ""));
  if (!m) return null;
  const a = Number(m[1]);
  const b = Number(m[2]);
  return a < b ? [a, b] : null;
}
