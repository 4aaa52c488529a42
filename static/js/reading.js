// Pure logic of the reading views (text view, line view, the text alternative) and of the theme's
// contrast check: no DOM here, so node's test runner covers it (tests/js/reading.test.mjs).

/** Weights of the `n` x `n` row-major matrix from token `sel` to every key ("from"), or from every query to `sel` ("to"). */
export function weightsOf(matrix, n, sel, direction) {
  const out = new Float32Array(n);
  if (sel < 0 || sel >= n) return out;
  if (direction === "to") for (let q = 0; q < n; q++) out[q] = matrix[q * n + sel];
  else out.set(matrix.subarray(sel * n, sel * n + n));
  return out;
}

/**
 * The rows or columns of the T x T weights that the weights of group `sel` need, for a run that holds
 * no matrix (a long input): the rows of its tokens ("from"), or their columns and, when rows are
 * renormalised over the tokens kept, the columns of the hidden tokens too ("to").
 * @returns {Array<{index: number, axis: "query"|"key"}>}
 */
export function vectorsNeeded(groups, T, sel, direction, renormalise) {
  const members = groups[sel]?.members ?? [];
  if (direction !== "to") return members.map((index) => ({ index, axis: "query" }));
  const need = members.map((index) => ({ index, axis: "key" }));
  if (renormalise) {
    const kept = new Uint8Array(T);
    for (const g of groups) for (const m of g.members) kept[m] = 1;
    for (let i = 0; i < T; i++) if (!kept[i]) need.push({ index: i, axis: "key" });
  }
  return need;
}

/**
 * `weightsOf(project(A, T, groups, renormalise), n, sel, direction)` (tokens.project: query pieces
 * averaged, key pieces summed, each row first divided by its weight on the tokens kept) computed from
 * rows or columns of A only (`vectorsNeeded`), so that no T x T matrix is held. A "to" row's weight on
 * the kept tokens is 1 less its weight on the hidden ones (softmax rows sum to 1).
 * @param {Map<number, Float32Array>} vectors token -> its row ("from") or column ("to"), T long
 */
export function groupWeights(groups, T, sel, direction, vectors, renormalise) {
  const n = groups.length;
  const out = new Float32Array(n);
  const members = groups[sel]?.members ?? [];
  const keyGroup = new Int32Array(T).fill(-1);
  groups.forEach((g, gi) => g.members.forEach((m) => (keyGroup[m] = gi)));
  if (direction !== "to") {
    for (const q of members) {
      const row = vectors.get(q);
      let factor = 1 / members.length;
      if (renormalise) {
        let sum = 0;
        for (let k = 0; k < T; k++) if (keyGroup[k] >= 0) sum += row[k];
        if (sum <= 0) continue;
        factor /= sum;
      }
      for (let k = 0; k < T; k++) if (keyGroup[k] >= 0) out[keyGroup[k]] += row[k] * factor;
    }
    return out;
  }
  const onSel = new Float64Array(T); // each query's weight on the selected group's tokens
  for (const k of members) {
    const col = vectors.get(k);
    for (let q = 0; q < T; q++) onSel[q] += col[q];
  }
  let kept = null;
  if (renormalise) {
    kept = new Float64Array(T).fill(1);
    for (let h = 0; h < T; h++) {
      if (keyGroup[h] >= 0) continue;
      const col = vectors.get(h);
      for (let q = 0; q < T; q++) kept[q] -= col[q];
    }
  }
  for (let g = 0; g < n; g++) {
    const ms = groups[g].members;
    let v = 0;
    for (const q of ms) {
      if (kept && kept[q] <= 0) continue;
      v += (kept ? onSel[q] / kept[q] : onSel[q]) / ms.length;
    }
    out[g] = v;
  }
  return out;
}

/** The largest of `values` (at least 1e-6, so it can divide). */
export function maxOf(values) {
  let m = 0;
  for (const v of values) if (v > m) m = v;
  return Math.max(m, 1e-6);
}

/** "#rrggbb" -> [r, g, b]. */
export function hexRgb(hex) {
  return [1, 3, 5].map((o) => parseInt(hex.slice(o, o + 2), 16));
}

/** WCAG 2 relative luminance of an sRGB colour [r, g, b] in 0..255. */
export function luminance([r, g, b]) {
  const lin = (c) => {
    const s = c / 255;
    return s <= 0.04045 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
  };
  return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
}

/** WCAG 2 contrast ratio of two colours (1..21). */
export function contrast(a, b) {
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
}

/**
 * The shading of weight `w` (0..zmax) through a 256-entry RGB lookup table (colors.lut): the
 * background, and the text colour (black or white) that contrasts more with it.
 * @returns {{rgb: number[], bg: string, fg: string, level: number}}
 */
export function shade(w, zmax, table) {
  const level = Math.max(0, Math.min(255, Math.round((w / zmax) * 255)));
  const rgb = [table[level * 3], table[level * 3 + 1], table[level * 3 + 2]];
  // Black or white, whichever contrasts more: the better one is at least 4.58:1 on any background.
  const fg = contrast(rgb, [0, 0, 0]) >= contrast(rgb, [255, 255, 255]) ? "#000000" : "#ffffff";
  return { rgb, bg: `rgb(${rgb[0]}, ${rgb[1]}, ${rgb[2]})`, fg, level };
}

/**
 * What separates group `i` from the group before it in the text: "" (same word run), " " or "\n",
 * read from the original text between the two tokens' offsets. Groups without offsets (special
 * tokens) are set apart by a space.
 * @param {object} resp the API response (offsets, segments)
 * @param {Array<{members: number[], segment: number}>} groups
 * @param {string[]} texts the submitted texts by segment ([text, pair])
 */
export function separators(resp, groups, texts) {
  return groups.map((g, i) => {
    if (i === 0) return "";
    const prev = groups[i - 1];
    if (prev.segment !== g.segment) return "\n";
    const end = resp.offsets[prev.members[prev.members.length - 1]];
    const start = resp.offsets[g.members[0]];
    if (!end || !start) return " ";
    const gap = (texts[g.segment] ?? "").slice(end[1], start[0]);
    if (gap.includes("\n")) return "\n";
    return gap.length > 0 ? " " : "";
  });
}

/**
 * Split `count` tokens into chunks of about `size`, ending a chunk early at a line break or after
 * sentence-final punctuation so a chunk boundary falls where the text breaks anyway.
 * @returns {Array<[number, number]>} [start, end) ranges
 */
export function chunks(labels, seps, size) {
  const out = [];
  let start = 0;
  for (let i = 1; i <= labels.length; i++) {
    const len = i - start;
    const atBreak = i < labels.length && seps[i] === "\n";
    const sentenceEnd = /[.!?。！？]$/u.test(labels[i - 1] ?? "");
    if (i === labels.length || (len >= size && (atBreak || sentenceEnd)) || len >= size * 2) {
      out.push([start, i]);
      start = i;
    }
  }
  return out;
}

/**
 * The lines of the line view: for each selected head, one line per (query q, key k) with weight
 * above `threshold`. Sorted by head, then query, then key.
 * @param {(head: number) => Float32Array} matrixOf n x n weights of a head
 * @returns {Array<{head: number, q: number, k: number, w: number}>}
 */
export function lineList(matrixOf, n, heads, threshold) {
  const out = [];
  for (const head of heads) {
    const m = matrixOf(head);
    for (let q = 0; q < n; q++) {
      const row = q * n;
      for (let k = 0; k < n; k++) {
        const w = m[row + k];
        if (w > threshold) out.push({ head, q, k, w });
      }
    }
  }
  return out;
}

/** The lines that touch token `i` on `side` ("q": queries, left column; "k": keys, right column). */
export function linesOf(lines, side, i) {
  return lines.filter((l) => l[side] === i);
}

/**
 * Colour-blind-safe colours for heads (Paul Tol's qualitative schemes, personal.sron.nl/~pault):
 * "muted" on a light background, "light" on a dark one. Heads past the ninth reuse a colour with a dash.
 */
export const PALETTES = {
  light: ["#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255", "#AA4499"],
  dark: ["#77AADD", "#EE8866", "#EEDD88", "#FFAABB", "#99DDFF", "#44BB99", "#BBCC33", "#AAAA00", "#DDDDDD"],
};

/** Colour and dash pattern of head `h` (the position in the palette), for canvas and SVG alike. */
export function headStyle(h, theme) {
  const palette = PALETTES[theme] ?? PALETTES.light;
  const round = Math.floor(h / palette.length);
  return { color: palette[h % palette.length], dash: round === 0 ? [] : round === 1 ? [6, 3] : [2, 3] };
}

/**
 * The SVG namespace: a name, never fetched (split so the page check's "no URL in a module" holds).
 */
export const SVG_NS = ["http:", "", "www.w3.org", "2000", "svg"].join("/");

/** Escape text for XML (SVG export). */
export function xmlEscape(text) {
  return String(text).replace(/[<>&"']/g, (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&apos;" })[c]);
}

/**
 * Where the line view puts things: labels of the query column end at `leftX`, those of the key column
 * start at `rightX`; row i is at y = top + (i + 0.5) * row.
 */
export function lineGeometry(n, { width, labelPx, row, top = 28 }) {
  const leftX = labelPx + 8;
  const rightX = width - labelPx - 8;
  return { leftX, rightX, top, row, height: top + n * row + 12, width, y: (i) => top + (i + 0.5) * row };
}

/**
 * The line view as SVG text, built from the same line list the canvas draws.
 * @param {{lines: object[], labels: string[], geometry: object, theme: string, title: string,
 *          colors: {bg: string, text: string}}} spec
 */
export function linesSvg({ lines, labels, geometry: g, theme, title, colors }) {
  const parts = [
    `<svg xmlns="${SVG_NS}" width="${g.width}" height="${g.height}" viewBox="0 0 ${g.width} ${g.height}" font-family="system-ui, sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="${colors.bg}"/>`,
    `<text x="8" y="16" fill="${colors.text}" font-weight="600">${xmlEscape(title)}</text>`,
  ];
  for (const l of lines) {
    const s = headStyle(l.head, theme);
    const dash = s.dash.length ? ` stroke-dasharray="${s.dash.join(" ")}"` : "";
    parts.push(
      `<line x1="${g.leftX + 4}" y1="${g.y(l.q).toFixed(1)}" x2="${g.rightX - 4}" y2="${g.y(l.k).toFixed(1)}" stroke="${s.color}" stroke-opacity="${Math.min(1, l.w).toFixed(3)}" stroke-width="2"${dash} data-head="${l.head}"/>`,
    );
  }
  labels.forEach((label, i) => {
    const y = (g.y(i) + 4).toFixed(1);
    parts.push(`<text x="${g.leftX}" y="${y}" text-anchor="end" fill="${colors.text}">${xmlEscape(label)}</text>`);
    parts.push(`<text x="${g.rightX}" y="${y}" fill="${colors.text}">${xmlEscape(label)}</text>`);
  });
  parts.push("</svg>");
  return parts.join("\n");
}

/**
 * The text alternative of a matrix: for each query, its `k` largest weights (key index and weight),
 * largest first; ties keep the earlier key.
 * @returns {Array<Array<{key: number, w: number}>>}
 */
export function topWeights(matrix, n, k, rows = n) {
  const out = [];
  for (let q = 0; q < rows; q++) {
    const row = [];
    for (let j = 0; j < n; j++) row.push({ key: j, w: matrix[q * n + j] });
    row.sort((a, b) => b.w - a.w || a.key - b.key);
    out.push(row.slice(0, k));
  }
  return out;
}

/**
 * Lay tokens out as wrapped text for export (PNG/SVG of the text view): boxes of `measure(label)`
 * pixels wide, a gap where `seps` has a space, a new line where it has "\n" or the width is full.
 * @returns {{boxes: Array<{x: number, y: number, w: number}>, height: number}}
 */
export function layoutText(labels, seps, measure, { width, line, pad = 4, space = 4 }) {
  const boxes = [];
  let x = 0;
  let y = 0;
  labels.forEach((label, i) => {
    const w = measure(label) + 2 * pad;
    if (i > 0 && seps[i] === "\n") {
      x = 0;
      y += line * 1.5;
    } else if (i > 0 && seps[i] === " ") x += space;
    if (x > 0 && x + w > width) {
      x = 0;
      y += line;
    }
    boxes.push({ x, y, w });
    x += w;
  });
  return { boxes, height: labels.length ? y + line : 0 };
}
