// The model view: every layer x head as a small canvas heatmap. Canvas, not Plotly: 72 Plotly
// figures take seconds to build, 72 canvases a few milliseconds.

import { lut } from "./colors.js";
import { gridMatrix, groupsOf } from "./derive.js";
import { downloadCanvas } from "./exporter.js";
import { t } from "./i18n.js";
import { GRID_SIZE } from "./longview.js";

const MAX_PIXELS = 160; // canvas side; larger matrices are max-pooled so peaks stay visible

/** Paint an n x n matrix into `canvas` (side min(n, MAX_PIXELS)), values / zmax through the LUT. */
export function paint(canvas, matrix, n, zmax, table) {
  const side = Math.min(n, MAX_PIXELS);
  if (canvas.width !== side) canvas.width = canvas.height = side;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(side, side);
  const px = img.data;
  const inv = zmax > 0 ? 255 / zmax : 0;
  for (let i = 0; i < side; i++) {
    const r0 = Math.floor((i * n) / side);
    const r1 = Math.max(r0 + 1, Math.floor(((i + 1) * n) / side));
    for (let j = 0; j < side; j++) {
      const c0 = Math.floor((j * n) / side);
      const c1 = Math.max(c0 + 1, Math.floor(((j + 1) * n) / side));
      let v = 0;
      for (let r = r0; r < r1; r++) {
        const row = r * n;
        for (let c = c0; c < c1; c++) if (matrix[row + c] > v) v = matrix[row + c];
      }
      const level = Math.min(255, Math.round(v * inv)) * 3;
      const o = (i * side + j) * 4;
      px[o] = table[level];
      px[o + 1] = table[level + 1];
      px[o + 2] = table[level + 2];
      px[o + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
}

function maxOf(m) {
  let v = 0;
  for (let i = 0; i < m.length; i++) if (m[i] > v) v = m[i];
  return v;
}

export class ModelGrid {
  /**
   * @param {HTMLElement} el
   * @param {import("./tooltip.js").Tooltip} tooltip
   * @param {(layer: number, head: number) => void} onOpen
   */
  constructor(el, tooltip, onOpen) {
    this.el = el;
    this.tooltip = tooltip;
    this.onOpen = onOpen;
    this.shape = "";
    this.key = null; // what the cells are painted for
    this.cells = [];
    el.addEventListener("click", (ev) => {
      const cell = ev.target.closest("button.cell");
      if (cell) this.onOpen(Number(cell.dataset.layer), Number(cell.dataset.head));
    });
    el.addEventListener("mousemove", (ev) => {
      const cell = ev.target.closest("button.cell");
      if (!cell) return this.tooltip.hide();
      this.tooltip.show([t("grid.cell", { layer: cell.dataset.layer, head: cell.dataset.head }), t("grid.open")], ev.clientX, ev.clientY);
    });
    el.addEventListener("mouseleave", () => this.tooltip.hide());
  }

  /**
   * The view interface (views.js): repaints when the run or a display option changed, and marks the
   * state's layer and head.
   */
  show(run, state, signal) {
    if (run.long) return this.showLong(run, state, signal);
    const key = [run.id, state.hide, state.merge, state.scale, state.range].join(":");
    if (key !== this.key) {
      this.draw({
        layers: run.resp.layers,
        heads: run.resp.heads,
        n: groupsOf(run, state).length,
        matrixAt: (l, h) => gridMatrix(run, state, l, h),
        scale: state.scale,
        range: state.range,
      });
      this.key = key;
    }
    this.select(state.layer, state.head);
  }

  /**
   * A long input (a run, issue 13): each head's small overview (GRID_SIZE blocks a side, block max)
   * from the server, a few requests at a time, each cell painted as it arrives.
   */
  async showLong(run, state, signal) {
    const key = ["long", run.id, state.scale, state.range].join(":");
    if (key !== this.key) {
      const layers = Array.from({ length: run.tensor.layers }, (_, i) => i);
      const heads = Array.from({ length: run.tensor.heads }, (_, i) => i);
      this.build(layers, heads);
      const table = lut(state.scale);
      const jobs = layers.flatMap((l) => heads.map((h) => [l, h]));
      let next = 0;
      const worker = async () => {
        while (next < jobs.length && !signal?.aborted) {
          const [l, h] = jobs[next++];
          const o = await run.long.overview(l, h, GRID_SIZE, "max");
          if (signal?.aborted) return;
          paint(this.cells[l][h].firstChild, o.matrix, o.n, state.range === "one" ? 1 : maxOf(o.matrix), table);
        }
      };
      await Promise.all(Array.from({ length: 4 }, worker));
      if (signal?.aborted) return;
      this.key = key;
    }
    this.select(state.layer, state.head);
  }

  hide() {
    this.tooltip.hide();
  }

  exportPng(stem) {
    return downloadCanvas(this.composite(), `${stem}.png`);
  }

  build(layers, heads) {
    const shape = `${layers.length}x${heads.length}`;
    if (shape === this.shape) return;
    this.shape = shape;
    this.el.style.setProperty("--heads", String(heads.length));
    const nodes = [document.createElement("div")];
    nodes[0].className = "grid-corner";
    for (const h of heads) {
      const d = document.createElement("div");
      d.className = "grid-col";
      d.textContent = `H${h}`;
      nodes.push(d);
    }
    this.cells = [];
    layers.forEach((l, li) => {
      const label = document.createElement("div");
      label.className = "grid-row";
      label.textContent = `L${l}`;
      nodes.push(label);
      const row = [];
      heads.forEach((h) => {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "cell";
        button.dataset.layer = String(li);
        button.dataset.head = String(h);
        button.setAttribute("aria-label", t("grid.cell_label", { layer: l, head: h }));
        const canvas = document.createElement("canvas");
        canvas.width = canvas.height = 1;
        button.append(canvas);
        nodes.push(button);
        row.push(button);
      });
      this.cells.push(row);
    });
    this.el.replaceChildren(...nodes);
  }

  /**
   * @param {{layers: number[], heads: number[], n: number, matrixAt: (l: number, h: number) => Float32Array,
   *          scale: string, range: "max"|"one"}} spec
   */
  draw(spec) {
    this.build(spec.layers, spec.heads);
    const table = lut(spec.scale);
    this.cells.forEach((row, l) =>
      row.forEach((button, h) => {
        const m = spec.matrixAt(l, h);
        paint(button.firstChild, m, spec.n, spec.range === "one" ? 1 : maxOf(m), table);
      }),
    );
  }

  /** Outline the cell of layer index `layer`, head index `head`. */
  select(layer, head) {
    this.cells.forEach((row, l) => row.forEach((button, h) => button.classList.toggle("selected", l === layer && h === head)));
  }

  /** One PNG-able canvas of the whole grid with layer and head labels. */
  composite() {
    const cell = MAX_PIXELS / 2;
    const gap = 4;
    const pad = 36;
    const rows = this.cells.length;
    const cols = rows ? this.cells[0].length : 0;
    const out = document.createElement("canvas");
    out.width = pad + cols * (cell + gap);
    out.height = pad + rows * (cell + gap);
    const ctx = out.getContext("2d");
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, out.width, out.height);
    ctx.fillStyle = "#334155";
    ctx.font = "13px system-ui, sans-serif";
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.imageSmoothingEnabled = false;
    for (let h = 0; h < cols; h++) ctx.fillText(`H${h}`, pad + h * (cell + gap) + cell / 2, pad / 2);
    this.cells.forEach((row, l) => {
      ctx.fillText(`L${l}`, pad / 2, pad + l * (cell + gap) + cell / 2);
      row.forEach((button, h) => ctx.drawImage(button.firstChild, pad + h * (cell + gap), pad + l * (cell + gap), cell, cell));
    });
    return out;
  }
}
