// Token grouping and projection (static/js/tokens.js) against hand-worked values.
import assert from "node:assert/strict";
import { test } from "node:test";

import { groupTokens, isWordPiece, project } from "../../static/js/tokens.js";

const close = (actual, expected, eps = 1e-6) => {
  assert.equal(actual.length, expected.length);
  expected.forEach((v, i) => assert.ok(Math.abs(actual[i] - v) <= eps, `[${i}] ${actual[i]} != ${v}`));
};

const wordpiece = {
  tokens: ["[CLS]", "play", "##ing", "fast", "[SEP]"],
  special: [true, false, false, false, true],
  offsets: [null, [0, 4], [4, 7], [8, 12], null],
  segments: [0, 0, 0, 0, 0],
};

test("WordPiece: ## pieces join the word before, special tokens stay apart", () => {
  assert.equal(isWordPiece(wordpiece.tokens), true);
  const g = groupTokens(wordpiece, { hideSpecial: false, mergeWords: true });
  assert.deepEqual(g.map((x) => x.label), ["[CLS]", "playing", "fast", "[SEP]"]);
  assert.deepEqual(g.map((x) => x.members), [[0], [1, 2], [3], [4]]);
  assert.deepEqual(g.map((x) => x.special), [true, false, false, true]);
});

test("hiding special tokens drops them; without merging every token is its own group", () => {
  const g = groupTokens(wordpiece, { hideSpecial: true, mergeWords: false });
  assert.deepEqual(g.map((x) => x.label), ["play", "##ing", "fast"]);
  assert.deepEqual(g.map((x) => x.members), [[1], [2], [3]]);
});

test("BPE: a piece joins when it starts where the last ended and has no leading space marker", () => {
  const resp = {
    tokens: ["Hel", "lo", "Ġworld", "!"],
    special: [false, false, false, false],
    offsets: [[0, 3], [3, 5], [5, 11], [11, 12]],
  };
  const g = groupTokens(resp, { hideSpecial: false, mergeWords: true });
  assert.deepEqual(g.map((x) => x.label), ["Hello", "Ġworld!"]);
  assert.deepEqual(g.map((x) => x.members), [[0, 1], [2, 3]]);
});

test("words never merge across the two segments of a pair", () => {
  const resp = { tokens: ["a", "##b", "##c"], special: [false, false, false], segments: [0, 0, 1] };
  const g = groupTokens(resp, { hideSpecial: false, mergeWords: true });
  assert.deepEqual(g.map((x) => x.members), [[0, 1], [2]]);
  assert.deepEqual(g.map((x) => x.segment), [0, 1]);
});

test("unknown tokens are labelled ⟨UNK⟩", () => {
  const resp = { tokens: ["[UNK]", "x"], special: [false, false], unknown: [true, false] };
  assert.deepEqual(groupTokens(resp, { hideSpecial: false, mergeWords: false }).map((x) => x.label), ["⟨UNK⟩", "x"]);
});

test("an unknown token with a label shows the text it replaced, marked; merged into its word too", () => {
  // minilm on Chinese: each character is [UNK]; the labels say which one. "[UNK]" as its own label: unknown text.
  const resp = {
    tokens: ["[CLS]", "[UNK]", "[UNK]", "[UNK]", "x", "[SEP]"],
    labels: ["[CLS]", "自", "注", "[UNK]", "x", "[SEP]"],
    special: [true, false, false, false, false, true],
    unknown: [false, true, true, true, false, false],
    word_ids: [null, 0, 0, 1, 2, null],
  };
  const each = groupTokens(resp, { hideSpecial: false, mergeWords: false });
  assert.deepEqual(each.map((x) => x.label), ["[CLS]", "⟨自⟩", "⟨注⟩", "⟨UNK⟩", "x", "[SEP]"]);
  assert.deepEqual(each.map((x) => x.raw), ["[CLS]", "[UNK]", "[UNK]", "[UNK]", "x", "[SEP]"]);
  const words = groupTokens(resp, { hideSpecial: true, mergeWords: true });
  assert.deepEqual(words.map((x) => x.label), ["⟨自⟩⟨注⟩", "⟨UNK⟩", "x"]);
  assert.deepEqual(words.map((x) => x.unknown), [true, true, false]);
});

// word_ids (from the API: tokenizer words; jieba words in Chinese runs; null for punctuation and
// special tokens) decide the merge when the response has them; labels are what the words read as.

test("word_ids: a Chinese BERT's one-character tokens group into jieba's words, 。 stays alone", () => {
  // 注意力机制。 -> 注意力 / 机制 / 。 (word 0, word 1, punctuation)
  const resp = {
    tokens: ["[CLS]", "注", "意", "力", "机", "制", "。", "[SEP]"],
    labels: ["[CLS]", "注", "意", "力", "机", "制", "。", "[SEP]"],
    word_ids: [null, 0, 0, 0, 1, 1, null, null],
    special: [true, false, false, false, false, false, false, true],
    offsets: [null, [0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [5, 6], null],
    segments: [0, 0, 0, 0, 0, 0, 0, 0],
  };
  const g = groupTokens(resp, { hideSpecial: false, mergeWords: true });
  assert.deepEqual(g.map((x) => x.label), ["[CLS]", "注意力", "机制", "。", "[SEP]"]);
  assert.deepEqual(g.map((x) => x.members), [[0], [1, 2, 3], [4, 5], [6], [7]]);
  assert.deepEqual(g[1].raw, "注 意 力");
  // Hidden special tokens, then merged: the same words without [CLS] and [SEP].
  const h = groupTokens(resp, { hideSpecial: true, mergeWords: true });
  assert.deepEqual(h.map((x) => x.members), [[1, 2, 3], [4, 5], [6]]);
});

test("word_ids: byte-level BPE pieces read as text; a character split over two tokens is whole once", () => {
  // 注意力机制。 in a byte-level BPE: 注意 | first byte of 力 | its other two bytes | 机制 | 。
  // The labels show 力 on the first of its tokens and … on the second; the word reads 注意力.
  const resp = {
    tokens: ["æ³¨æĦı", "å", "ĬĽ", "æľºåĪ¶", "ãĢĤ"],
    labels: ["注意", "力", "…", "机制", "。"],
    word_ids: [0, 0, 0, 1, null],
    special: [false, false, false, false, false],
    offsets: [[0, 2], [2, 3], [2, 3], [3, 5], [5, 6]],
  };
  const g = groupTokens(resp, { hideSpecial: false, mergeWords: true });
  assert.deepEqual(g.map((x) => x.label), ["注意力", "机制", "。"]);
  assert.deepEqual(g.map((x) => x.members), [[0, 1, 2], [3], [4]]);
  assert.equal(g[0].raw, "æ³¨æĦı å ĬĽ"); // the tokenizer's own strings, for the tooltip
  // Unmerged, every token shows its label, not the byte string.
  const u = groupTokens(resp, { hideSpecial: false, mergeWords: false });
  assert.deepEqual(u.map((x) => x.label), ["注意", "力", "…", "机制", "。"]);
});

test("word_ids: English BPE with a space marker; punctuation is never part of a word", () => {
  const resp = {
    tokens: ["Hel", "lo", "Ġworld", "!"],
    labels: ["Hel", "lo", "␣world", "!"],
    word_ids: [0, 0, 1, null],
    special: [false, false, false, false],
    offsets: [[0, 3], [3, 5], [5, 11], [11, 12]],
  };
  const g = groupTokens(resp, { hideSpecial: false, mergeWords: true });
  assert.deepEqual(g.map((x) => x.label), ["Hello", "␣world", "!"]);
  assert.deepEqual(g.map((x) => x.members), [[0, 1], [2], [3]]);
});

test("word_ids: mixed Chinese and English in one run; equal ids in two segments never join", () => {
  // "用BERT看注意力" -> 用 / BERT (WordPiece BE ##RT) / 看 / 注意力
  const resp = {
    tokens: ["用", "be", "##rt", "看", "注", "意", "力"],
    labels: ["用", "BE", "RT", "看", "注", "意", "力"],
    word_ids: [0, 1, 1, 2, 3, 3, 3],
    special: [false, false, false, false, false, false, false],
    segments: [0, 0, 0, 0, 0, 1, 1],
  };
  const g = groupTokens(resp, { hideSpecial: false, mergeWords: true });
  assert.deepEqual(g.map((x) => x.label), ["用", "BERT", "看", "注", "意力"]);
  assert.deepEqual(g.map((x) => x.members), [[0], [1, 2], [3], [4], [5, 6]]);
});

// A = [[0.5, 0.25, 0.25],
//      [0.2, 0.6,  0.2 ],
//      [0.1, 0.3,  0.6 ]]
const A = Float32Array.from([0.5, 0.25, 0.25, 0.2, 0.6, 0.2, 0.1, 0.3, 0.6]);

test("merging sums the key pieces and averages the query pieces", () => {
  const groups = [{ members: [0] }, { members: [1, 2] }];
  // row {0}: [0.5, 0.25 + 0.25]; row {1,2}: [(0.2 + 0.1) / 2, ((0.6 + 0.2) + (0.3 + 0.6)) / 2]
  close(project(A, 3, groups, false), [0.5, 0.5, 0.15, 0.85]);
});

test("hiding with renormalisation divides each kept row by its kept sum", () => {
  const groups = [{ members: [1] }, { members: [2] }];
  // row 1 keeps [0.6, 0.2] of sum 0.8; row 2 keeps [0.3, 0.6] of sum 0.9
  close(project(A, 3, groups, true), [0.75, 0.25, 1 / 3, 2 / 3]);
  // without renormalising (max over heads) the kept weights stay as they are
  close(project(A, 3, groups, false), [0.6, 0.2, 0.3, 0.6]);
});

test("nothing hidden or merged returns the matrix itself", () => {
  const groups = [{ members: [0] }, { members: [1] }, { members: [2] }];
  assert.equal(project(A, 3, groups, false), A);
});
