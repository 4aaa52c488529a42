// The head-types map's choice of colour (static/js/headtypes.js) and the server-measure flag, on hand-worked scores.
import assert from "node:assert/strict";
import { test } from "node:test";

import { detectorColors, NONE, strongest } from "../../static/js/headtypes.js";
import { isServerAgg } from "../../static/js/measures.js";
import { urlCodec } from "../../static/js/urlstate.js";

// 1 layer x 3 heads; cls_sep is null (no [CLS]/[SEP] in the input) and must be skipped.
const scores = {
  previous_token: [[0.9, 0.2, 0.1]],
  induction: [[0.3, 0.6, 0.2]],
  cls_sep: null,
  self: [[0.1, 0.61, 0.39]],
};

test("the strongest detector at or above the threshold wins; below it, none", () => {
  assert.deepEqual(strongest(scores, 0, 0, 0.4), { type: "previous_token", score: 0.9 });
  assert.deepEqual(strongest(scores, 0, 1, 0.4), { type: "self", score: 0.61 });
  assert.equal(strongest(scores, 0, 2, 0.4).type, NONE); // best is 0.39 < 0.4
  assert.equal(strongest(scores, 0, 2, 0.39).type, "self"); // at the threshold counts
  assert.equal(strongest({ a: null }, 0, 0, 0).type, NONE);
});

test("every detector gets its own colour", () => {
  const colors = detectorColors(["a", "b", "c", "d", "e", "f", "g"]);
  assert.equal(new Set(Object.values(colors)).size, 7);
});

test("norms, flow and ALTI come from the server and survive a link", () => {
  for (const agg of ["norms", "flow", "alti", "alti_rollout"]) {
    assert.ok(isServerAgg(agg));
    const codec = urlCodec({ stats: [], defaultStat: null });
    assert.equal(codec.parse(codec.format({ ...codec.defaults, agg, view: "heads" })).agg, agg);
    assert.equal(codec.parse(`#view=heads&agg=${agg}`).view, "heads");
  }
  for (const agg of ["head", "mean", "max", "rollout"]) assert.ok(!isServerAgg(agg));
});
