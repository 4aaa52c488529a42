// Long inputs' head view arithmetic (static/js/longview.js) and run session (static/js/longrun.js),
// against hand-worked values.
import assert from "node:assert/strict";
import { test } from "node:test";

import { LongRun } from "../../static/js/longrun.js";
import {
  blockOf, centreOn, clampView, colourTop, edgesOf, findToken, flatten, fullView, isExact, isFull, minimapBox, minimapJump,
  parseSpan, rangesOf, runHead, runsFirst, searchView, tokensIn, viewOfRanges,
} from "../../static/js/longview.js";
import { urlCodec } from "../../static/js/urlstate.js";

test("texts over 256 characters (text and pair together, by code point) ask for a run first", () => {
  assert.equal(runsFirst({ text: "a".repeat(256), pair: "" }), false);
  assert.equal(runsFirst({ text: "a".repeat(200), pair: "b".repeat(57) }), true);
  assert.equal(runsFirst({ text: "a".repeat(900), pair: "", target: "t" }), false); // encoder–decoder: whole response
  // 200 emoji are 400 UTF-16 units but 200 characters
  assert.equal(runsFirst({ text: "😀".repeat(200), pair: "" }), false);
});

test("axis ranges map to the tokens whose cells they show", () => {
  assert.deepEqual(tokensIn([-0.5, 8191.5], 8192), [0, 8192]);
  assert.deepEqual(tokensIn([119.5, 99.5], 8192), [100, 120]); // reversed y axis
  assert.deepEqual(tokensIn([99.2, 119.7], 8192), [99, 121]); // partly shown cells count
  assert.deepEqual(tokensIn([-40, 9000], 100), [0, 100]); // clipped
  assert.deepEqual(tokensIn([10.1, 10.2], 100), [10, 11]); // never empty
  assert.deepEqual(viewOfRanges([99.5, 119.5], [300.5, 200.5], 1000), { q0: 201, q1: 301, k0: 100, k1: 120 });
  assert.deepEqual(rangesOf({ q0: 201, q1: 301, k0: 100, k1: 120 }), { x: [99.5, 119.5], y: [300.5, 200.5] });
});

test("views are clamped whole and at least one token a side", () => {
  assert.deepEqual(clampView(null, 50), fullView(50));
  assert.deepEqual(clampView({ q0: -5, q1: 70, k0: 10.4, k1: 10.4 }, 50), { q0: 0, q1: 50, k0: 10, k1: 11 });
  assert.deepEqual(clampView({ q0: 60, q1: 90, k0: 0, k1: 1 }, 50), { q0: 49, q1: 50, k0: 0, k1: 1 });
  assert.equal(isFull({ q0: 0, q1: 50, k0: 0, k1: 50 }, 50), true);
  assert.equal(isExact({ q0: 0, q1: 256, k0: 100, k1: 356 }), true);
  assert.equal(isExact({ q0: 0, q1: 257, k0: 100, k1: 356 }), false);
});

test("centring keeps the span and stays inside the tokens", () => {
  assert.deepEqual(centreOn(1000, 1000, 64, 8192), { q0: 968, q1: 1032, k0: 968, k1: 1032 });
  assert.deepEqual(centreOn(3, 8190, 64, 8192), { q0: 0, q1: 64, k0: 8128, k1: 8192 });
  assert.deepEqual(centreOn(5, 5, 64, 20), { q0: 0, q1: 20, k0: 0, k1: 20 });
  // a search from the full view jumps to 64 tokens; from an exact view it keeps the view's span
  assert.deepEqual(searchView(fullView(8192), 500, 8192), { q0: 468, q1: 532, k0: 468, k1: 532 });
  assert.deepEqual(searchView({ q0: 0, q1: 20, k0: 0, k1: 10 }, 500, 8192), { q0: 490, q1: 510, k0: 490, k1: 510 });
});

test("token search: case- and width-insensitive, after the last hit, wrapping round", () => {
  const labels = ["[CLS]", "The", " cat", " sat", " on", " the", " mat", "ＣＡＴ", "[SEP]"];
  assert.equal(findToken(labels, "the"), 1);
  assert.equal(findToken(labels, "the", 1), 5);
  assert.equal(findToken(labels, "the", 5), 1); // wraps
  assert.equal(findToken(labels, " CAT ", 2), 7); // full-width ＣＡＴ folds to cat
  assert.equal(findToken(labels, "dog"), -1);
  assert.equal(findToken(labels, "   "), -1);
});

test("blocks: which block holds a token, and the cell edges on the token axis", () => {
  const bounds = [0, 3, 5, 8, 10]; // blocks [0,3) [3,5) [5,8) [8,10)
  assert.deepEqual([0, 2, 3, 4, 5, 7, 8, 9].map((i) => blockOf(bounds, i)), [0, 0, 1, 1, 2, 2, 3, 3]);
  assert.deepEqual(edgesOf(bounds), [-0.5, 2.5, 4.5, 7.5, 9.5]);
});

test("flatten keeps row-major order; runHead maps the aggregate to the API's head", () => {
  const { matrix, rows, cols } = flatten([[1, 2, 3], [4, 5, 6]]);
  assert.deepEqual([rows, cols, Array.from(matrix)], [2, 3, [1, 2, 3, 4, 5, 6]]);
  assert.deepEqual(["head", "mean", "max", "rollout", "flow"].map((a) => runHead(a, 3)), [3, "mean", "max", null, null]);
});

test("the overview's colour top: the 99th percentile (nearest rank), so one block of 1.0 does not wash out the rest", () => {
  const ramp = Float32Array.from({ length: 100 }, (_, i) => 100 - i); // 100, 99, ..., 1
  assert.equal(colourTop(ramp), 99);
  const sink = new Float32Array(1000).fill(0.002);
  sink[0] = 1; // a decoder's first token attends to itself only
  assert.equal(colourTop(sink), Math.fround(0.002));
  assert.equal(colourTop(new Float32Array(4)), 1e-6); // all zero: a floor, never a zero range
});

test("the minimap box and a click on it", () => {
  assert.deepEqual(minimapBox({ q0: 0, q1: 4096, k0: 2048, k1: 4096 }, 8192, 160), { left: 40, top: 0, width: 40, height: 80 });
  assert.deepEqual(minimapBox({ q0: 8191, q1: 8192, k0: 0, k1: 1 }, 8192, 160), { left: 0, top: 158, width: 2, height: 2 });
  // from the full view a click opens a 256-token view centred there
  assert.deepEqual(minimapJump(fullView(8192), 80, 40, 8192, 160), { q0: 1920, q1: 2176, k0: 3968, k1: 4224 });
  // otherwise the spans are kept
  assert.deepEqual(minimapJump({ q0: 0, q1: 100, k0: 0, k1: 50 }, 160, 0, 8192, 160), { q0: 0, q1: 100, k0: 8142, k1: 8192 });
});

test("the URL keeps the zoom as q=a-b&k=c-d; malformed ranges are dropped", () => {
  const codec = urlCodec({ stats: [], defaultStat: null });
  const zoom = { q0: 1024, q1: 1280, k0: 960, k1: 1216 };
  const hash = codec.format({ ...codec.defaults, zoom });
  assert.equal(hash, "#view=head&agg=head&layer=0&head=0&q=1024-1280&k=960-1216");
  assert.deepEqual(codec.parse(hash).zoom, zoom);
  assert.equal(codec.parse("#q=10-5&k=0-3").zoom, null);
  assert.equal(codec.parse("#q=1-5").zoom, null);
  assert.deepEqual(parseSpan("0-1"), [0, 1]);
  assert.equal(parseSpan("-1-3"), null);
});

function fakeApi() {
  const calls = [];
  let live = "r1";
  let made = 1;
  const api = {
    calls,
    forget: () => (live = null),
    createRun: async (req) => {
      calls.push(["create", req.text]);
      live = `r${++made}`;
      return { run_id: live, num_tokens: 300, expires_at: "2026-01-01T00:00:00Z" };
    },
    getOverview: async (id, p) => {
      calls.push(["overview", id, p.layer, p.head, p.size]);
      if (id !== live) throw Object.assign(new Error("gone"), { code: "run_not_found", status: 404 });
      return { q_bounds: [0, 150, 300], k_bounds: [0, 150, 300], matrix: [[0.5, 0], [0.25, 0.75]] };
    },
    getTile: async (id, p) => {
      calls.push(["tile", id, p.q0, p.q1, p.k0, p.k1]);
      if (id !== live) throw Object.assign(new Error("gone"), { code: "run_not_found", status: 404 });
      return { weights: [[1, 0], [0.5, 0.5]] };
    },
    deleteRun: async (id) => calls.push(["delete", id]),
  };
  return api;
}

test("a run the server forgot (404 run_not_found) is made again from its text, once, and the read retried", async () => {
  const api = fakeApi();
  const run = new LongRun({ text: "long text", pair: "", model: "", truncate: false }, { run_id: "r1", model: "tiny", num_tokens: 300 }, api);
  const o = await run.overview(0, 2, 2);
  assert.deepEqual([o.n, Array.from(o.matrix), o.qBounds], [2, [0.5, 0, 0.25, 0.75], [0, 150, 300]]);
  api.forget();
  // two reads at once: one POST /api/runs between them
  const [a, b] = await Promise.all([run.tile(0, 2, { q0: 0, q1: 2, k0: 0, k1: 2 }), run.overview(1, "mean", 2)]);
  assert.deepEqual(Array.from(a.matrix), [1, 0, 0.5, 0.5]);
  assert.equal(b.n, 2);
  assert.equal(api.calls.filter((c) => c[0] === "create").length, 1);
  assert.deepEqual(api.calls.find((c) => c[0] === "create"), ["create", "long text"]);
  assert.equal(run.runId, "r2");
  assert.equal(run.remade, 1);
  // cached: asking again sends nothing
  const before = api.calls.length;
  await run.overview(0, 2, 2);
  assert.equal(api.calls.length, before);
  run.dispose();
  assert.deepEqual(api.calls.at(-1), ["delete", "r2"]);
});

test("other errors are not retried", async () => {
  const api = fakeApi();
  api.getTile = async () => {
    throw Object.assign(new Error("too big"), { code: "tile_too_large", status: 413 });
  };
  const run = new LongRun({ text: "t", pair: "", model: "", truncate: false }, { run_id: "r1", model: "m", num_tokens: 300 }, api);
  await assert.rejects(run.tile(0, 0, { q0: 0, q1: 600, k0: 0, k1: 600 }), { code: "tile_too_large" });
  assert.equal(api.calls.filter((c) => c[0] === "create").length, 0);
});
