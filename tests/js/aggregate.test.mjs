// Mean, max and attention rollout (static/js/aggregate.js) against hand-worked 2-token examples.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Aggregates, matmul, maxHeads, meanHeads, Rollout, rolloutLayers, withResidual } from "../../static/js/aggregate.js";
import { AttentionTensor } from "../../static/js/tensor.js";

const close = (actual, expected, eps = 1e-6) => {
  assert.equal(actual.length, expected.length);
  expected.forEach((v, i) => assert.ok(Math.abs(actual[i] - v) <= eps, `[${i}] ${actual[i]} != ${v}`));
};

// 2 layers x 2 heads x 2 tokens, rows summing to 1.
// layer 0: head 0 [[1, 0], [0.5, 0.5]], head 1 [[0, 1], [0.5, 0.5]]
// layer 1: head 0 [[1, 0], [1, 0]],     head 1 [[1, 0], [0, 1]]
const values = Float32Array.from([1, 0, 0.5, 0.5, 0, 1, 0.5, 0.5, 1, 0, 1, 0, 1, 0, 0, 1]);
const tensor = new AttentionTensor(values, [2, 2, 2, 2], 1);

test("mean and max over heads", () => {
  close(meanHeads(tensor, 0), [0.5, 0.5, 0.5, 0.5]);
  close(meanHeads(tensor, 1), [1, 0, 0.5, 0.5]);
  close(maxHeads(tensor, 0), [1, 1, 0.5, 0.5]);
  close(maxHeads(tensor, 1), [1, 0, 1, 1]);
});

test("the scale of quantised levels applies: bytes 255 and 51 at scale 1/255 are 1 and 0.2", () => {
  const q = new AttentionTensor(Uint8Array.from([255, 0, 51, 204, 0, 255, 204, 51]), [1, 2, 2, 2], 1 / 255);
  close(q.matrix(0, 1), [0, 1, 0.8, 0.2]);
  close(meanHeads(q, 0), [0.5, 0.5, 0.5, 0.5]);
  close(maxHeads(q, 0), [1, 1, 0.8, 0.8]);
});

test("residual step: half the matrix, half the identity, rows renormalised", () => {
  // [[0.5, 0.5], [0.5, 0.5]] -> [[0.75, 0.25], [0.25, 0.75]] (rows already sum to 1)
  close(withResidual(Float32Array.from([0.5, 0.5, 0.5, 0.5]), 2), [0.75, 0.25, 0.25, 0.75]);
  // a max-over-heads-like matrix: row 0 [0.5 + 0.5, 0.5] / 1.5, row 1 [0, 0.25 + 0.5] / 0.75
  close(withResidual(Float32Array.from([1, 1, 0, 0.5]), 2), [2 / 3, 1 / 3, 0, 1]);
});

test("matmul is the row-by-column product", () => {
  // [[1, 2], [3, 4]] · [[5, 6], [7, 8]] = [[19, 22], [43, 50]]
  close(matmul(Float64Array.from([1, 2, 3, 4]), Float64Array.from([5, 6, 7, 8]), 2), [19, 22, 43, 50]);
});

// Â_0 = [[0.75, 0.25], [0.25, 0.75]], Â_1 = 0.5·[[1, 0], [0.5, 0.5]] + 0.5·I = [[1, 0], [0.25, 0.75]]
// rollout_1 = Â_1 · Â_0 = [[0.75, 0.25], [0.25·0.75 + 0.75·0.25, 0.25·0.25 + 0.75·0.75]] = [[0.75, 0.25], [0.375, 0.625]]
// (the other order, Â_0 · Â_1, would give [[0.8125, 0.1875], [0.4375, 0.5625]])
const ROLLOUT_0 = [0.75, 0.25, 0.25, 0.75];
const ROLLOUT_1 = [0.75, 0.25, 0.375, 0.625];

test("rollout after each layer: newest layer on the left, down to layer 0", () => {
  const seen = [];
  for (const [l, product] of rolloutLayers(tensor)) seen.push([l, Array.from(product)]);
  assert.deepEqual(seen.map(([l]) => l), [0, 1]);
  close(seen[0][1], ROLLOUT_0);
  close(seen[1][1], ROLLOUT_1);
});

test("Rollout (main thread: no Worker in node) and Aggregates give the same numbers", async () => {
  close(await new Rollout(tensor).at(1), ROLLOUT_1);
  const aggs = new Aggregates(tensor);
  close(await aggs.get("rollout", 0, 0), ROLLOUT_0);
  close(await aggs.get("mean", 1, 0), [1, 0, 0.5, 0.5]);
  close(await aggs.get("head", 1, 1), [1, 0, 0, 1]);
  assert.equal(aggs.getSync("max", 0, 0), aggs.getSync("max", 0, 1)); // one cached matrix per layer
  assert.throws(() => aggs.getSync("rollout", 0, 0), /Unknown aggregate/);
});
