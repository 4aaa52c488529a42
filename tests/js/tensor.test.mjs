// Decoding the API's attention (static/js/tensor.js) against hand-worked values.
import assert from "node:assert/strict";
import { test } from "node:test";

import { decodeBase64, stackFromResponse, tensorFromResponse } from "../../static/js/tensor.js";

test("base64 to bytes (RFC 4648)", () => {
  // "AAEC/w==" is 00 01 02 ff
  assert.deepEqual(Array.from(decodeBase64("AAEC/w==")), [0, 1, 2, 255]);
  assert.deepEqual(Array.from(decodeBase64("")), []);
});

test("compact attention: uint8 levels times the scale, [L, H, T, T] row-major", () => {
  // bytes ff 00 33 cc = 255 0 51 204 -> weights 1 0 0.2 0.8
  const resp = { tokens: ["a", "b"], attention_compact: { dtype: "uint8", shape: [1, 1, 2, 2], scale: 1 / 255, data: "/wAzzA==" } };
  const t = tensorFromResponse(resp);
  assert.deepEqual([t.layers, t.heads, t.size], [1, 1, 2]);
  const m = Array.from(t.matrix(0, 0));
  [1, 0, 0.2, 0.8].forEach((v, i) => assert.ok(Math.abs(m[i] - v) < 1e-6, `${m[i]} != ${v}`));
});

test("plain attention: nested lists flattened in [layer][head][query][key] order", () => {
  const resp = { tokens: ["a", "b"], attention: [[[[0.1, 0.9], [0.3, 0.7]], [[1, 0], [0, 1]]]] };
  const t = tensorFromResponse(resp);
  assert.deepEqual([t.layers, t.heads, t.size], [1, 2, 2]);
  assert.deepEqual(Array.from(t.matrix(0, 1)), [1, 0, 0, 1]);
  assert.ok(Math.abs(t.matrix(0, 0)[2] - 0.3) < 1e-6);
});

test("malformed responses are refused with a reason", () => {
  const compact = (over) => ({ tokens: ["a", "b"], attention_compact: { dtype: "uint8", shape: [1, 1, 2, 2], scale: 1, data: "AAAAAA==", ...over } });
  assert.throws(() => tensorFromResponse(compact({ dtype: "float16" })), /Unsupported compact dtype/);
  assert.throws(() => tensorFromResponse(compact({ shape: [1, 1, 2, 3] })), /must be \[layers, heads, T, T\]/);
  assert.throws(() => tensorFromResponse(compact({ data: "AAAA" })), /has 3 values, expected/);
  assert.throws(() => tensorFromResponse({ ...compact({}), tokens: ["a"] }), /covers 2 tokens, the response has 1/);
  assert.throws(() => tensorFromResponse({ tokens: [] }), /no attention weights/);
});

test("cross-attention: a non-square [L, H, target, source] stack, compact or nested", () => {
  // bytes ff 00 00 33 cc 00 = 255 0 0 51 204 0 -> 2 target rows x 3 source columns: [1 0 0] [0.2 0.8 0]
  const compact = { cross_attention_compact: { dtype: "uint8", shape: [1, 1, 2, 3], scale: 1 / 255, data: "/wAAM8wA" } };
  const s = stackFromResponse(compact, "cross_attention");
  assert.deepEqual([s.layers, s.heads, s.rows, s.cols], [1, 1, 2, 3]);
  const m = Array.from(s.matrix(0, 0));
  [1, 0, 0, 0.2, 0.8, 0].forEach((v, i) => assert.ok(Math.abs(m[i] - v) < 1e-6, `${m[i]} != ${v}`));
  const nested = stackFromResponse({ cross_attention: [[[[0.5, 0.5, 0]], [[0, 0, 1]]]] }, "cross_attention");
  assert.deepEqual([nested.layers, nested.heads, nested.rows, nested.cols], [1, 2, 1, 3]);
  assert.deepEqual(Array.from(nested.matrix(0, 1)), [0, 0, 1]);
  assert.equal(stackFromResponse({ cross_attention: null }, "cross_attention"), null);
});
