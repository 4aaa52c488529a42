// The view, encoded in the URL fragment (never sent to the server, so shared text stays out of logs).
// Example: #text=The+cat+sat&model=minilm&view=head&agg=mean&layer=2&head=5&hide=1&merge=1&scale=viridis&range=one&stat=distance
// A comparison adds its inputs: &a=The+cat+sat&am=minilm&b=The+dog+sat&bm=minilm
//
// Pure (no DOM): the statistics a link may name are given, so unit tests need no page.

import { DEFAULT_SCALE, isScale } from "./colors.js";

export const VIEWS = ["head", "text", "lines", "model", "stats", "heads", "compare", "explain"];
export const AGGS = ["head", "mean", "max", "rollout", "norms", "flow", "alti", "alti_rollout"];
const RANGES = ["max", "one"];

function int(value, fallback) {
  const n = Number.parseInt(value ?? "", 10);
  return Number.isFinite(n) && n >= 0 && n < 10000 ? n : fallback;
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
    }
    return `#${p.toString()}`;
  }

  return { defaults, parse, format };
}
