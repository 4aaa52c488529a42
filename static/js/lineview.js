// The line view: two columns of tokens, queries on the left and keys on the right, joined by one line
// per weight above the threshold, its opacity the weight. Several heads of the layer at once, each in
// its own colour (Paul Tol's colour-blind-safe schemes, reading.PALETTES). Hovering a token (or moving
// to it with the arrow keys) keeps only its lines. Drawn on a canvas: lines are stroked in one path
// per head and opacity step. PNG (2x) and SVG exports are drawn from the same line list.
//
// For tests and tools the canvas carries what it drew: `canvas.lineList` (every line above the
// threshold, {head, q, k, w}), `canvas.drawnLines` (those drawn now) and data-line-count / data-drawn.

import { AltTable } from "./alttext.js";
import { gridMatrix, groupsOf } from "./derive.js";
import { $ } from "./dom.js";
import { download, downloadCanvas } from "./exporter.js";
import { t } from "./i18n.js";
import { FONT, shortLabel } from "./plotly-theme.js";
import { headStyle, lineGeometry, lineList, linesOf, linesSvg } from "./reading.js";
import { cssVar } from "./theme.js";

export const MAX_TOKENS = 512; // past this the columns would be taller than a canvas may be
const ALPHA_STEPS = 32;

export class LineView {
  /** @param {import("./tooltip.js").Tooltip} tooltip */
  constructor(tooltip) {
    this.tooltip = tooltip;
    this.canvas = $("lv-canvas");
    this.headsBox = $("lv-heads");
    this.thresholdInput = $("lv-threshold");
    this.message = $("lv-message");
    this.alt = new AltTable($("lv-alt"));
    this.heads = null; // selected head indices; null until the first show (then the state's head)
    this.threshold = Number(this.thresholdInput.value);
    this.focus = null; // {side: "q"|"k", i}
    this.lines = [];
    this.key = "";
    this.thresholdInput.addEventListener("input", () => {
      const v = Number(this.thresholdInput.value);
      if (Number.isFinite(v) && v >= 0 && v < 1) {
        this.threshold = v;
        this.refresh();
      }
    });
    $("lv-all").addEventListener("click", () => this.setHeads([...Array(this.headCount).keys()]));
    $("lv-one").addEventListener("click", () => this.setHeads([]));
    this.headsBox.addEventListener("change", () => {
      const picked = [...this.headsBox.querySelectorAll("input:checked")].map((el) => Number(el.value));
      this.setHeads(picked);
    });
    const c = this.canvas;
    c.addEventListener("mousemove", (ev) => this.onMove(ev));
    c.addEventListener("mouseleave", () => {
      this.tooltip.hide();
      this.setFocus(null);
    });
    c.addEventListener("keydown", (ev) => this.onKey(ev));
    c.addEventListener("blur", () => this.setFocus(null));
  }

  get headCount() {
    return this.run?.tensor.heads ?? 0;
  }

  /** The view interface (views.js). */
  show(run, state) {
    this.run = run;
    this.state = state;
    if (this.heads === null || this.runId !== run.id) {
      if (this.heads === null) this.heads = [state.head];
      this.heads = this.heads.filter((h) => h < run.tensor.heads);
      this.runId = run.id;
    }
    this.buildHeadBoxes(run.tensor.heads);
    this.refresh();
  }

  hide() {
    this.tooltip.hide();
  }

  setHeads(heads) {
    this.heads = [...new Set(heads)].sort((a, b) => a - b);
    this.syncHeadBoxes();
    this.refresh();
  }

  /** One checkbox per head of the model, with its colour. */
  buildHeadBoxes(count) {
    const theme = document.documentElement.dataset.theme ?? "light";
    const key = `${count}:${theme}`;
    if (this.boxesKey !== key) {
      this.boxesKey = key;
      const nodes = [];
      for (let h = 0; h < count; h++) {
        const label = document.createElement("label");
        label.className = "lv-head";
        const box = document.createElement("input");
        box.type = "checkbox";
        box.value = String(h);
        const swatch = document.createElement("i");
        const style = headStyle(h, theme);
        swatch.style.borderColor = style.color;
        swatch.style.borderStyle = style.dash.length ? "dashed" : "solid";
        const text = document.createElement("span");
        text.textContent = t("lines.head", { head: h });
        label.append(box, swatch, text);
        nodes.push(label);
      }
      this.headsBox.replaceChildren(...nodes);
    }
    this.syncHeadBoxes();
  }

  syncHeadBoxes() {
    for (const box of this.headsBox.querySelectorAll("input")) box.checked = this.heads.includes(Number(box.value));
  }

  /** Recompute the lines if what they depend on changed, then draw. */
  refresh() {
    const run = this.run;
    const state = this.state;
    if (!run) return;
    const groups = groupsOf(run, state);
    const n = groups.length;
    this.groups = groups;
    if (n > MAX_TOKENS) {
      this.message.textContent = t("lines.too_long", { count: n, max: MAX_TOKENS });
      this.message.hidden = false;
      this.canvas.hidden = true;
      this.lines = [];
      return;
    }
    this.message.hidden = true;
    this.canvas.hidden = false;
    const key = [run.id, state.hide, state.merge, state.layer, this.heads.join(","), this.threshold].join(":");
    if (key !== this.key) {
      this.key = key;
      this.lines = lineList((h) => gridMatrix(run, state, state.layer, h), n, this.heads, this.threshold);
      this.canvas.lineList = this.lines;
      this.canvas.dataset.lineCount = String(this.lines.length);
      this.canvas.dataset.heads = this.heads.join(",");
      this.canvas.dataset.layer = String(state.layer);
      this.canvas.dataset.threshold = String(this.threshold);
      const first = this.heads[0] ?? 0;
      this.alt.set({
        key,
        matrix: gridMatrix(run, state, state.layer, first),
        n,
        groups,
        caption: t("alt.caption", { what: t("lines.alt_head", { layer: state.layer, head: first }) }),
      });
      this.canvas.setAttribute("aria-label", t("lines.canvas_label", { layer: state.layer, heads: this.heads.join(", "), count: this.lines.length }));
    }
    this.draw();
  }

  /** Where things go on the canvas for the current tokens. */
  geometry() {
    const n = this.groups.length;
    const ctx = this.canvas.getContext("2d");
    ctx.font = `12px ${FONT}`;
    let widest = 20;
    this.short = this.groups.map((g) => shortLabel(g.label));
    for (const s of this.short) widest = Math.max(widest, ctx.measureText(s).width);
    ctx.font = `600 12px ${FONT}`; // the column headings
    for (const s of [t("lines.queries"), t("lines.keys")]) widest = Math.max(widest, ctx.measureText(s).width);
    const width = Math.max(480, Math.min(900, this.canvas.parentElement.clientWidth - 4));
    return lineGeometry(n, { width, labelPx: Math.ceil(widest), row: n > 64 ? 15 : 20 });
  }

  /** The lines shown: all of them, or those of the focused token. */
  shownLines() {
    return this.focus ? linesOf(this.lines, this.focus.side, this.focus.i) : this.lines;
  }

  draw() {
    const t0 = performance.now();
    const g = this.geometry();
    this.geom = g;
    const dpr = window.devicePixelRatio || 1;
    const c = this.canvas;
    c.width = Math.round(g.width * dpr);
    c.height = Math.round(g.height * dpr);
    c.style.width = `${g.width}px`;
    c.style.height = `${g.height}px`;
    const drawn = this.paint(c.getContext("2d"), g, dpr);
    c.drawnLines = drawn;
    c.dataset.drawn = String(drawn.length);
    c.dataset.drawMs = (performance.now() - t0).toFixed(1);
  }

  /** Draw onto `ctx` at `scale` (device pixels per CSS pixel); returns the lines drawn. */
  paint(ctx, g, scale) {
    const theme = document.documentElement.dataset.theme ?? "light";
    const text = cssVar("--text", "#334155");
    const ink = cssVar("--ink", "#0f172a");
    const muted = cssVar("--muted", "#5b6678");
    ctx.setTransform(scale, 0, 0, scale, 0, 0);
    ctx.fillStyle = cssVar("--card", "#ffffff");
    ctx.fillRect(0, 0, g.width, g.height);
    ctx.fillStyle = muted;
    ctx.font = `600 12px ${FONT}`;
    ctx.textBaseline = "alphabetic";
    ctx.textAlign = "right";
    ctx.fillText(t("lines.queries"), g.leftX, 16);
    ctx.textAlign = "left";
    ctx.fillText(t("lines.keys"), g.rightX, 16);
    // Lines: one path per head and opacity step.
    const lines = this.shownLines();
    const byHead = new Map();
    for (const l of lines) {
      if (!byHead.has(l.head)) byHead.set(l.head, Array.from({ length: ALPHA_STEPS + 1 }, () => []));
      byHead.get(l.head)[Math.max(1, Math.round(Math.min(1, l.w) * ALPHA_STEPS))].push(l);
    }
    ctx.lineWidth = 2;
    const x0 = g.leftX + 4;
    const x1 = g.rightX - 4;
    for (const [head, buckets] of byHead) {
      const style = headStyle(head, theme);
      ctx.strokeStyle = style.color;
      ctx.setLineDash(style.dash);
      buckets.forEach((bucket, step) => {
        if (!bucket.length) return;
        ctx.globalAlpha = step / ALPHA_STEPS;
        ctx.beginPath();
        for (const l of bucket) {
          ctx.moveTo(x0, g.y(l.q));
          ctx.lineTo(x1, g.y(l.k));
        }
        ctx.stroke();
      });
    }
    ctx.globalAlpha = 1;
    ctx.setLineDash([]);
    // Labels: the focused one bold, special tokens muted.
    ctx.textBaseline = "middle";
    this.short.forEach((label, i) => {
      for (const side of ["q", "k"]) {
        const focused = this.focus && this.focus.side === side && this.focus.i === i;
        ctx.font = `${focused ? "700 " : ""}12px ${FONT}`;
        ctx.fillStyle = focused ? ink : this.groups[i].special ? muted : text;
        ctx.textAlign = side === "q" ? "right" : "left";
        ctx.fillText(label, side === "q" ? g.leftX : g.rightX, g.y(i));
      }
    });
    return lines;
  }

  setFocus(focus) {
    const same = (a, b) => (a === null && b === null) || (a && b && a.side === b.side && a.i === b.i);
    if (same(focus, this.focus)) return;
    this.focus = focus;
    this.canvas.dataset.focus = focus ? `${focus.side}${focus.i}` : "";
    if (this.geom) this.draw();
  }

  /** The token under the mouse (left half: queries, right half: keys). */
  onMove(ev) {
    const g = this.geom;
    if (!g) return;
    const r = this.canvas.getBoundingClientRect();
    const x = ev.clientX - r.left;
    const y = ev.clientY - r.top;
    const i = Math.floor((y - g.top) / g.row);
    const side = x < g.width / 2 ? "q" : "k";
    const nearLabel = side === "q" ? x <= g.leftX + 6 : x >= g.rightX - 6;
    if (i < 0 || i >= this.groups.length || !nearLabel) {
      this.tooltip.hide();
      return this.setFocus(null);
    }
    this.setFocus({ side, i });
    const mine = linesOf(this.lines, side, i);
    const top = [...mine].sort((a, b) => b.w - a.w).slice(0, 3);
    const other = (l) => this.groups[side === "q" ? l.k : l.q].label;
    this.tooltip.show(
      [this.groups[i].label, ...top.map((l) => `${t("lines.head", { head: l.head })} · ${other(l)}: ${l.w.toFixed(3)}`)],
      ev.clientX,
      ev.clientY,
    );
  }

  /** Up/Down move the focused token, Left/Right change column, Escape shows every line again. */
  onKey(ev) {
    if (!this.groups || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const n = this.groups.length;
    const f = this.focus ?? { side: "q", i: -1 };
    let next;
    if (ev.key === "ArrowDown") next = { side: f.side, i: Math.min(n - 1, f.i + 1) };
    else if (ev.key === "ArrowUp") next = { side: f.side, i: Math.max(0, f.i - 1) };
    else if (ev.key === "ArrowLeft") next = { side: "q", i: Math.max(0, f.i) };
    else if (ev.key === "ArrowRight") next = { side: "k", i: Math.max(0, f.i) };
    else if (ev.key === "Escape") next = null;
    else return;
    ev.preventDefault();
    this.setFocus(next);
  }

  exportPng(stem) {
    const g = this.geom ?? this.geometry();
    const out = document.createElement("canvas");
    out.width = g.width * 2;
    out.height = g.height * 2;
    this.paint(out.getContext("2d"), g, 2);
    return downloadCanvas(out, `${stem}.png`);
  }

  /** The SVG document of what is drawn (the same lines as the canvas). */
  svg() {
    const g = this.geom ?? this.geometry();
    return linesSvg({
      lines: this.shownLines(),
      labels: this.short,
      geometry: g,
      theme: document.documentElement.dataset.theme ?? "light",
      title: t("lines.svg_title", { model: this.run.resp.model, layer: this.state.layer, heads: this.heads.join(", ") }),
      colors: { bg: cssVar("--card", "#ffffff"), text: cssVar("--text", "#334155") },
    });
  }

  exportSvg(stem) {
    download(new Blob([this.svg()], { type: "image/svg+xml" }), `${stem}.svg`);
  }
}
