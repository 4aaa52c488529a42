// The "Head types" tab (issue 15): a layers x heads map coloured by each head's strongest detector
// score above a threshold (POST /api/heads), and the heads' similarity as 2-D MDS points coloured by
// layer (POST /api/stats with similarity: true). Clicking a cell or a point opens that head.
// Detector and similarity definitions: app/attention/definitions.py, in the page as definitions.js.
// User-facing strings are English here; their catalogue keys (app/i18n/*.json) are heads.loading,
// heads.failed, heads.none, heads.cell, similarity.loading, similarity.failed, similarity.plot_title,
// similarity.layer (to be read through the page's catalogue once it is wired into the scripts).

import { getHeads, getSimilarity } from "./api.js";
import { RequestCache } from "./cache.js";
import { DETECTORS, measureHelp, setFormula, SIMILARITY } from "./definitions.js";
import { $ } from "./dom.js";
import { FONT, PAPER_BG, TEXT_COLOR, TITLE_COLOR } from "./plotly-theme.js";

/** One colour per detector, in the definitions' order (Tableau 10); heads below the threshold are NONE. */
const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f"];
export const NONE = "none";
export const NONE_COLOR = "#f1f5f9";
export const DEFAULT_THRESHOLD = 0.4;

/** {detector: colour} for the detectors the page knows, in their order. */
export function detectorColors(ids = Object.keys(DETECTORS)) {
  return Object.fromEntries(ids.map((id, i) => [id, PALETTE[i % PALETTE.length]]));
}

/**
 * The strongest detector of layer l, head h: {type, score}, type NONE when no score reaches `threshold`.
 * Detectors whose scores are null (no [CLS]/[SEP] in the input, say) are skipped.
 * @param {Record<string, number[][] | null>} scores detector -> [layer][head]
 */
export function strongest(scores, l, h, threshold) {
  let best = { type: NONE, score: -Infinity };
  for (const [id, m] of Object.entries(scores)) {
    if (!m) continue;
    const v = m[l][h];
    if (v != null && v > best.score) best = { type: id, score: v };
  }
  return best.score >= threshold ? best : { type: NONE, score: best.score };
}

const key = (r) => JSON.stringify([r.text, r.pair, r.model, r.truncate]);
const fmt = (v) => (v == null ? "—" : v.toFixed(3));

export class HeadTypesView {
  /**
   * @param {import("./tooltip.js").Tooltip} tooltip
   * @param {(layer: number, head: number) => void} onOpen open a head in the head view
   */
  constructor(tooltip, onOpen) {
    this.panel = $("heads-view");
    this.map = $("heads-map");
    this.legend = $("heads-legend");
    this.message = $("heads-message");
    this.threshold = $("heads-threshold");
    this.simPlot = $("sim-plot");
    this.simMessage = $("sim-message");
    this.tooltip = tooltip;
    this.onOpen = onOpen;
    this.heads = new RequestCache(4);
    this.similarity = new RequestCache(4);
    this.last = null; // {run, state} last shown, to redraw on a threshold change
    this.simBound = false;
    setFormula($("heads-help"), Object.values(DETECTORS).map((d) => measureHelp(d)).join(" · "));
    setFormula($("sim-help"), measureHelp(SIMILARITY));
    this.threshold.value = String(DEFAULT_THRESHOLD);
    this.threshold.addEventListener("input", () => this.last && this.drawMap(this.last.resp, this.last.state));
    this.map.addEventListener("click", (ev) => {
      const b = ev.target.closest("button[data-layer]");
      if (b) this.onOpen(Number(b.dataset.layer), Number(b.dataset.head));
    });
  }

  setStatus(box, status, message = "") {
    box.dataset.status = status; // "loading" | "ready" | "error": for tests and styling
    box.textContent = message;
    box.hidden = !message;
    box.classList.toggle("error", status === "error");
  }

  /** The view interface (views.js): detector map and similarity plot of the run's input. */
  async show(run, state, signal) {
    const req = run.request;
    const k = key(req);
    const heads = this.heads.get(k, () => getHeads(req));
    const sim = this.similarity.get(k, () => getSimilarity(req));
    if (this.last?.key !== k) {
      this.setStatus(this.message, "loading", "Scoring the heads…");
      this.setStatus(this.simMessage, "loading", "Computing head similarity…");
    }
    const [h, s] = await Promise.allSettled([heads, sim]);
    if (signal?.aborted) return;
    if (h.status === "fulfilled") {
      this.last = { key: k, resp: h.value, state };
      this.setStatus(this.message, "ready");
      this.drawMap(h.value, state);
    } else {
      this.last = null;
      this.map.replaceChildren();
      this.legend.replaceChildren();
      this.setStatus(this.message, "error", `Head types could not be computed: ${h.reason?.detail || h.reason?.message || h.reason}`);
    }
    if (s.status === "fulfilled" && s.value.similarity) {
      this.setStatus(this.simMessage, "ready");
      this.simPlot.hidden = false;
      await this.drawSimilarity(s.value.similarity, state);
    } else {
      this.simPlot.hidden = true;
      const why = s.status === "rejected" ? s.reason?.detail || s.reason?.message || s.reason : "the server gave none";
      this.setStatus(this.simMessage, "error", `Head similarity could not be computed: ${why}`);
    }
    this.panel.dataset.status = h.status === "fulfilled" ? "ready" : "error";
  }

  hide() {
    this.tooltip.hide();
  }

  /** The layers x heads map: one button per head, coloured by its strongest detector. */
  drawMap(resp, state) {
    const threshold = Number(this.threshold.value);
    const ids = Object.keys(resp.scores);
    const colors = detectorColors(ids);
    const names = { ...Object.fromEntries(ids.map((id) => [id, resp.definitions?.[id]?.title ?? id])), [NONE]: `None ≥ ${threshold}` };
    const L = resp.num_layers;
    const H = resp.num_heads;
    this.map.style.setProperty("--heads", String(H));
    const cells = [document.createElement("span")];
    for (let h = 0; h < H; h++) {
      const c = document.createElement("span");
      c.className = "grid-col";
      c.textContent = `H${h}`;
      cells.push(c);
    }
    const used = new Set();
    for (let l = 0; l < L; l++) {
      const row = document.createElement("span");
      row.className = "grid-row";
      row.textContent = `L${l}`;
      cells.push(row);
      for (let h = 0; h < H; h++) {
        const best = strongest(resp.scores, l, h, threshold);
        used.add(best.type);
        const b = document.createElement("button");
        b.type = "button";
        b.className = "type-cell";
        b.dataset.layer = String(l);
        b.dataset.head = String(h);
        b.dataset.detector = best.type;
        b.style.background = best.type === NONE ? NONE_COLOR : colors[best.type];
        b.classList.toggle("selected", l === state.layer && h === state.head);
        b.textContent = best.type === NONE ? "" : String(Math.round(best.score * 100)); // the score in %
        const lines = ids.map((id) => `${names[id]}: ${fmt(resp.scores[id]?.[l]?.[h])}`);
        b.title = `Layer ${l}, head ${h}: ${names[best.type]}\n${lines.join("\n")}`;
        b.setAttribute("aria-label", `Layer ${l}, head ${h}: ${names[best.type]} ${best.type === NONE ? "" : fmt(best.score)}`);
        cells.push(b);
      }
    }
    this.map.replaceChildren(...cells);
    this.legend.replaceChildren(
      ...[...ids, NONE].map((id) => {
        const item = document.createElement("span");
        item.className = "legend-item";
        item.dataset.detector = id;
        item.classList.toggle("unused", !used.has(id));
        const sw = document.createElement("i");
        sw.style.background = id === NONE ? NONE_COLOR : colors[id];
        item.append(sw, document.createTextNode(names[id]));
        return item;
      }),
    );
  }

  /** The 2-D MDS embedding of the heads, coloured by layer; the state's head is ringed. */
  async drawSimilarity(sim, state) {
    const [xs, ys, layers, heads, text] = [[], [], [], [], []];
    sim.embedding.forEach(([x, y], i) => {
      const [l, h] = sim.heads[i];
      xs.push(x);
      ys.push(y);
      layers.push(l);
      heads.push([l, h]);
      text.push(`Layer ${l}, head ${h}`);
    });
    const sel = sim.heads.findIndex(([l, h]) => l === state.layer && h === state.head);
    const traces = [
      {
        type: "scatter",
        mode: "markers",
        x: xs,
        y: ys,
        customdata: heads,
        text,
        hovertemplate: "%{text}<extra></extra>",
        marker: { size: 11, color: layers, colorscale: "Viridis", line: { width: 0.5, color: "#334155" }, colorbar: { title: { text: "layer" }, thickness: 12, dtick: 1 } },
      },
    ];
    if (sel >= 0) {
      traces.push({ type: "scatter", mode: "markers", x: [xs[sel]], y: [ys[sel]], customdata: [heads[sel]], text: [text[sel]], hovertemplate: "%{text}<extra></extra>", marker: { size: 20, color: "rgba(0,0,0,0)", line: { width: 2.5, color: "#f59e0b" } }, showlegend: false });
    }
    const layout = {
      title: { text: "Head similarity (MDS of Jensen–Shannon distances)", x: 0.01, xanchor: "left", font: { size: 14, color: TITLE_COLOR } },
      font: { family: FONT, color: TEXT_COLOR },
      margin: { l: 40, r: 20, t: 40, b: 30 },
      height: 420,
      showlegend: false,
      xaxis: { zeroline: false, showticklabels: false },
      yaxis: { zeroline: false, showticklabels: false, scaleanchor: "x" },
      paper_bgcolor: PAPER_BG,
      plot_bgcolor: PAPER_BG,
    };
    await window.Plotly.react(this.simPlot, traces, layout, { displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d", "toImage"] });
    if (!this.simBound) {
      this.simBound = true;
      this.simPlot.on("plotly_click", (ev) => {
        const p = ev.points?.[0];
        if (p?.customdata) this.onOpen(p.customdata[0], p.customdata[1]);
      });
    }
  }
}
