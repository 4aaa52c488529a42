// The reading views' pure logic (static/js/reading.js) against hand-worked values.
import assert from "node:assert/strict";
import { test } from "node:test";

import { lut } from "../../static/js/colors.js";
import {
  chunks,
  contrast,
  groupWeights,
  headStyle,
  layoutText,
  lineGeometry,
  lineList,
  linesOf,
  linesSvg,
  PALETTES,
  separators,
  shade,
  topWeights,
  weightsOf,
  vectorsNeeded,
  xmlEscape,
} from "../../static/js/reading.js";

// rows = queries: row 1 is query 1's weights over keys 0, 1, 2
const M = Float32Array.from([0.5, 0.25, 0.25, 0.1, 0.6, 0.3, 0.0, 0.2, 0.8]);

test("weights from a token are its row, to a token its column", () => {
  assert.deepEqual(Array.from(weightsOf(M, 3, 1, "from")), [0.1, 0.6, 0.3].map(Math.fround));
  assert.deepEqual(Array.from(weightsOf(M, 3, 2, "to")), [0.25, 0.3, 0.8].map(Math.fround));
  assert.deepEqual(Array.from(weightsOf(M, 3, 7, "from")), [0, 0, 0]); // out of range: nothing shaded
});

test("WCAG contrast: black on white is 21, #777 on white 4.48, symmetric", () => {
  assert.equal(contrast([0, 0, 0], [255, 255, 255]), 21);
  assert.equal(contrast([255, 255, 255], [0, 0, 0]), 21);
  // #777777: channel 119/255 -> linear 0.18447, (1.05) / (0.18447 + 0.05) = 4.478
  assert.ok(Math.abs(contrast([119, 119, 119], [255, 255, 255]) - 4.478) < 0.002);
});

test("shade maps weight / zmax to a LUT level and picks the text colour that contrasts more", () => {
  const blues = lut("blues");
  const top = shade(0.4, 0.4, blues);
  assert.equal(top.level, 255);
  assert.equal(top.bg, "rgb(8, 48, 107)"); // the scale's last stop, #08306b
  assert.equal(top.fg, "#ffffff");
  // black or white: the better of the two is at least 4.58:1 on any background (equal at luminance 0.179)
  const none = shade(0, 0.4, blues);
  assert.equal(none.bg, "rgb(247, 251, 255)"); // #f7fbff
  assert.equal(none.fg, "#000000");
  assert.equal(shade(0.2, 0.4, blues).level, 128); // round(0.5 * 255)
  assert.equal(shade(9, 1, blues).level, 255); // clamped
  for (let w = 0; w <= 1; w += 0.05) {
    const s = shade(w, 1, blues);
    const fg = s.fg === "#ffffff" ? [255, 255, 255] : [0, 0, 0];
    assert.ok(contrast(s.rgb, fg) >= 4.5, `text on ${s.bg}`);
  }
});

test("separators come from the text between tokens; special tokens and segments are set apart", () => {
  const resp = {
    tokens: ["[CLS]", "play", "##ing", "now", "[SEP]", "ok", "[SEP]"],
    offsets: [null, [0, 4], [4, 7], [9, 12], null, [0, 2], null],
  };
  const groups = resp.tokens.map((_, i) => ({ members: [i], segment: i >= 5 ? 1 : 0 }));
  const texts = ["playing\nnow", "ok"];
  assert.deepEqual(separators(resp, groups, texts), ["", " ", "", "\n", " ", "\n", " "]);
});

test("chunks end at about `size` tokens, at a sentence end or a line break, and cover every token once", () => {
  const labels = ["a", "b", ".", "c", "d", "e", "f", "g", "h", "i"];
  const seps = ["", " ", "", " ", " ", "\n", " ", " ", " ", " "];
  assert.deepEqual(chunks(labels, seps, 2), [[0, 3], [3, 5], [5, 9], [9, 10]]);
  const long = Array.from({ length: 1000 }, (_, i) => `w${i}`);
  const parts = chunks(long, long.map(() => " "), 64);
  assert.equal(parts[0][0], 0);
  assert.equal(parts.at(-1)[1], 1000);
  parts.slice(1).forEach(([a], i) => assert.equal(a, parts[i][1]));
  assert.ok(parts.every(([a, b]) => b - a <= 128));
});

test("line list: one line per weight above the threshold, per selected head", () => {
  const heads = { 0: M, 3: Float32Array.from([1, 0, 0, 0.05, 0.05, 0.9, 0.4, 0.3, 0.3]) };
  const lines = lineList((h) => heads[h], 3, [0, 3], 0.305);
  // head 0: 0.5 (0,0), 0.6 (1,1), 0.8 (2,2); 0.3 is not above 0.305
  // head 3: 1 (0,0), 0.9 (1,2), 0.4 (2,0)
  assert.deepEqual(
    lines.map((l) => [l.head, l.q, l.k]),
    [[0, 0, 0], [0, 1, 1], [0, 2, 2], [3, 0, 0], [3, 1, 2], [3, 2, 0]],
  );
  assert.deepEqual(linesOf(lines, "k", 0).map((l) => [l.head, l.q]), [[0, 0], [3, 0], [3, 2]]);
  assert.deepEqual(linesOf(lines, "q", 1).map((l) => [l.head, l.k]), [[0, 1], [3, 2]]);
});

test("head colours: nine per palette, then the same colours dashed", () => {
  assert.equal(PALETTES.light.length, 9);
  assert.equal(PALETTES.dark.length, 9);
  assert.deepEqual(headStyle(0, "light"), { color: "#332288", dash: [] });
  assert.deepEqual(headStyle(9, "light"), { color: "#332288", dash: [6, 3] });
  assert.deepEqual(headStyle(10, "dark"), { color: PALETTES.dark[1], dash: [6, 3] });
  assert.equal(new Set(PALETTES.light).size, 9);
});

test("the SVG has one <line> per line, opacity the weight, and escaped labels", () => {
  const lines = [{ head: 0, q: 0, k: 1, w: 0.5 }, { head: 9, q: 1, k: 0, w: 0.25 }];
  const g = lineGeometry(2, { width: 400, labelPx: 50, row: 20 });
  assert.equal(g.leftX, 58);
  assert.equal(g.rightX, 342);
  assert.equal(g.y(1), 28 + 1.5 * 20);
  const svg = linesSvg({ lines, labels: ["<a>", "b&c"], geometry: g, theme: "light", title: "t", colors: { bg: "#fff", text: "#000" } });
  assert.equal(svg.match(/<line /g).length, 2);
  assert.match(svg, /stroke-opacity="0.500"/);
  assert.match(svg, /stroke-dasharray="6 3"/);
  assert.match(svg, /&lt;a&gt;/);
  assert.match(svg, /b&amp;c/);
  assert.doesNotMatch(svg, /<a>/);
  assert.equal(xmlEscape(`"'`), "&quot;&apos;");
});

test("top weights per query, largest first, earlier key on ties", () => {
  const top = topWeights(M, 3, 2);
  assert.deepEqual(top[0].map((x) => x.key), [0, 1]); // 0.5, then 0.25 (key 1 before key 2)
  assert.deepEqual(top[1].map((x) => x.key), [1, 2]);
  assert.deepEqual(top[2].map((x) => x.key), [2, 1]);
  assert.ok(Math.abs(top[2][0].w - 0.8) < 1e-6);
});

test("text layout wraps at the width, adds a gap for spaces and a new line for breaks", () => {
  const measure = (s) => s.length * 10;
  const { boxes, height } = layoutText(["ab", "cd", "efgh", "i"], ["", " ", "", "\n"], measure, { width: 100, line: 20, pad: 2, space: 5 });
  // "ab" 24 px at 0; "cd" after a 5 px gap at 29; "efgh" 44 px would end at 97 (<= 100) -> x 53;
  // "i" after a line break: next line, 1.5 line heights down
  assert.deepEqual(boxes, [
    { x: 0, y: 0, w: 24 },
    { x: 29, y: 0, w: 24 },
    { x: 53, y: 0, w: 44 },
    { x: 0, y: 30, w: 14 },
  ]);
  assert.equal(height, 50);
  const wrapped = layoutText(["aaaa", "bbbb"], ["", " "], measure, { width: 60, line: 20, pad: 0, space: 5 });
  assert.deepEqual(wrapped.boxes[1], { x: 0, y: 20, w: 40 });
});

// A long run's text view: group weights from rows / columns only (reading.groupWeights).
// Tokens [CLS] a ##b c [SEP]; hiding special tokens and merging words gives groups {a ##b} and {c}.
const A5 = [
  [0.4, 0.1, 0.2, 0.2, 0.1],
  [0.1, 0.3, 0.2, 0.3, 0.1],
  [0.2, 0.2, 0.2, 0.2, 0.2],
  [0.5, 0.1, 0.1, 0.2, 0.1],
  [0.3, 0.3, 0.1, 0.2, 0.1],
];
const G5 = [{ members: [1, 2] }, { members: [3] }];
const rowsOf = (idx) => new Map(idx.map((i) => [i, Float32Array.from(A5[i])]));
const colsOf = (idx) => new Map(idx.map((i) => [i, Float32Array.from(A5.map((r) => r[i]))]));

test("a run's group weights from rows and columns are the short view's (hand-worked)", () => {
  assert.deepEqual(vectorsNeeded(G5, 5, 0, "from", true), [{ index: 1, axis: "query" }, { index: 2, axis: "query" }]);
  assert.deepEqual(vectorsNeeded(G5, 5, 1, "to", true).map((v) => v.index), [3, 0, 4]); // its column, the hidden ones'
  assert.deepEqual(vectorsNeeded(G5, 5, 1, "to", false).map((v) => v.index), [3]);
  // from {a ##b}: q1 keeps 0.8 of its row, q2 0.6; each query piece counts half
  const from = groupWeights(G5, 5, 0, "from", rowsOf([1, 2]), true);
  assert.ok(Math.abs(from[0] - (0.5 / 0.8 / 2 + 0.4 / 0.6 / 2)) < 1e-6);
  assert.ok(Math.abs(from[1] - (0.3 / 0.8 / 2 + 0.2 / 0.6 / 2)) < 1e-6);
  // to {c}: group {a ##b} averages 0.3/0.8 and 0.2/0.6; q3 keeps 1 - 0.5 - 0.1 = 0.4 of its row
  const to = groupWeights(G5, 5, 1, "to", colsOf([3, 0, 4]), true);
  assert.ok(Math.abs(to[0] - (0.3 / 0.8 + 0.2 / 0.6) / 2) < 1e-6);
  assert.ok(Math.abs(to[1] - 0.2 / 0.4) < 1e-6);
  // without renormalising (max over heads): plain sums and means
  const plain = groupWeights(G5, 5, 0, "from", rowsOf([1, 2]), false);
  assert.ok(Math.abs(plain[0] - (0.5 + 0.4) / 2) < 1e-6 && Math.abs(plain[1] - (0.3 + 0.2) / 2) < 1e-6);
  // one token per group, nothing hidden: the row itself
  const ones = A5.map((_, i) => ({ members: [i] }));
  assert.deepEqual(Array.from(groupWeights(ones, 5, 3, "from", rowsOf([3]), false)), A5[3].map(Math.fround));
  assert.deepEqual(Array.from(groupWeights(ones, 5, 3, "to", colsOf([3]), false)), A5.map((r) => Math.fround(r[3])));
});
