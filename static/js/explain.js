// The explainer tab: the custom block's forward pass for one head, step by step, with the real
// numbers from /api/explain. Each step is a card: title, formula, one sentence, the learned weights
// it uses (shapes only) and each result matrix as a labelled heatmap.
// Export (views.js exportPng/exportSvg): every step's title and formula, then its matrices (caption and
// figure) one under the other, as one image: SVG with each Plotly figure nested as drawn, PNG at 2x.

import { getExplain } from "./api.js";
import { RequestCache } from "./cache.js";
import { divergingScale, plotlyScale } from "./colors.js";
import { $ } from "./dom.js";
import { download, downloadCanvas } from "./exporter.js";
import { t } from "./i18n.js";
import { absMax, MatrixPlot, tokenGroups } from "./matrixplot.js";
import { FONT } from "./plotly-theme.js";
import { SVG_NS, xmlEscape } from "./reading.js";
import { cssVar } from "./theme.js";

const PAD = 16; // around the image and between parts
const STEP_LINE = 28; // a step's title line
const CAPTION_LINE = 22; // a matrix's caption line

const dims = (shape) => shape.join(" × ");

/** The 99th percentile of |value| (at least 1e-6). */
function robustMax(z) {
  const all = Float32Array.from(z.flat(), Math.abs).sort();
  return Math.max(1e-6, all.length ? all[Math.min(all.length - 1, Math.floor(all.length * 0.99))] : 0);
}

export class ExplainView {
  /**
   * @param {import("./tooltip.js").Tooltip} tooltip
   * @param {(model: string) => void} onSwitch run the current text on `model`
   */
  constructor(tooltip, onSwitch) {
    this.panel = $("explain-view");
    this.gate = $("explain-gate");
    this.gateText = $("explain-gate-text");
    this.switchButton = $("explain-switch");
    this.intro = $("explain-intro");
    this.stepsEl = $("explain-steps");
    this.message = $("explain-message");
    this.tooltip = tooltip;
    this.plots = [];
    this.cache = new RequestCache(16);
    this.shownKey = null;
    this.custom = null;
    this.switchButton.addEventListener("click", () => this.custom && onSwitch(this.custom));
  }

  setStatus(status, message = "") {
    this.panel.dataset.status = status; // "gate" | "loading" | "ready" | "error"
    this.message.textContent = message;
    this.message.hidden = !message;
  }

  /**
   * The view interface (views.js): the custom block's steps for the run's request and the state's
   * head, or a gate when the run's model is not of kind custom.
   */
  async show(run, state) {
    const { request, kind, models } = run;
    const head = Math.min(state.head, run.tensor.heads - 1);
    const { scale } = state;
    const custom = models.find((m) => m.kind === "custom");
    this.custom = custom ? custom.name : null;
    $("selectors").classList.toggle("gated", kind !== "custom");
    if (kind !== "custom") {
      this.gate.hidden = false;
      this.intro.hidden = true;
      this.stepsEl.hidden = true;
      this.gateText.textContent = custom
        ? t("explain.gate", { name: custom.name })
        : t("explain.gate_none");
      this.switchButton.hidden = !custom;
      this.switchButton.textContent = custom ? t("explain.choose") : "";
      this.setStatus("gate");
      return;
    }
    this.gate.hidden = true;
    const key = JSON.stringify([request.text, request.pair, request.model, request.truncate, head]);
    const pending = this.cache.get(key, () => getExplain(request, head));
    if (this.shownKey !== key) this.setStatus("loading", t("explain.loading"));
    let resp;
    try {
      resp = await pending;
    } catch (err) {
      this.setStatus("error", t("explain.failed", { detail: err.detail || err.message || err }));
      throw Object.assign(err, { shown: true });
    }
    if (this.shownKey !== `${key}:${scale}`) {
      await this.draw(resp, scale);
      this.shownKey = `${key}:${scale}`;
    }
    this.setStatus("ready");
  }

  hide() {}

  /**
   * What the export draws, laid out: {width, height, texts: [{x, y, text, bold}], plots: [{x, y, w, h, el}]}
   * (CSS px); null when no steps are drawn (the gate, an error).
   */
  exportLayout() {
    if (this.panel.dataset.status !== "ready" || this.stepsEl.hidden || !this.plots.length) return null;
    const texts = [];
    const plots = [];
    let y = PAD;
    let width = 0;
    for (const card of this.stepsEl.querySelectorAll("li.step")) {
      const num = card.querySelector(".step-num")?.textContent ?? "";
      const title = card.querySelector("h3")?.textContent ?? "";
      const formula = card.querySelector(".formula")?.textContent ?? "";
      texts.push({ x: PAD, y: y + STEP_LINE / 2, text: `${num}. ${title}   ${formula}`, bold: true });
      y += STEP_LINE;
      for (const fig of card.querySelectorAll("figure")) {
        const el = fig.querySelector(".mplot");
        const layout = el?._fullLayout;
        if (!layout) continue;
        const caption = [...fig.querySelectorAll("figcaption span")].map((sp) => sp.textContent).join("  ");
        texts.push({ x: PAD, y: y + CAPTION_LINE / 2, text: caption, bold: false });
        y += CAPTION_LINE;
        plots.push({ x: PAD, y, w: layout.width, h: layout.height, el });
        width = Math.max(width, layout.width);
        y += layout.height + PAD / 2;
      }
      y += PAD / 2;
    }
    return { width: Math.ceil(width + 2 * PAD), height: Math.ceil(y + PAD / 2), texts, plots };
  }

  /** The SVG document of the walkthrough (what exportSvg downloads); null when nothing is drawn. */
  async svg() {
    const lay = this.exportLayout();
    if (!lay) return null;
    const ink = cssVar("--ink", "#0f172a");
    const parts = [
      `<svg xmlns="${SVG_NS}" width="${lay.width}" height="${lay.height}" viewBox="0 0 ${lay.width} ${lay.height}" font-family="system-ui, sans-serif" font-size="13">`,
      `<rect width="100%" height="100%" fill="${cssVar("--card", "#ffffff")}"/>`,
    ];
    for (const tx of lay.texts) {
      const weight = tx.bold ? ' font-weight="600" font-size="14"' : "";
      parts.push(`<text x="${tx.x}" y="${tx.y}" dominant-baseline="central" fill="${ink}"${weight}>${xmlEscape(tx.text)}</text>`);
    }
    for (const p of lay.plots) {
      const url = await window.Plotly.toImage(p.el, { format: "svg", width: p.w, height: p.h });
      const doc = decodeURIComponent(url.slice(url.indexOf(",") + 1)).replace(/^<\?xml[^>]*>\s*/u, "");
      parts.push(doc.replace(/^<svg\b/u, `<svg x="${p.x}" y="${p.y}" data-matrix="${xmlEscape(p.el.dataset.matrix ?? "")}"`));
    }
    parts.push("</svg>");
    return parts.join("\n");
  }

  async exportSvg(stem) {
    const doc = await this.svg();
    if (doc) download(new Blob([doc], { type: "image/svg+xml" }), `${stem}.svg`);
  }

  /** PNG at twice the layout's size: the texts drawn here, each figure rendered by Plotly at scale 2. */
  async exportPng(stem) {
    const lay = this.exportLayout();
    if (!lay) return;
    const scale = 2;
    const canvas = document.createElement("canvas");
    canvas.width = lay.width * scale;
    canvas.height = lay.height * scale;
    const ctx = canvas.getContext("2d");
    ctx.scale(scale, scale);
    ctx.fillStyle = cssVar("--card", "#ffffff");
    ctx.fillRect(0, 0, lay.width, lay.height);
    ctx.fillStyle = cssVar("--ink", "#0f172a");
    ctx.textBaseline = "middle";
    for (const tx of lay.texts) {
      ctx.font = tx.bold ? `600 14px ${FONT}` : `13px ${FONT}`;
      ctx.fillText(tx.text, tx.x, tx.y);
    }
    for (const p of lay.plots) {
      const url = await window.Plotly.toImage(p.el, { format: "png", width: p.w, height: p.h, scale });
      const img = new Image();
      img.src = url;
      await img.decode();
      ctx.drawImage(img, p.x, p.y, p.w, p.h);
    }
    return downloadCanvas(canvas, `${stem}.png`);
  }

  clearPlots() {
    for (const p of this.plots) p.clear();
    this.plots = [];
  }

  async draw(resp, scale) {
    this.clearPlots();
    const T = resp.tokens.length;
    this.intro.hidden = false;
    this.intro.textContent =
      `${t("explain.intro_run", { model: resp.model, tokens: T, head: resp.head, heads: resp.num_heads })} ` +
      t("explain.intro", { embed_size: resp.embed_size, head_size: resp.head_size });
    const tokens = tokenGroups(resp.tokens, resp.special, resp.labels);
    this.stepsEl.hidden = false;
    const width = Math.max(480, (this.stepsEl.clientWidth || this.panel.clientWidth - 24) - 30); // card padding
    const cards = [];
    const jobs = [];
    for (const step of resp.steps) {
      const card = document.createElement("li");
      card.className = "step";
      card.dataset.step = String(step.step);
      card.dataset.key = step.key;
      const head = document.createElement("div");
      head.className = "step-head";
      const num = document.createElement("span");
      num.className = "step-num";
      num.textContent = String(step.step);
      const title = document.createElement("h3");
      title.textContent = step.title;
      const formula = document.createElement("code");
      formula.className = "formula";
      formula.textContent = step.formula;
      head.append(num, title, formula);
      const text = document.createElement("p");
      text.className = "step-text";
      text.textContent = step.explanation;
      card.append(head, text);
      if (step.parameters.length) {
        const params = document.createElement("ul");
        params.className = "params";
        for (const p of step.parameters) {
          const li = document.createElement("li");
          const name = document.createElement("code");
          name.textContent = p.name;
          const shape = document.createElement("span");
          shape.className = "shape";
          shape.textContent = dims(p.shape);
          const desc = document.createElement("span");
          desc.textContent = p.description;
          li.append(name, shape, desc);
          params.append(li);
        }
        card.append(params);
      }
      const figs = document.createElement("div");
      // Narrow matrices (one head's d_k columns, T x T) sit side by side; E-wide ones get a row each.
      const wide = step.matrices.some((m) => m.columns === "features" && m.shape[1] > 64);
      const perRow = wide ? 1 : step.matrices.length;
      figs.className = `step-matrices${wide ? " stacked" : ""}`;
      for (const m of step.matrices) {
        const fig = document.createElement("figure");
        const cap = document.createElement("figcaption");
        const sym = document.createElement("span");
        sym.className = "sym";
        sym.textContent = m.name;
        const label = document.createElement("span");
        label.textContent = m.label;
        const shape = document.createElement("span");
        shape.className = "shape";
        shape.textContent = dims(m.shape);
        cap.append(sym, label, shape);
        const el = document.createElement("div");
        el.className = "mplot";
        el.dataset.step = String(step.step);
        el.dataset.matrix = m.name;
        fig.append(cap, el);
        figs.append(fig);
        jobs.push([el, m, perRow]);
      }
      card.append(figs);
      cards.push(card);
    }
    this.stepsEl.replaceChildren(...cards);
    this.stepsEl.hidden = false;
    for (const [el, m, count] of jobs) {
      const plot = new MatrixPlot(el, this.tooltip);
      this.plots.push(plot);
      await plot.draw(this.spec(m, tokens, scale, Math.floor((width - (count - 1) * 12) / count) - 2));
    }
  }

  /** Plot spec of one matrix: T x T with token labels both ways, or T x features with numbered columns. */
  spec(m, tokens, scale, width) {
    const T = m.shape[0];
    const square = m.columns === "tokens";
    const weights = m.name === "A";
    const z = m.values;
    // A few embedding dimensions are huge outliers: their colour saturates (hover shows the number)
    // so the other 99% are not all drawn white.
    const lim = square ? absMax(z) : robustMax(z);
    const rowPx = T > 40 ? 8 : 16;
    return {
      z,
      rows: tokens,
      cols: square ? tokens : null,
      zmin: weights ? 0 : -lim,
      zmax: weights ? Math.max(1e-6, absMax(z)) : lim,
      colorscale: weights ? plotlyScale(scale) : divergingScale(),
      title: "",
      colorbar: weights ? t("heatmap.colorbar") : t("explain.value"),
      width: square ? Math.min(width, 460) : width,
      square,
      height: square ? undefined : Math.min(460, Math.max(130, T * rowPx + 70)),
      xTitle: square ? t("explain.key_token") : t("explain.feature"),
      hover: (r, c, v) =>
        square
          ? [`${tokens[r].label} → ${tokens[c].label}: ${v.toFixed(4)}`, `${m.name}[${r}, ${c}]`]
          : [t("explain.hover_feature", { token: tokens[r].label, feature: c, value: v.toFixed(4) }), `${m.name}[${r}, ${c}]`],
    };
  }
}
