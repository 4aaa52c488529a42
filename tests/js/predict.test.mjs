// Predictions, generation and perturbation helpers (static/js/predictions.js, perturb.js, urlstate.js),
// against hand-worked values.
import assert from "node:assert/strict";
import { test } from "node:test";

import { editText } from "../../static/js/perturb.js";
import { causalShape, editable, extraRequest, formatCount, predictionLines } from "../../static/js/predictions.js";
import { parseEdit, urlCodec } from "../../static/js/urlstate.js";

// "The cat sat." as BERT tokenizes it: [CLS] the cat sat . [SEP]
const BERT = {
  tokens: ["[CLS]", "the", "cat", "sat", ".", "[SEP]"],
  offsets: [null, [0, 3], [4, 7], [8, 11], [11, 12], null],
  special: [true, false, false, false, false, true],
  segments: [0, 0, 0, 0, 0, 0],
};
const TEXT = "the cat sat.";

test("mask, replace and delete edit the token's span of the text", () => {
  assert.equal(editText(BERT, TEXT, { op: "mask", pos: 2 }, "[MASK]"), "the [MASK] sat.");
  assert.equal(editText(BERT, TEXT, { op: "replace", pos: 2, word: " dog " }, "[MASK]"), "the dog sat.");
  assert.equal(editText(BERT, TEXT, { op: "delete", pos: 2 }, "[MASK]"), "the sat."); // one of the two spaces goes
  assert.equal(editText(BERT, TEXT, { op: "delete", pos: 4 }, "[MASK]"), "the cat sat");
  assert.equal(editText(BERT, TEXT, { op: "mask", pos: 0 }, "[MASK]"), null); // [CLS]: not in the text
  assert.equal(editText(BERT, TEXT, { op: "mask", pos: 2 }, null), null); // a model without a mask token
  assert.equal(editText(BERT, TEXT, { op: "replace", pos: 2, word: "  " }, "[MASK]"), null);
});

test("a byte-level token's leading space stays in the text", () => {
  // GPT-2 style: "Ġcat" covers " cat" (offsets 3..7)
  const gpt = { tokens: ["The", "Ġcat", "Ġsat"], offsets: [[0, 3], [3, 7], [7, 11]], special: [false, false, false] };
  assert.equal(editText(gpt, "The cat sat", { op: "replace", pos: 1, word: "dog" }, null), "The dog sat");
  assert.equal(editText(gpt, "The cat sat", { op: "delete", pos: 1 }, null), "The sat");
});

test("generated tokens are not editable", () => {
  const resp = { ...BERT, generated: [false, false, false, false, true, false] };
  assert.equal(editable(resp, 3), true);
  assert.equal(editable(resp, 4), false);
});

test("the causal mask covers exactly the cells with key > query", () => {
  assert.equal(causalShape(1), null);
  // n = 3: rows 0 and 1 have masked cells (x from q+0.5 to 2.5), a staircase back to the start
  assert.equal(causalShape(3).path, "M 0.5 -0.5 L 2.5 -0.5 L 2.5 1.5 L 1.5 1.5 L 1.5 0.5 L 0.5 0.5 L 0.5 -0.5 Z");
});

test("counts read as people write them", () => {
  assert.equal(formatCount(22713216), "22.7M");
  assert.equal(formatCount(494032768), "494M");
  assert.equal(formatCount(1_500_000_000), "1.5B");
  assert.equal(formatCount(40128), "40.1k");
  assert.equal(formatCount(999), "999");
});

test("a run asks for predictions only from models that can, and generates only on decoders", () => {
  assert.deepEqual(extraRequest({ can_predict: false, kind: "encoder" }, 5), {});
  assert.deepEqual(extraRequest({ can_predict: true, kind: "encoder" }, 5), { predictions: { top_k: 5 } });
  assert.deepEqual(extraRequest({ can_predict: true, kind: "decoder" }, 3), { predictions: { top_k: 5 }, generate: { max_new_tokens: 3 } });
  assert.deepEqual(extraRequest({ can_predict: true, kind: "decoder" }, 0), { predictions: { top_k: 5 } });
});

test("the tooltip lists the candidates of the hovered position", () => {
  const resp = {
    tokens: ["a", "b"],
    labels: ["a", "␣b"],
    generated: [false, true],
    predictions: [{ position: 1, kind: "next", candidates: [{ label: "c", probability: 0.5 }, { label: "d", probability: 0.125 }] }],
  };
  assert.equal(predictionLines(resp, 0), null);
  assert.deepEqual(predictionLines(resp, 1), ["␣b", "tokens.generated", "predict.next", "predict.item", "predict.item"]);
});

test("the link keeps the edit", () => {
  const codec = urlCodec({ stats: [], defaultStat: null });
  const state = { ...codec.defaults, cmp: { a: "the cat", am: "m", b: "the dog", bm: "m" }, edit: { op: "replace", pos: 2, word: "dog:x" } };
  assert.deepEqual(codec.parse(codec.format(state)).edit, { op: "replace", pos: 2, word: "dog:x" });
  assert.deepEqual(parseEdit("mask:3"), { op: "mask", pos: 3, word: "" });
  assert.equal(parseEdit("drop:3"), null);
  assert.equal(parseEdit("mask:x"), null);
  assert.equal(codec.parse("#text=x&edit=mask:1").edit, null); // an edit without its comparison means nothing
});
