// Token labels and the two display options that reshape the matrix: hiding special tokens
// (with row renormalisation) and merging sub-word pieces into words.

const UNK_LABEL = "⟨UNK⟩";

/**
 * The label of one token: the text it shows. An unknown token is marked: ⟨自⟩ when the response's `labels`
 * say which text it replaced (so a run of Chinese characters unknown to an English model still reads
 * 自注意力, each marked), else ⟨UNK⟩. The tokenizer's own string ([UNK]) stays in the tooltip.
 */
export function tokenLabel(text, unknown, raw = text) {
  if (!unknown) return text;
  return text && text !== raw ? `⟨${text}⟩` : UNK_LABEL;
}

/**
 * Escape text for Plotly, which renders a subset of HTML (<b>, <a href>, <br>, entities) in tick
 * labels, titles and hover text. After this, Plotly shows the string literally.
 */
export function escapePlotly(text) {
  return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** True when the tokens look like WordPiece (BERT family): `##` continuations or [CLS]/[SEP]. */
export function isWordPiece(tokens) {
  return tokens.some((t) => t.length > 2 && t.startsWith("##")) || tokens.includes("[CLS]") || tokens.includes("[SEP]");
}

/** Whether token i continues the word of token i-1 (both non-special, same segment). */
function continuesWord(resp, i, wordPiece) {
  // The response's word ids (tokenizer word boundaries; jieba words in Chinese runs; null for
  // punctuation, spaces and special tokens) say it when present.
  if (resp.word_ids) return resp.word_ids[i] != null && resp.word_ids[i] === resp.word_ids[i - 1];
  const tok = resp.tokens[i];
  if (wordPiece) return tok.length > 2 && tok.startsWith("##");
  const cur = resp.offsets[i];
  const prev = resp.offsets[i - 1];
  return Boolean(cur && prev) && cur[0] === prev[1] && cur[1] > cur[0] && !/^[\sĠ▁]/u.test(tok);
}

/** What token i shows: the text it covers (`labels`, when the response has them), else its own string. */
function shownText(resp, i) {
  return resp.labels?.[i] ?? resp.tokens[i];
}

/**
 * The text a piece adds to its word's label. With `labels`, a character split over tokens is whole
 * on the first and "…" on the rest, so a leading "…" of a later piece is dropped; without them, a
 * WordPiece "##" is.
 */
function pieceText(resp, i, wordPiece, unknown) {
  const text = tokenLabel(shownText(resp, i), unknown, resp.tokens[i]);
  if (unknown) return text;
  if (resp.labels) return text.replace(/^…/u, "");
  return wordPiece ? text.slice(2) : text;
}

/**
 * Rows/columns to show: groups of token indices, in order.
 * @param {object} resp API response (tokens, labels, word_ids, offsets, special, unknown, segments)
 * @param {{hideSpecial: boolean, mergeWords: boolean}} options
 * @returns {Array<{members: number[], label: string, raw: string, special: boolean, unknown: boolean, segment: number}>}
 *   label: what is shown (the text covered); raw: the tokenizer's own strings (for tooltips)
 */
export function groupTokens(resp, { hideSpecial, mergeWords }) {
  const wordPiece = isWordPiece(resp.tokens);
  const groups = [];
  let last = -1; // token index that closed the previous group
  for (let i = 0; i < resp.tokens.length; i++) {
    const special = Boolean(resp.special[i]);
    if (hideSpecial && special) {
      last = -1;
      continue;
    }
    const unknown = Boolean(resp.unknown?.[i]);
    const segment = resp.segments?.[i] ?? 0;
    const prev = groups[groups.length - 1];
    if (
      mergeWords && prev && !special && !prev.special && last === i - 1 &&
      prev.segment === segment && continuesWord(resp, i, wordPiece)
    ) {
      prev.members.push(i);
      prev.label += pieceText(resp, i, wordPiece, unknown);
      prev.raw += ` ${resp.tokens[i]}`;
      prev.unknown ||= unknown;
      prev.generated ||= Boolean(resp.generated?.[i]);
    } else {
      const label = tokenLabel(shownText(resp, i), unknown, resp.tokens[i]);
      groups.push({ members: [i], label, raw: resp.tokens[i], special, unknown, segment, generated: Boolean(resp.generated?.[i]) });
    }
    last = i;
  }
  return groups;
}

/**
 * The T x T matrix `a` reshaped to the groups (n x n, Float32Array).
 * Key pieces are summed, query pieces averaged. With `renormalise`, each query row is first divided
 * by its sum over the kept keys, so hidden columns do not leave rows short of 1.
 */
export function project(a, T, groups, renormalise) {
  const n = groups.length;
  if (n === T && !renormalise) return a; // nothing hidden or merged
  const keyGroup = new Int32Array(T).fill(-1);
  groups.forEach((g, gi) => g.members.forEach((t) => (keyGroup[t] = gi)));
  const out = new Float32Array(n * n);
  for (let gq = 0; gq < n; gq++) {
    const members = groups[gq].members;
    const row = gq * n;
    for (const q of members) {
      const base = q * T;
      let factor = 1 / members.length;
      if (renormalise) {
        let sum = 0;
        for (let k = 0; k < T; k++) if (keyGroup[k] >= 0) sum += a[base + k];
        if (sum <= 0) continue;
        factor /= sum;
      }
      for (let k = 0; k < T; k++) {
        const g = keyGroup[k];
        if (g >= 0) out[row + g] += a[base + k] * factor;
      }
    }
  }
  return out;
}
