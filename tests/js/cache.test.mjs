// The bounded request cache (static/js/cache.js) and CSV fields (static/js/exporter.js).
import assert from "node:assert/strict";
import { test } from "node:test";

import { RequestCache } from "../../static/js/cache.js";
import { csvField, matrixCsv, rowsCsv } from "../../static/js/exporter.js";

test("one request per key, the oldest key dropped past the limit", async () => {
  const cache = new RequestCache(2);
  let calls = 0;
  const fetch = (v) => () => (calls++, Promise.resolve(v));
  assert.equal(await cache.get("a", fetch(1)), 1);
  assert.equal(await cache.get("a", fetch(99)), 1); // cached: not fetched again
  await cache.get("b", fetch(2));
  await cache.get("c", fetch(3)); // drops "a"
  assert.equal(calls, 3);
  assert.deepEqual(["a", "b", "c"].map((k) => cache.has(k)), [false, true, true]);
});

test("a failed request is forgotten, so the next visit retries", async () => {
  const cache = new RequestCache(4);
  await assert.rejects(cache.get("k", () => Promise.reject(new Error("boom"))), /boom/);
  assert.equal(cache.has("k"), false);
  assert.equal(await cache.get("k", () => Promise.resolve("ok")), "ok");
});

test("CSV fields are quoted and spreadsheet formulas neutralised", () => {
  assert.equal(csvField('say "hi"'), '"say ""hi"""');
  assert.equal(csvField("=1+2"), `"'=1+2"`);
  assert.equal(csvField("-x"), `"'-x"`);
  assert.equal(rowsCsv([["layer", 0], ["a,b", 1.5]]), '"layer","0"\r\n"a,b","1.5"\r\n');
  assert.equal(
    matrixCsv(Float32Array.from([0.25, 0.75, 1, 0]), 2, ["x", "y"]),
    '"query \\ key","x","y"\r\n"x",0.250000,0.750000\r\n"y",1.000000,0.000000\r\n',
  );
});
