// The view, encoded in the URL fragment (never sent to the server, so shared text stays out of logs).
// Example: #text=The+cat+sat&model=minilm&view=head&agg=mean&layer=2&head=5&hide=1&merge=1&scale=viridis&range=one&stat=distance
// A comparison adds its inputs: &a=The+cat+sat&am=minilm&b=The+dog+sat&bm=minilm
// A long input's zoom (longview.js) adds the query and key token ranges shown: &q=1024-1280&k=960-1216
// A perturbation (perturb.js) adds its edit of token 2: &edit=mask:2, &edit=delete:2, &edit=replace:2:dog
// The text view's pinned token (its index) and direction, once the user chose them: &pin=12&dir=to
//
// Pure (no DOM): the statistics a link may name are given, so unit tests need no page.

import { DEFAULT_SCALE, isScale } from "./colors.js";
import { formatSpan, parseSpan } from "./longview.js";

export const VIEWS = ["head", "text", "lines", "model", "stats", "heads", "compare", "explain", "seq2seq", "corpus"];
export const AGGS = ["head", "mean", "max", "rollout", "norms", "flow", "alti", "alti_rollout"];
const RANGES = ["max", "one"];
const EDITS = ["mask", "replace", "delete"];
const DIRECTIONS = ["from", "to"];

/** "replace:2:dog" -> {op, pos, word}; null if malformed. */
export function parseEdit(value) {
  const m = /^(\w+):(\d{1,5})(?::(.*))?$/su.exec(value ?? "");
  if (!m || !EDITS.includes(m[1])) return null;
  return { op: m[1], pos: Number(m[2]), word: m[1] === "replace" ? (m[3] ?? "") : "" };
}

function int(value, fallback) {
  const n = Number.parseInt(value ?? "", 10);
  return Number.isFinite(n) && n >= 0 && n < 10000 ? n : fallback;
}

/** Both ranges of a zoom, or null when either is missing or malformed. */
function zoomOf(q, k) {
  const qs = parseSpan(q);
  const ks = parseSpan(k);
  return qs && ks ? { q0: qs[0], q1: qs[1], k0: ks[0], k1: ks[1] } : null;
}

/**
 * Parse and format for a page whose statistics are `stats` (ids), `defaultStat` the one shown first.
 * @param {{stats: string[], defaultStat: string|null}} known
 * @returns {{defaults: object, parse: (hash: string) => object, format: (state: object) => string}}
 */
export function urlCodec({ stats, defaultStat }) {
  const defaults = Object.freeze({
    text: null, // null: keep the text box as it is
    pair: "",
    model: null,
    view: "head",
    agg: "head",
    layer: 0,
    head: 0,
    hide: false,
    merge: false,
    scale: DEFAULT_SCALE,
    range: "max",
    stat: defaultStat,
    cmp: null, // {a, am, b, bm}: the compare tab's texts and models, once the user has compared
    zoom: null, // {q0, q1, k0, k1}: a long input's head view zoomed in (token ranges, half-open); null: all of it
    edit: null, // {op, pos, word}: the perturbation that made B (perturb.js)
    pin: null, // the text view's pinned token (index; its group when words are merged); null: the first word
    dir: "from", // the text view's direction: weights from the pinned token or to it
  });

  /** Parse a fragment (with or without '#') into a full, validated state. */
  function parse(hash) {
    const p = new URLSearchParams(String(hash || "").replace(/^#/, ""));
    const pick = (key, allowed) => (allowed.includes(p.get(key)) ? p.get(key) : defaults[key]);
    return {
      text: p.has("text") ? p.get("text") : null,
      pair: p.get("pair") ?? "",
      model: p.get("model") || null,
      view: pick("view", VIEWS),
      agg: pick("agg", AGGS),
      layer: int(p.get("layer"), 0),
      head: int(p.get("head"), 0),
      hide: p.get("hide") === "1",
      merge: p.get("merge") === "1",
      scale: isScale(p.get("scale")) ? p.get("scale") : defaults.scale,
      range: pick("range", RANGES),
      stat: pick("stat", stats),
      cmp: p.has("b") ? { a: p.get("a") ?? "", am: p.get("am") || null, b: p.get("b"), bm: p.get("bm") || null } : null,
      zoom: zoomOf(p.get("q"), p.get("k")),
      edit: p.has("b") ? parseEdit(p.get("edit")) : null,
      pin: int(p.get("pin"), null),
      dir: pick("dir", DIRECTIONS),
    };
  }

  /** The fragment for a state ('#' included); options at their default are left out. */
  function format(s) {
    const p = new URLSearchParams();
    if (s.text != null) p.set("text", s.text);
    if (s.pair) p.set("pair", s.pair);
    if (s.model) p.set("model", s.model);
    p.set("view", s.view);
    p.set("agg", s.agg);
    p.set("layer", String(s.layer));
    p.set("head", String(s.head));
    if (s.hide) p.set("hide", "1");
    if (s.merge) p.set("merge", "1");
    if (s.scale !== defaults.scale) p.set("scale", s.scale);
    if (s.range !== defaults.range) p.set("range", s.range);
    if (s.stat && s.stat !== defaults.stat) p.set("stat", s.stat);
    if (s.cmp) {
      p.set("a", s.cmp.a);
      if (s.cmp.am) p.set("am", s.cmp.am);
      p.set("b", s.cmp.b);
      if (s.cmp.bm) p.set("bm", s.cmp.bm);
      if (s.edit) p.set("edit", [s.edit.op, s.edit.pos, ...(s.edit.op === "replace" ? [s.edit.word] : [])].join(":"));
    }
    if (s.pin != null) p.set("pin", String(s.pin));
    if (s.dir && s.dir !== defaults.dir) p.set("dir", s.dir);
    if (s.zoom) {
      p.set("q", formatSpan(s.zoom.q0, s.zoom.q1));
      p.set("k", formatSpan(s.zoom.k0, s.zoom.k1));
    }
    return `#${p.toString()}`;
  }

  return { defaults, parse, format };
}
