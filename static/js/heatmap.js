// The head view: one Plotly heatmap, query tokens down the y axis (reading order), keys along x.
// Axes are numeric positions, so repeated tokens keep their own rows and columns.
//
// The token labels are not Plotly tick labels but HTML text (textContent) laid over the figure:
// Plotly redraws and measures every tick label on each data change, which made a layer or head
// switch at 128 tokens cost about twice as much as drawing the cells. The overlay only changes when
// the tokens, the zoom or the size do. PNG export puts the labels back as Plotly ticks.

import { ApiError } from "./api.js";
import { plotlyScale } from "./colors.js";
import { MEASURES } from "./definitions.js";
import { isPending, shownView } from "./derive.js";
import * as exporter from "./exporter.js";
import { axisBase, FONT, labelPx, shortLabel as short, PAPER_BG, TEXT_COLOR, TITLE_COLOR } from "./plotly-theme.js";
import { t } from "./i18n.js";
import { escapePlotly } from "./tokens.js";
import { LongHead } from "./longhead.js";
import { causalShape } from "./predictions.js";

const MARGIN = { l: 118, r: 24, t: 56, b: 118 }; // l and b are recomputed from the labels
const COLORBAR_PX = 80;
const LABEL_PX = 14; // vertical pixels one tick label needs
const COLOR_UNKNOWN = "#c2410c";
const COLOR_SPECIAL = "#94a3b8";

/** Tick text for Plotly: escaped, shortened, special tokens grey and unknown ones orange. */
export function tickText(group) {
  const text = escapePlotly(short(group.label));
  if (group.unknown) return `<span style="color:${COLOR_UNKNOWN}">${text}</span>`;
  if (group.special) return `<span style="color:${COLOR_SPECIAL}">${text}</span>`;
  if (group.generated) return `<i>${text}</i>`; // written by the model (generate)
  return text;
}

/** Every `step`-th position in [lo, hi] so that labels fit in `px` pixels. */
export function tickPositions(lo, hi, px) {
  const first = Math.max(0, Math.ceil(lo));
  const last = Math.floor(hi);
  const count = last - first + 1;
  if (count <= 0) return [];
  const fit = Math.max(2, Math.floor(px / LABEL_PX));
  const step = Math.max(1, Math.ceil(count / fit));
  const out = [];
  for (let i = Math.ceil(first / step) * step; i <= last; i += step) out.push(i);
  return out;
}

/** The aggregate a head change shows: per-head norms stay norms, anything else becomes one head. */
export const perHead = (agg) => (agg === "norms" ? "norms" : "head");

export class HeadView {
  /**
   * @param {HTMLElement} el container (sized by CSS)
   * @param {import("./tooltip.js").Tooltip} tooltip
   * @param {{progress: {start: (message: string) => void, stop: () => void}, store: import("./store.js").Store}} hooks
   *   progress: shown while a rollout is computed; store: arrow keys change layer and head
   */
  constructor(el, tooltip, { progress, store }) {
    this.el = el;
    this.tooltip = tooltip;
    this.progress = progress;
    this.run = null;
    this.state = null;
    this.view = null;
    this.labelsKey = "";
    this.bound = false;
    this.margin = { ...MARGIN };
    this.fontPx = 12;
    this.angle = -60;
    // Sibling of the Plotly div (Plotly owns its children), positioned over it.
    this.labels = document.createElement("div");
    this.labels.id = `${el.id}-labels`;
    this.labels.className = "tick-labels";
    this.labels.setAttribute("aria-hidden", "true");
    el.after(this.labels);
    el.addEventListener("keydown", (ev) => this.onKey(ev, store));
    this.long = new LongHead(this, store, progress); // long inputs: overview, tiles, minimap, search
  }

  /** The view interface (views.js): the shown matrix of `run` for `state`. */
  async show(run, state, signal) {
    this.run = run;
    this.state = state;
    this.long.setActive(Boolean(run.long));
    if (run.long) return this.long.show(run, state, signal);
    const slow = isPending(run, state);
    if (slow) this.progress.start(state.agg === "rollout" ? t("status.rollout") : t("agg.computing", { measure: t(`agg.${state.agg}`) }));
    let view;
    try {
      view = await shownView(run, state);
    } catch (err) {
      if (signal?.aborted) return;
      // A measure the server refuses (413 past its length bound, 422 for a model without it) is said in
      // place of the heatmap, with the API's detail; the other views and aggregates keep working.
      if (err instanceof ApiError) {
        // catalogue key agg.unavailable (app/i18n/*.json)
        this.setMessage(`${MEASURES[state.agg]?.title ?? state.agg} is not available here (${err.status} · ${err.code}): ${err.detail}`);
        throw Object.assign(err, { shown: true });
      }
      throw err;
    } finally {
      if (slow) this.progress.stop();
    }
    if (signal?.aborted) return; // the state moved on while rollout ran; a newer show() follows
    this.setMessage("");
    await this.draw(view);
  }

  /** Show `text` instead of the heatmap ("" shows the heatmap again). */
  setMessage(text) {
    const box = document.getElementById("heatmap-message");
    if (box) {
      box.textContent = text;
      box.hidden = !text;
    }
    this.el.hidden = Boolean(text);
    this.labels.hidden = Boolean(text);
    this.el.dataset.status = text ? "error" : "ready";
    if (text) this.tooltip.hide();
  }

  hide() {
    this.tooltip.hide();
  }

  exportPng(stem) {
    return this.downloadPng(stem);
  }

  /** CSV of the matrix shown (after hiding and merging), labelled by the groups. */
  async exportCsv(stem) {
    if (this.run.long) return this.long.exportCsv(stem);
    const view = await shownView(this.run, this.state);
    exporter.downloadCsv(view.matrix, view.n, view.groups.map((g) => g.label), `${stem}.csv`);
  }

  /** Arrow keys on the focused heatmap: left/right change head (and show one head), up/down layer. */
  onKey(ev, store) {
    const run = this.run;
    if (!run || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const move = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] }[ev.key];
    if (!move) return;
    ev.preventDefault();
    const { layer, head } = store.state;
    const clamp = (v, n) => Math.min(n - 1, Math.max(0, v));
    const patch = { layer: clamp(layer + move[0], run.tensor.layers) };
    if (move[1]) Object.assign(patch, { head: clamp(head + move[1], run.tensor.heads), agg: perHead(store.state.agg) });
    store.setState(patch);
  }

  /** Room for the longest label: left for the y labels, bottom for the x labels (rotated 60°). */
  fitMargins(groups, fontPx) {
    const text = labelPx(groups, fontPx);
    this.margin = { ...MARGIN, l: Math.round(Math.min(190, 44 + text)), b: Math.round(Math.min(190, 52 + text * 0.87)) };
  }

  /** Side of the square plot area, and the figure size around it, from the container's size. */
  size() {
    const m = this.margin;
    const w = this.el.clientWidth - m.l - m.r - COLORBAR_PX;
    const h = this.el.clientHeight - m.t - m.b;
    const side = Math.max(120, Math.floor(Math.min(w, h)));
    return { side, width: side + m.l + m.r + COLORBAR_PX, height: side + m.t + m.b };
  }

  /**
   * Draw (or update in place) the heatmap.
   * @param {{matrix: Float32Array, n: number, groups: object[], title: string, scale: string, zmax: number,
   *          boundaries: number[]}} view
   *   A long input's view (longhead.js) also gives z (rows), trace (x/y of its cells), ranges (the
   *   token ranges shown), shapes, hover and long: true; n is then the span shown.
   */
  async draw(view) {
    this.view = view;
    const { n, matrix } = view;
    let z = view.z;
    if (!z) {
      z = new Array(n);
      for (let i = 0; i < n; i++) z[i] = Array.from(matrix.subarray(i * n, (i + 1) * n));
    }
    const fontPx = n > 60 ? 10 : 12;
    this.fontPx = fontPx;
    this.angle = n > 12 ? -60 : -30;
    this.fitMargins(view.groups, fontPx);
    const { width, height } = this.size();
    const axis = {
      ...axisBase(fontPx, 4), // invisible 4 px ticks: a gap between labels and cells
      tickmode: "array",
      tickvals: [],
      showticklabels: false, // drawn by renderLabels()
    };
    const shapes = view.boundaries.flatMap((b) => [
      { type: "line", xref: "x", yref: "paper", x0: b - 0.5, x1: b - 0.5, y0: 0, y1: 1, line: { color: "#ef4444", width: 1.5 } },
      { type: "line", yref: "y", xref: "paper", y0: b - 0.5, y1: b - 0.5, x0: 0, x1: 1, line: { color: "#ef4444", width: 1.5 } },
    ]);
    const causal = this.run?.kind === "decoder" ? causalShape(n) : null; // keys after the query: masked
    if (causal) shapes.push(causal);
    const trace = {
      type: "heatmap",
      z, // x and y default to 0..n-1; explicit arrays make Plotly 30% slower at 500 tokens
      zmin: 0,
      zmax: view.zmax,
      colorscale: plotlyScale(view.scale),
      hoverinfo: "none",
      xgap: 0,
      ygap: 0,
      colorbar: {
        title: { text: view.zlabel ?? t("heatmap.colorbar"), side: "right" },
        thickness: 12,
        outlinewidth: 0,
        len: 0.9,
        tickformat: view.tickformat ?? ".2f",
        ticklabeloverflow: "allow",
      },
      ...view.trace,
    };
    const ranges = view.ranges ? { x: { range: view.ranges.x, autorange: false }, y: { range: view.ranges.y, autorange: false } } : { x: {}, y: { autorange: "reversed" } };
    const layout = {
      title: { text: escapePlotly(view.title), x: 0.01, xanchor: "left", font: { size: 15, color: TITLE_COLOR } },
      font: { family: FONT, color: TEXT_COLOR },
      margin: this.margin,
      width,
      height,
      paper_bgcolor: PAPER_BG,
      plot_bgcolor: PAPER_BG,
      xaxis: { ...axis, title: { text: t("heatmap.key_axis"), standoff: this.margin.b - 46 }, ...ranges.x },
      yaxis: { ...axis, title: { text: t("heatmap.query_axis"), standoff: this.margin.l - 40 }, ...ranges.y },
      shapes: view.shapes ? [...shapes, ...view.shapes] : shapes,
      dragmode: "zoom",
      uirevision: view.revision, // keep the zoom while switching layer or head on the same tokens
    };
    const config = {
      displaylogo: false,
      modeBarButtonsToRemove: ["select2d", "lasso2d", "toImage", "autoScale2d"],
      // A long input zooms with the wheel too; a double-click goes back to all of it (longhead.js).
      ...(view.long ? { scrollZoom: true, doubleClick: "autosize" } : {}),
    };
    await window.Plotly.react(this.el, [trace], layout, config);
    this.bind();
    this.renderLabels();
  }

  bind() {
    if (this.bound) return;
    this.bound = true;
    const gd = this.el;
    gd.on("plotly_hover", (ev) => {
      const p = ev.points && ev.points[0];
      if (!p || !this.view) return;
      if (this.view.hover) {
        const lines = this.view.hover(p);
        if (lines) this.tooltip.show(lines, ev.event.clientX, ev.event.clientY);
        return;
      }
      const q = this.view.groups[p.y];
      const k = this.view.groups[p.x];
      if (!q || !k) return;
      const lines = [`${q.label} → ${k.label}: ${Number(p.z).toFixed(3)}`];
      // The tokenizer's own strings, when they read differently from the labels (Ġ, ##, bytes).
      if (q.raw !== q.label || k.raw !== k.label) lines.push(`${q.raw} → ${k.raw}`);
      lines.push(t("heatmap.hover_pos", { query: p.y, key: p.x }));
      if (this.run?.kind === "decoder" && p.x > p.y) lines.push(t("heatmap.causal"));
      this.tooltip.show(
        lines,
        ev.event.clientX,
        ev.event.clientY,
      );
    });
    gd.on("plotly_unhover", () => this.tooltip.hide());
    gd.on("plotly_relayout", (ev) => {
      this.renderLabels();
      if (this.view?.long) this.long.onRelayout(ev);
    });
    let last = "";
    new ResizeObserver(() => {
      const { width, height } = this.size();
      const key = `${width}x${height}`;
      if (!this.view || key === last || !this.el._fullLayout) return;
      last = key;
      window.Plotly.relayout(this.el, { width, height }).then(() => this.renderLabels());
    }).observe(this.el);
  }

  /** The visible tick positions of both axes (thinned to fit), and where the plot area is. */
  geometry() {
    const full = this.el._fullLayout;
    const axes = {};
    for (const name of ["xaxis", "yaxis"]) {
      const ax = full[name];
      const [a, b] = ax.range;
      axes[name] = { ax, vals: tickPositions(Math.min(a, b), Math.max(a, b), ax._length) };
    }
    return axes;
  }

  /**
   * Token labels as HTML text beside the plot area: every token when zoomed in, thinned when zoomed
   * out. Nothing happens unless the tokens, the visible range or the figure's size changed.
   */
  renderLabels() {
    const full = this.el._fullLayout;
    if (!full || !this.view) return;
    const { xaxis, yaxis } = this.geometry();
    const key = [
      this.view.revision, this.fontPx, this.angle, full.width, full.height,
      xaxis.ax._offset, xaxis.ax._length, yaxis.ax._offset, yaxis.ax._length, xaxis.vals.join(","), yaxis.vals.join(","),
    ].join("|"); // prettier-ignore
    if (key === this.labelsKey) return;
    this.labelsKey = key;
    const groups = this.view.groups;
    const line = Math.round(this.fontPx * 1.3);
    const right = full.width - xaxis.ax._offset + 6; // y labels end 6 px left of the cells
    const top = yaxis.ax._offset + yaxis.ax._length + 6; // x labels start 6 px below them
    const nodes = [];
    const label = (i, axis) => {
      const g = groups[i];
      const span = document.createElement("span");
      span.className = `${axis}tick${g.unknown ? " unk" : g.special ? " special" : ""}${g.generated ? " gen" : ""}`;
      span.dataset.pos = String(i);
      span.textContent = short(g.label);
      return span;
    };
    for (const i of yaxis.vals) {
      const span = label(i, "y");
      span.style.right = `${right}px`;
      span.style.top = `${Math.round(yaxis.ax._offset + yaxis.ax.l2p(i) - line / 2)}px`;
      nodes.push(span);
    }
    for (const i of xaxis.vals) {
      const span = label(i, "x");
      // Anchored at its right end, under the column, and turned about that point.
      span.style.right = `${Math.round(full.width - (xaxis.ax._offset + xaxis.ax.l2p(i)))}px`;
      span.style.top = `${top}px`;
      span.style.transform = `rotate(${this.angle}deg)`;
      nodes.push(span);
    }
    const box = this.labels.style;
    box.left = `${this.el.offsetLeft}px`;
    box.top = `${this.el.offsetTop}px`;
    box.width = `${full.width}px`;
    box.height = `${full.height}px`;
    box.fontSize = `${this.fontPx}px`;
    box.lineHeight = `${line}px`;
    this.labels.replaceChildren(...nodes);
  }

  /** The figure with the labels as Plotly ticks (escaped, coloured), for export. */
  exportFigure() {
    const gd = this.el;
    const { xaxis, yaxis } = this.geometry();
    const ticks = (vals) => ({ showticklabels: true, tickvals: vals, ticktext: vals.map((i) => tickText(this.view.groups[i])) });
    return {
      data: gd.data,
      layout: {
        ...gd.layout,
        xaxis: { ...gd.layout.xaxis, ...ticks(xaxis.vals), tickangle: this.angle, title: { ...gd.layout.xaxis.title, standoff: 8 } },
        yaxis: { ...gd.layout.yaxis, ...ticks(yaxis.vals), title: { ...gd.layout.yaxis.title, standoff: 8 } },
      },
    };
  }

  /** Download the plot as PNG (Plotly renders it from the SVG; no request leaves the page). */
  downloadPng(filename) {
    const { width, height } = this.el._fullLayout;
    return window.Plotly.downloadImage(this.exportFigure(), { format: "png", filename, scale: 2, width, height });
  }
}
