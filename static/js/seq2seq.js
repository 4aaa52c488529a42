// The encoder–decoder tab: the three attentions of a T5/BART/Marian response for the selected layer and head.
//
//   cross    cross-attention, target tokens down × source tokens across (not square): what each target token
//            reads in the source;
//   decoder  the decoder's self-attention, target × target: a causal triangle (nothing above the diagonal);
//   encoder  the encoder's self-attention, source × source (the head view shows the same matrix).
//
// Plain Plotly heatmap with its own tick labels (a response's target is short next to the head view's inputs).

import { plotlyScale } from "./colors.js";
import { $ } from "./dom.js";
import { t } from "./i18n.js";
import { axisBase, FONT, shortLabel as short, TEXT_COLOR, TITLE_COLOR } from "./plotly-theme.js";
import { stackFromResponse } from "./tensor.js";
import { escapePlotly } from "./tokens.js";

/** Each part: the response field, and which tokens run down (rows) and across (columns). */
export const PARTS = {
  cross: { field: "cross_attention", rows: "target", cols: "source" },
  decoder: { field: "decoder_attention", rows: "target", cols: "target" },
  encoder: { field: "attention", rows: "source", cols: "source" },
};

export class Seq2SeqView {
  constructor(tooltip) {
    this.tooltip = tooltip;
    this.el = $("s2s-plot");
    this.part = $("s2s-part");
    this.message = $("s2s-message");
    this.hint = $("s2s-hint");
    this.run = null;
    this.state = null;
    this.stacks = null; // {runId, cross, decoder, encoder}
    this.part.addEventListener("change", () => this.run && this.show(this.run, this.state));
  }

  /** The three stacks of `run`, decoded once per response. */
  stacksOf(run) {
    if (this.stacks?.runId !== run.id) {
      const out = { runId: run.id };
      for (const [name, p] of Object.entries(PARTS)) out[name] = stackFromResponse(run.resp, p.field);
      this.stacks = out;
    }
    return this.stacks;
  }

  tokensOf(resp, which) {
    const labels = which === "target" ? resp.target_labels : resp.labels;
    const special = which === "target" ? resp.target_special : resp.special;
    return labels.map((label, i) => ({ label, special: special[i] }));
  }

  async show(run, state) {
    this.run = run;
    this.state = state;
    const resp = run.resp;
    if (!resp.target_tokens) {
      this.setMessage(t("s2s.not_seq2seq", { model: resp.model }));
      return;
    }
    this.setMessage("");
    const name = this.part.value in PARTS ? this.part.value : "cross";
    const part = PARTS[name];
    const stack = this.stacksOf(run)[name];
    // The decoder may have other layer and head counts than the encoder the sliders follow.
    const layer = Math.min(state.layer, stack.layers - 1);
    const head = Math.min(state.head, stack.heads - 1);
    const layerId = (name === "encoder" ? resp.layers : resp.decoder_layers)[layer];
    const headId = (name === "encoder" ? resp.heads : resp.decoder_heads)[head];
    const rows = this.tokensOf(resp, part.rows);
    const cols = this.tokensOf(resp, part.cols);
    const m = stack.matrix(layer, head);
    const z = new Array(stack.rows);
    for (let i = 0; i < stack.rows; i++) z[i] = Array.from(m.subarray(i * stack.cols, (i + 1) * stack.cols));
    const tick = (g) => {
      const text = escapePlotly(short(g.label));
      return g.special ? `<span style="color:#94a3b8">${text}</span>` : text;
    };
    const hover = z.map((row, i) => row.map((_, j) => `${rows[i].label} → ${cols[j].label}`));
    const fontPx = Math.max(stack.rows, stack.cols) > 60 ? 10 : 12;
    const axis = (tokens) => ({
      ...axisBase(fontPx, 4),
      tickmode: "array",
      tickvals: tokens.map((_, i) => i),
      ticktext: tokens.map(tick),
    });
    const cell = Math.max(10, Math.min(36, Math.floor(640 / Math.max(stack.rows, stack.cols))));
    const margin = { l: 130, r: 90, t: 56, b: 120 };
    const title = t("s2s.title", { part: t(`s2s.part.${name}`), layer: layerId, head: headId });
    this.el.dataset.part = name;
    this.el.dataset.rows = String(stack.rows);
    this.el.dataset.cols = String(stack.cols);
    this.el.dataset.layer = String(layerId);
    this.el.dataset.head = String(headId);
    this.hint.textContent = t(`s2s.hint.${name}`);
    await window.Plotly.react(
      this.el,
      [
        {
          type: "heatmap",
          z,
          zmin: 0,
          zmax: state.range === "one" ? 1 : Math.max(1e-6, ...m),
          colorscale: plotlyScale(state.scale),
          text: hover,
          hovertemplate: "%{text}: %{z:.3f}<extra></extra>",
          colorbar: { title: { text: t("heatmap.colorbar"), side: "right" }, thickness: 12, outlinewidth: 0, tickformat: ".2f" },
        },
      ],
      {
        title: { text: escapePlotly(title), x: 0.01, xanchor: "left", font: { size: 15, color: TITLE_COLOR } },
        font: { family: FONT, color: TEXT_COLOR },
        margin,
        width: margin.l + margin.r + cell * stack.cols,
        height: margin.t + margin.b + cell * stack.rows,
        paper_bgcolor: "#ffffff",
        plot_bgcolor: "#ffffff",
        xaxis: { ...axis(cols), tickangle: cols.length > 12 ? -60 : -30, title: { text: t(`s2s.axis.${part.cols}`) } },
        yaxis: { ...axis(rows), autorange: "reversed", title: { text: t(`s2s.axis.${part.rows}`) } },
      },
      { displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d", "toImage", "autoScale2d"] },
    );
  }

  setMessage(text) {
    this.message.textContent = text;
    this.message.hidden = !text;
    this.el.hidden = Boolean(text);
  }

  hide() {
    this.tooltip.hide();
  }

  exportPng(stem) {
    const { width, height } = this.el._fullLayout;
    return window.Plotly.downloadImage(this.el, { format: "png", filename: stem, scale: 2, width, height });
  }
}
