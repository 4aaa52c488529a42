// The text view: the text as flowing, wrapping text (both segments), each token shaded by its weight
// from the selected token (or, switched, to it) for the layer and head or aggregate chosen above.
// Hover previews a token, click pins it, arrow keys move the pin (Up/Down by line, Home/End).
//
// Long texts: the tokens are grouped in chunks (blocks ending at a line break or a sentence end);
// the browser skips the layout and paint of chunks off screen (content-visibility: auto) and only the
// chunks in view (IntersectionObserver) are shaded; a chunk that scrolls in is shaded then.
// Labels and word grouping are those of the other views (tokens.js through derive.js).
//
// A long input (a run on the server, longrun.js) has no matrix: the view asks the run for the rows
// (from) or columns (to) of the selected token's group (GET /api/runs/{id}/vector, cached per run,
// layer, head, token and axis) and combines them as the short view's grouping does (reading.groupWeights).
// Hovers are asked for after HOVER_MS without moving on; until a vector arrives the old shading stays.

import { AltTable } from "./alttext.js";
import { lut } from "./colors.js";
import { groupsOf, shownView, title } from "./derive.js";
import { $ } from "./dom.js";
import { download, downloadCanvas } from "./exporter.js";
import { maybe, t } from "./i18n.js";
import { FONT } from "./plotly-theme.js";
import { runHead } from "./longview.js";
import {
  chunks, groupWeights, layoutText, maxOf, separators, shade, SVG_NS, vectorsNeeded, weightsOf, xmlEscape,
} from "./reading.js";
import { cssVar } from "./theme.js";

export const CHUNK = 64; // tokens per chunk (about; see reading.chunks)
/** A label that starts with the space it covers (byte-level BPE, SentencePiece): the text breaks before it. */
const SPACE_MARK = /^[\s␣Ġ▁]/u;
export const HOVER_MS = 120; // a long run's hovered token is fetched once the pointer rests this long
const KEPT = 256; // a long run's group weights kept (the tokens hovered and pinned lately)

/** What the text view of a long run shows: the groups of the state's options and a head, no matrix. */
function longView(run, state) {
  const head = runHead(state.agg, state.head);
  if (head === null) {
    const measure = maybe(`agg.${state.agg}`) ?? t(`select.${state.agg}`);
    throw new Error(t("long.agg_unavailable", { measure, tokens: run.long.tokens }));
  }
  const groups = groupsOf(run, state);
  const T = run.long.tokens;
  const hidden = groups.reduce((n, g) => n + g.members.length, 0) < T;
  return {
    matrix: null,
    n: groups.length,
    groups,
    head,
    T,
    renormalise: hidden && head !== "max", // as derive.reshape: max over heads is not row-stochastic
    title: title(run, state),
    revision: `${run.id}:${state.hide}:${state.merge}`,
  };
}

export class TextView {
  /**
   * @param {import("./tooltip.js").Tooltip} tooltip
   * @param {(pin: number, dir: "from"|"to") => void} [onPin] the pinned token (its first token's index) and
   *   direction changed by the user: the page keeps them in the URL
   */
  constructor(tooltip, onPin = () => {}) {
    this.tooltip = tooltip;
    this.onPin = onPin;
    this.computed = new Map(); // a long run's group weights by shade key: {w, zmax}
    this.fetching = new Set(); // shade keys whose vectors are on their way
    this.hoverTimer = null;
    this.el = $("tv-text");
    this.status = $("tv-status");
    this.alt = new AltTable($("tv-alt"));
    this.direction = "from";
    this.pinned = 0;
    this.preview = null;
    this.view = null;
    this.domKey = null; // run and grouping the spans were built for
    this.spans = [];
    this.chunkEls = [];
    this.visible = new Set();
    this.observer = new IntersectionObserver((entries) => this.onIntersect(entries), { root: this.el, rootMargin: "100px 0px" });
    for (const radio of document.querySelectorAll("input[name=tv-dir]")) {
      radio.addEventListener("change", () => {
        if (radio.checked) this.setDirection(radio.value);
      });
    }
    this.el.addEventListener("pointerover", (ev) => {
      const span = ev.target.closest?.(".tv-tok");
      if (!span) return;
      this.preview = Number(span.dataset.i);
      this.applyShading();
      this.showTip(span, ev);
    });
    this.el.addEventListener("pointerleave", () => {
      this.preview = null;
      this.tooltip.hide();
      this.applyShading();
    });
    this.el.addEventListener("click", (ev) => {
      const span = ev.target.closest?.(".tv-tok");
      if (span) this.pin(Number(span.dataset.i));
    });
    this.el.addEventListener("keydown", (ev) => this.onKey(ev));
  }

  /** The view interface (views.js). */
  async show(run, state, signal) {
    const view = run.long ? longView(run, state) : await shownView(run, state);
    if (signal?.aborted) return;
    const oldGroups = this.view?.groups;
    this.view = view;
    this.run = run;
    this.state = state;
    const domKey = `${run.id}:${view.revision}`;
    if (domKey !== this.domKey) {
      // Keep the pinned token across a hide/merge change: the group holding its first token.
      const token = this.runId === run.id ? oldGroups?.[this.pinned]?.members[0] : undefined;
      this.build(run, view);
      this.domKey = domKey;
      this.runId = run.id;
      let pin = token == null ? -1 : view.groups.findIndex((g) => g.members.includes(token));
      if (pin < 0) pin = Math.max(0, view.groups.findIndex((g) => !g.special));
      this.pinned = pin;
      this.preview = null;
      this.computed.clear();
    }
    // A link's (or the history's) pinned token and direction, when they are not the ones shown.
    if (state.pin != null && state.pin !== view.groups[this.pinned]?.members[0]) {
      const at = view.groups.findIndex((g) => g.members.includes(Math.min(state.pin, (run.long?.tokens ?? run.tensor.size) - 1)));
      if (at >= 0) this.pinned = at;
    }
    if (state.dir && state.dir !== this.direction) this.setDirection(state.dir, false);
    if (run.long) document.getElementById("app").dataset.runId = run.long.runId; // for tests, as longhead.js
    this.matrixKey = `${domKey}:${state.agg}:${state.layer}:${state.head}:${state.scale}:${state.range}`;
    this.applyShading();
  }

  hide() {
    this.tooltip.hide();
    clearTimeout(this.hoverTimer);
  }

  /** Spans for the groups, in chunks, with the text's own spaces and line breaks between them. */
  build(run, view) {
    for (const el of this.chunkEls) this.observer.unobserve(el);
    const groups = view.groups;
    const labels = groups.map((g) => g.label);
    this.seps = separators(run.resp, groups, [run.request.text, run.request.pair ?? ""]);
    this.spans = groups.map((g, i) => {
      const span = document.createElement("span");
      span.className = `tv-tok${g.special ? " special" : ""}${g.unknown ? " unk" : ""}`;
      span.id = `tv-t${i}`;
      span.dataset.i = String(i);
      span.setAttribute("role", "option");
      span.setAttribute("aria-selected", "false");
      span.textContent = g.label;
      return span;
    });
    this.chunkEls = chunks(labels, this.seps, CHUNK).map(([a, b], ci) => {
      const div = document.createElement("div");
      div.className = "tv-chunk";
      div.dataset.chunk = String(ci);
      div.dataset.range = `${a}:${b}`;
      div.setAttribute("role", "presentation");
      for (let i = a; i < b; i++) {
        if (i > a && this.seps[i] === "\n") div.append(document.createElement("br"));
        else if (i > a && this.seps[i] === " ") div.append(" ");
        else if (i > a && SPACE_MARK.test(labels[i])) div.append(document.createElement("wbr")); // "␣word": a line may break here
        div.append(this.spans[i]);
      }
      if (b < groups.length && groups[b].segment !== groups[b - 1].segment) div.classList.add("seg-end");
      return div;
    });
    this.visible = new Set();
    this.el.replaceChildren(...this.chunkEls);
    for (const el of this.chunkEls) this.observer.observe(el);
  }

  onIntersect(entries) {
    for (const e of entries) {
      if (e.isIntersecting) this.visible.add(e.target);
      else this.visible.delete(e.target);
    }
    this.applyShading();
  }

  setDirection(direction, user = true) {
    this.direction = direction;
    for (const radio of document.querySelectorAll("input[name=tv-dir]")) radio.checked = radio.value === direction;
    if (user) this.tellPin();
    this.applyShading();
  }

  /** The pin and direction to the page (the URL). */
  tellPin() {
    const token = this.view?.groups[this.pinned]?.members[0];
    if (token != null) this.onPin(token, this.direction);
  }

  pin(i) {
    if (!this.view) return;
    const n = this.view.groups.length;
    this.pinned = Math.max(0, Math.min(n - 1, i));
    this.preview = null;
    this.tellPin();
    this.applyShading();
    const span = this.spans[this.pinned];
    span?.scrollIntoView({ block: "nearest", inline: "nearest" });
  }

  /** The token whose weights are shown: the one hovered, else the pinned one. */
  selected() {
    return this.preview ?? this.pinned;
  }

  /** The weights from (or to) token `sel` (the selection) and the value the darkest shade stands for;
   * null while a long run's vectors are on their way. */
  weights(sel = this.selected()) {
    const { matrix, n } = this.view;
    if (!matrix) return this.computed.get(this.shadeKey(sel)) ?? null;
    const w = weightsOf(matrix, n, sel, this.direction);
    return { w, zmax: this.state.range === "one" ? 1 : maxOf(w) };
  }

  shadeKey(sel) {
    return `${this.matrixKey}:${this.direction}:${sel}`;
  }

  /** A long run: ask for the vectors of group `sel` (now when pinned, after HOVER_MS when hovered), then shade. */
  fetchLong(sel) {
    const key = this.shadeKey(sel);
    const { groups, T, head, renormalise } = this.view;
    const { layer, range } = this.state;
    const { direction } = this;
    const long = this.run.long;
    const go = async () => {
      if (this.shadeKey(this.selected()) !== key || this.computed.has(key) || this.fetching.has(key)) return; // moved on, done or asked
      const need = vectorsNeeded(groups, T, sel, direction, renormalise);
      this.fetching.add(key);
      try {
        const got = await Promise.all(need.map((v) => long.vector(layer, head, v.index, v.axis)));
        const vectors = new Map(need.map((v, i) => [v.index, got[i]]));
        const w = groupWeights(groups, T, sel, direction, vectors, renormalise);
        if (this.computed.size >= KEPT) this.computed.delete(this.computed.keys().next().value);
        this.computed.set(key, { w, zmax: range === "one" ? 1 : maxOf(w) });
      } catch (err) {
        if (this.shadeKey(this.selected()) === key) this.status.textContent = `${err.detail || err.message || err}`;
        return;
      } finally {
        this.fetching.delete(key);
      }
      if (this.run?.long === long) document.getElementById("app").dataset.runId = long.runId; // made again after a 404
      if (this.shadeKey(this.selected()) === key && this.run?.long === long) this.applyShading();
    };
    clearTimeout(this.hoverTimer);
    if (sel === this.pinned) go();
    else this.hoverTimer = setTimeout(go, HOVER_MS);
  }

  /** Shade the chunks in view for the current selection (the others when they scroll in). */
  applyShading() {
    if (!this.view) return;
    const sel = this.selected();
    const key = this.shadeKey(sel);
    const marks = `${key}:${this.pinned}:${this.preview}`;
    const changed = marks !== this.marksKey;
    this.marksKey = marks;
    if (changed) this.mark(sel);
    const current = this.weights(sel);
    if (current) this.paint(key, current);
    else this.fetchLong(sel); // a long run's vectors: paint() when they come
    this.el.dataset.ready = current ? key : ""; // for tests: the shading shown is the selection's
  }

  /** Shade the chunks in view that are not yet shaded for `key`. */
  paint(key, { w, zmax }) {
    this.el.dataset.zmax = String(zmax);
    if (!this.view.matrix) {
      // A long run's text alternative: the largest weights of the one token shown (not every token's).
      const caption = t("alt.caption", { what: this.status.textContent });
      this.alt.set({ key, matrix: w, n: this.view.n, rows: [this.selected()], groups: this.view.groups, caption });
    }
    const table = lut(this.state.scale);
    for (const chunk of this.visible) {
      if (chunk.dataset.shaded === key) continue;
      const [a, b] = chunk.dataset.range.split(":").map(Number);
      for (let i = a; i < b; i++) {
        const s = shade(w[i], zmax, table);
        const span = this.spans[i];
        span.style.backgroundColor = s.bg;
        span.style.color = s.fg;
        span.dataset.w = w[i].toFixed(6);
      }
      chunk.dataset.shaded = key;
    }
  }

  /** Mark the pinned and previewed tokens, and say in the status line what is shown. */
  mark(sel) {
    for (const span of this.el.querySelectorAll(".tv-tok.pinned, .tv-tok.preview")) {
      span.classList.remove("pinned", "preview");
      span.setAttribute("aria-selected", "false");
    }
    const pinned = this.spans[this.pinned];
    if (pinned) {
      pinned.classList.add("pinned");
      pinned.setAttribute("aria-selected", "true");
      this.el.setAttribute("aria-activedescendant", pinned.id);
    }
    if (this.preview != null && this.preview !== this.pinned) this.spans[this.preview]?.classList.add("preview");
    const g = this.view.groups[sel];
    const dir = this.direction === "to" ? t("textview.status_to", { token: g.label, pos: sel }) : t("textview.status_from", { token: g.label, pos: sel });
    const note = this.view.matrix ? [] : [t("textview.long", { tokens: this.view.T })];
    this.status.textContent = [this.view.title, dir, ...note].join(" · ");
    this.el.dataset.selected = String(sel);
    this.el.dataset.pinned = String(this.pinned);
    this.el.dataset.direction = this.direction;
    if (!this.view.matrix) return;
    this.alt.set({ key: this.matrixKey, matrix: this.view.matrix, n: this.view.n, groups: this.view.groups, caption: t("alt.caption", { what: this.view.title }) });
  }

  showTip(span, ev) {
    const i = Number(span.dataset.i);
    const g = this.view.groups[i];
    const pinned = this.view.groups[this.pinned];
    const w = this.weights(this.pinned)?.w[i];
    const value = w == null ? "…" : w.toFixed(this.view.matrix ? 3 : 4); // a long run's weights are small
    const lines = [this.direction === "to" ? `${g.label} → ${pinned.label}: ${value}` : `${pinned.label} → ${g.label}: ${value}`];
    if (g.raw !== g.label) lines.push(g.raw);
    lines.push(t("textview.tip", { pos: i }));
    this.tooltip.show(lines, ev.clientX, ev.clientY);
  }

  onKey(ev) {
    if (!this.view || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const n = this.view.groups.length;
    const i = this.pinned;
    let to = null;
    if (ev.key === "ArrowRight") to = i + 1;
    else if (ev.key === "ArrowLeft") to = i - 1;
    else if (ev.key === "Home") to = 0;
    else if (ev.key === "End") to = n - 1;
    else if (ev.key === "ArrowDown" || ev.key === "ArrowUp") to = this.lineNeighbour(i, ev.key === "ArrowDown" ? 1 : -1);
    if (to == null) return;
    ev.preventDefault();
    this.tooltip.hide();
    this.pin(to);
  }

  /** The token on the next (step 1) or previous (-1) line closest in x to token i. */
  lineNeighbour(i, step) {
    const here = this.spans[i].getBoundingClientRect();
    const x = here.left + here.width / 2;
    let best = null;
    let lineTop = null;
    for (let j = i + step, seen = 0; j >= 0 && j < this.spans.length && seen < 600; j += step, seen++) {
      const r = this.spans[j].getBoundingClientRect();
      const other = step > 0 ? r.top > here.top + here.height / 2 : r.bottom < here.bottom - here.height / 2;
      if (!other) continue;
      if (lineTop == null) lineTop = r.top;
      if (Math.abs(r.top - lineTop) > r.height / 2) break; // past that line
      if (best == null || Math.abs(r.left + r.width / 2 - x) < best.d) best = { j, d: Math.abs(r.left + r.width / 2 - x) };
    }
    return best ? best.j : Math.max(0, Math.min(this.spans.length - 1, i + step));
  }

  // -- export: the same shading, laid out again at a fixed width (every token, not only those in view)

  exportSpec() {
    const { w, zmax } = this.weights() ?? { w: new Float32Array(this.view.n), zmax: 1 };
    const labels = this.view.groups.map((g) => g.label);
    const table = lut(this.state.scale);
    const font = `14px ${FONT}`;
    const ctx = document.createElement("canvas").getContext("2d");
    ctx.font = font;
    const line = 24;
    const width = 900;
    const top = 40;
    const { boxes, height } = layoutText(labels, this.seps, (s) => ctx.measureText(s).width, { width: width - 32, line });
    return { w, zmax, labels, table, font, line, width, top, boxes, height: top + height + 16, title: this.status.textContent };
  }

  exportPng(stem) {
    const s = this.exportSpec();
    const scale = 2;
    const canvas = document.createElement("canvas");
    canvas.width = s.width * scale;
    canvas.height = s.height * scale;
    const ctx = canvas.getContext("2d");
    ctx.scale(scale, scale);
    ctx.fillStyle = cssVar("--card", "#ffffff");
    ctx.fillRect(0, 0, s.width, s.height);
    ctx.fillStyle = cssVar("--ink", "#0f172a");
    ctx.font = `600 14px ${FONT}`;
    ctx.fillText(s.title, 16, 24);
    ctx.font = s.font;
    ctx.textBaseline = "middle";
    s.boxes.forEach((b, i) => {
      const sh = shade(s.w[i], s.zmax, s.table);
      ctx.fillStyle = sh.bg;
      ctx.fillRect(16 + b.x, s.top + b.y, b.w, s.line - 4);
      ctx.fillStyle = sh.fg;
      ctx.fillText(s.labels[i], 16 + b.x + 4, s.top + b.y + (s.line - 4) / 2);
    });
    return downloadCanvas(canvas, `${stem}.png`);
  }

  /** The SVG document of the text view (what exportSvg downloads). */
  svg() {
    const s = this.exportSpec();
    const bg = cssVar("--card", "#ffffff");
    const ink = cssVar("--ink", "#0f172a");
    const parts = [
      `<svg xmlns="${SVG_NS}" width="${s.width}" height="${s.height}" viewBox="0 0 ${s.width} ${s.height}" font-family="system-ui, sans-serif" font-size="14">`,
      `<rect width="100%" height="100%" fill="${bg}"/>`,
      `<text x="16" y="24" fill="${ink}" font-weight="600">${xmlEscape(s.title)}</text>`,
    ];
    s.boxes.forEach((b, i) => {
      const sh = shade(s.w[i], s.zmax, s.table);
      const x = 16 + b.x;
      const y = s.top + b.y;
      parts.push(`<g data-weight="${s.w[i].toFixed(6)}"><rect x="${x.toFixed(1)}" y="${y}" width="${b.w.toFixed(1)}" height="${s.line - 4}" fill="${sh.bg}"/>`);
      parts.push(`<text x="${(x + 4).toFixed(1)}" y="${y + (s.line - 4) / 2}" dominant-baseline="central" fill="${sh.fg}">${xmlEscape(s.labels[i])}</text></g>`);
    });
    parts.push("</svg>");
    return parts.join("\n");
  }

  exportSvg(stem) {
    download(new Blob([this.svg()], { type: "image/svg+xml" }), `${stem}.svg`);
  }
}
