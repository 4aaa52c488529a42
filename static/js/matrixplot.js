// A small labelled Plotly heatmap for the insight tabs (statistics, compare, explainer).
// Rows are tokens (or layers); columns are tokens, features or heads. Every label passes through
// tickText()/escapePlotly() before Plotly sees it, and hover goes to the text-only tooltip.

import { tickPositions, tickText } from "./heatmap.js";
import { axisBase, FONT, labelPx, PAPER_BG, TEXT_COLOR, TITLE_COLOR } from "./plotly-theme.js";
import { escapePlotly } from "./tokens.js";

const COLORBAR_PX = 64;

/** Rows of a Float32Array (n x m) as arrays, the shape Plotly's heatmap takes. */
export function toRows(matrix, n, m) {
  const z = new Array(n);
  for (let i = 0; i < n; i++) z[i] = Array.from(matrix.subarray(i * m, (i + 1) * m));
  return z;
}

/** Largest |value| of a row-major array of arrays (at least `floor`, so an all-zero matrix still has a range). */
export function absMax(z, floor = 1e-6) {
  let v = floor;
  for (const row of z) for (const x of row) if (Math.abs(x) > v) v = Math.abs(x);
  return v;
}

/** Groups (as tickText() takes them) for a token list: {label, special, unknown}. */
export function tokenGroups(tokens, special = [], labels = null) {
  // label: the text the token covers (the response's labels), raw: the tokenizer's own string
  return tokens.map((t, i) => ({ label: labels?.[i] ?? t, raw: t, special: Boolean(special[i]), unknown: false }));
}

export class MatrixPlot {
  /**
   * @param {HTMLElement} el the plot's container
   * @param {import("./tooltip.js").Tooltip} tooltip
   */
  constructor(el, tooltip) {
    this.el = el;
    this.tooltip = tooltip;
    this.spec = null;
    this.bound = false;
  }

  /**
   * Draw or update in place.
   * @param {{z: number[][], rows: object[], cols: object[]|null, zmin: number, zmax: number, colorscale: Array,
   *          title: string, colorbar?: string, width: number, height?: number, square?: boolean,
   *          xTitle?: string, yTitle?: string, hover?: (row: number, col: number, value: number) => string[],
   *          onClick?: (row: number, col: number) => void, trace?: object, layout?: object, tickAngle?: number}} spec
   *   rows/cols: tick groups; cols null = numbered columns (features). width: the figure's width in px;
   *   square: cells are square (height follows); title/colorbar are plain text (escaped here).
   */
  async draw(spec) {
    this.spec = spec;
    const n = spec.z.length;
    const m = n ? spec.z[0].length : 0;
    const fontPx = Math.max(n, m) > 60 ? 10 : 11;
    const rowText = spec.rows ? labelPx(spec.rows, fontPx) : 20;
    const colText = spec.cols ? labelPx(spec.cols, fontPx) : 10;
    const angle = spec.tickAngle ?? (spec.cols && m > 8 ? -60 : 0);
    const margin = {
      l: Math.round(Math.min(170, 30 + rowText + (spec.yTitle ? 18 : 0))),
      r: spec.colorbar === null ? 12 : (spec.colorbarPx ?? COLORBAR_PX),
      t: spec.title ? 34 : 8,
      b: Math.round(Math.min(170, 26 + (angle ? colText * 0.87 : 14) + (spec.xTitle ? 18 : 0))),
    };
    const plotW = Math.max(80, spec.width - margin.l - margin.r);
    let plotH = spec.height ? spec.height - margin.t - margin.b : plotW;
    if (spec.square) plotH = Math.max(60, Math.round((plotW * n) / Math.max(1, m)));
    plotH = Math.max(40, plotH);
    const axis = (groups, count, px) => {
      const base = axisBase(fontPx, 3);
      if (!groups) return { ...base, tickmode: "auto", nticks: Math.max(2, Math.floor(px / 48)) };
      const vals = tickPositions(0, count - 1, px);
      return { ...base, tickmode: "array", tickvals: vals, ticktext: vals.map((i) => tickText(groups[i])) };
    };
    const trace = {
      type: "heatmap",
      z: spec.z,
      zmin: spec.zmin,
      zmax: spec.zmax,
      colorscale: spec.colorscale,
      hoverinfo: "none",
      showscale: spec.colorbar !== null,
      colorbar: {
        title: { text: escapePlotly(spec.colorbar ?? ""), side: "right" },
        thickness: 10,
        outlinewidth: 0,
        len: 1,
        tickfont: { size: 10 },
        ticklabeloverflow: "allow",
      },
      ...spec.trace,
    };
    const layout = {
      title: spec.title
        ? { text: escapePlotly(spec.title), x: 0, xref: "paper", xanchor: "left", y: 1, yref: "container", yanchor: "top", pad: { t: 8 }, font: { size: 13, color: TITLE_COLOR } }
        : undefined,
      font: { family: FONT, color: TEXT_COLOR, size: 11 },
      margin,
      width: plotW + margin.l + margin.r,
      height: plotH + margin.t + margin.b,
      paper_bgcolor: PAPER_BG,
      plot_bgcolor: PAPER_BG,
      xaxis: { ...axis(spec.cols, m, plotW), tickangle: angle, title: spec.xTitle ? { text: spec.xTitle, standoff: 4, font: { size: 11 } } : undefined },
      yaxis: { ...axis(spec.rows, n, plotH), autorange: "reversed", title: spec.yTitle ? { text: spec.yTitle, standoff: 4, font: { size: 11 } } : undefined },
      dragmode: false,
      ...spec.layout,
    };
    const config = { displayModeBar: false, responsive: false, doubleClick: false };
    await window.Plotly.react(this.el, [trace], layout, config);
    this.bind();
  }

  bind() {
    if (this.bound) return;
    this.bound = true;
    const gd = this.el;
    gd.on("plotly_hover", (ev) => {
      const p = ev.points && ev.points[0];
      const spec = this.spec;
      if (!p || !spec || !spec.hover) return;
      const lines = spec.hover(p.y, p.x, Number(p.z));
      if (lines) this.tooltip.show(lines, ev.event.clientX, ev.event.clientY);
    });
    gd.on("plotly_unhover", () => this.tooltip.hide());
    gd.on("plotly_click", (ev) => {
      const p = ev.points && ev.points[0];
      if (p && this.spec && this.spec.onClick) this.spec.onClick(p.y, p.x);
    });
  }

  /** Remove the figure (the element stays). */
  clear() {
    this.spec = null;
    if (this.el._fullLayout) window.Plotly.purge(this.el);
    this.bound = false;
    this.el.replaceChildren();
  }

  downloadPng(filename) {
    return window.Plotly.downloadImage(this.el, { format: "png", filename, scale: 2 });
  }
}
