// Sub- and superscripts of the measures' help text (static/js/definitions.js formulaNodes), hand-written expectations.
import assert from "node:assert/strict";
import { test } from "node:test";

// Just enough of a document for the module (no page: no embedded definitions).
globalThis.document ??= {
  getElementById: () => null,
  createTextNode: (text) => ({ text }),
  createElement: (tag) => ({ tag, textContent: "" }),
};
const { formulaNodes } = await import("../../static/js/definitions.js");
const html = (s) => formulaNodes(s).map((p) => (p.tag ? `<${p.tag}>${p.textContent}</${p.tag}>` : p.text)).join("");

test("one-letter bases get sub- and superscripts, chained", () => {
  assert.equal(html("α^h_ij · f_h(x_j)"), "α<sup>h</sup><sub>ij</sub> · f<sub>h</sub>(x<sub>j</sub>)");
  assert.equal(html("W_V^h"), "W<sub>V</sub><sup>h</sup>");
  assert.equal(html("Â_{l−1}"), "Â<sub>l−1</sub>");
});

test("identifiers keep their underscores", () => {
  const s = "SciPy's maximum_flow; compute_joint_attention; cls_token";
  assert.equal(html(s), s);
});
