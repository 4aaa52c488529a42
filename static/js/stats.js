// The head statistics tab: a layers x heads heatmap of one statistic from /api/stats, and a sortable
// table of every statistic beside it. Clicking a cell (or a row's button) opens that head.

import { getStats } from "./api.js";
import { RequestCache } from "./cache.js";
import { plotlyScale } from "./colors.js";
import { DEFAULT_STAT, STATS } from "./definitions.js";
import { $ } from "./dom.js";
import * as exporter from "./exporter.js";
import { t } from "./i18n.js";
import { MatrixPlot } from "./matrixplot.js";

// The statistics (id, name, short, unit, help) come from the server's definitions (definitions.js).

const fmt = (v) => (v == null ? "—" : v.toFixed(3));

export class StatsView {
  /**
   * @param {import("./tooltip.js").Tooltip} tooltip
   * @param {(layer: number, head: number) => void} onOpen open a head in the head view
   * @param {(stat: string) => void} onPick the picker changed
   */
  constructor(tooltip, onOpen, onPick) {
    this.panel = $("stats-view");
    this.picker = $("stat");
    this.help = $("stat-help");
    this.message = $("stats-message");
    this.caption = $("stats-caption");
    this.table = $("stats-table");
    this.plot = new MatrixPlot($("stats-plot"), tooltip);
    this.onOpen = onOpen;
    this.cache = new RequestCache(8); // request key -> Promise<response>
    this.resp = null;
    this.sort = { key: "layer", dir: 1 };
    this.rows = [];
    this.selected = { layer: 0, head: 0 };
    for (const s of STATS) this.picker.append(new Option(s.name, s.id));
    this.picker.addEventListener("change", () => onPick(this.picker.value));
    this.buildHead();
    this.table.tBodies[0].addEventListener("click", (ev) => {
      const b = ev.target.closest("button[data-layer]");
      if (b) this.onOpen(Number(b.dataset.layer), Number(b.dataset.head));
    });
  }

  buildHead() {
    const tr = document.createElement("tr");
    const cols = [{ id: "layer", short: t("stats.head_col"), name: t("stats.head_col_name") }, ...STATS];
    for (const c of cols) {
      const th = document.createElement("th");
      th.scope = "col";
      th.dataset.key = c.id;
      const b = document.createElement("button");
      b.type = "button";
      b.className = "sort";
      b.textContent = c.short;
      b.title = t("stats.sort_by", { name: c.name.toLowerCase() });
      b.addEventListener("click", () => this.sortBy(c.id));
      th.append(b);
      tr.append(th);
    }
    this.table.tHead.replaceChildren(tr);
    this.syncSortHeader();
  }

  /** Sort by a column: a second click on the same column reverses; statistics start largest first. */
  sortBy(key) {
    if (this.sort.key === key) this.sort.dir = -this.sort.dir;
    else this.sort = { key, dir: key === "layer" ? 1 : -1 };
    this.syncSortHeader();
    this.renderBody();
  }

  syncSortHeader() {
    for (const th of this.table.tHead.rows[0].cells) {
      const on = th.dataset.key === this.sort.key;
      th.setAttribute("aria-sort", on ? (this.sort.dir > 0 ? "ascending" : "descending") : "none");
      th.firstChild.dataset.dir = on ? (this.sort.dir > 0 ? "asc" : "desc") : "";
    }
  }

  setStatus(status, message = "") {
    this.panel.dataset.status = status; // "loading" | "ready" | "error": for tests and styling
    this.message.textContent = message;
    this.message.hidden = !message;
    this.message.classList.toggle("error", status === "error");
  }

  /**
   * The view interface (views.js): the statistics of the run's request (fetched once per text, pair,
   * model and truncation), the state's statistic picked and its layer and head marked.
   */
  async show(run, state) {
    const request = run.request;
    const { stat, scale } = state;
    const selected = { layer: state.layer, head: state.head };
    const key = JSON.stringify([request.text, request.pair, request.model, request.truncate]);
    const pending = this.cache.get(key, () => getStats(request));
    if (!this.resp || this.resp.key !== key) this.setStatus("loading", t("stats.loading"));
    let resp;
    try {
      resp = await pending;
    } catch (err) {
      this.setStatus("error", t("stats.failed", { detail: err.detail || err.message || err }));
      throw Object.assign(err, { shown: true });
    }
    if (!this.resp || this.resp.key !== key) {
      this.resp = { key, data: resp };
      this.rows = [];
      resp.layers.forEach((l, li) =>
        resp.heads.forEach((h, hi) => {
          const row = { layer: l, head: h };
          for (const s of STATS) row[s.id] = resp.stats[s.id] ? resp.stats[s.id][li][hi] : null;
          this.rows.push(row);
        }),
      );
    }
    for (const opt of this.picker.options) opt.disabled = !resp.stats[opt.value];
    const pick = resp.stats[stat] ? stat : DEFAULT_STAT;
    this.picker.value = pick;
    this.selected = selected;
    const info = STATS.find((s) => s.id === pick);
    this.help.textContent = info.help;
    this.caption.textContent = t("stats.caption", { model: resp.model, tokens: resp.tokens.length, layers: resp.layers.length, heads: resp.heads.length });
    await this.draw(resp, info, scale);
    this.renderBody();
    this.setStatus("ready");
  }

  async draw(resp, info, scale) {
    const z = resp.stats[info.id];
    let lo = Infinity;
    let hi = -Infinity;
    for (const row of z) for (const v of row) (lo = Math.min(lo, v)), (hi = Math.max(hi, v));
    if (!(hi > lo)) hi = lo + 1e-6;
    const rows = resp.layers.map((l) => ({ label: `L${l}`, special: false, unknown: false }));
    const cols = resp.heads.map((h) => ({ label: `H${h}`, special: false, unknown: false }));
    const width = Math.max(300, Math.min(520, this.plot.el.clientWidth || 420));
    const cellPx = (width - 120) / resp.heads.length; // less the margins and colour bar
    const li = resp.layers.indexOf(this.selected.layer);
    const hi_ = resp.heads.indexOf(this.selected.head);
    const shapes =
      li >= 0 && hi_ >= 0
        ? [{ type: "rect", xref: "x", yref: "y", x0: hi_ - 0.5, x1: hi_ + 0.5, y0: li - 0.5, y1: li + 0.5, line: { color: "#f59e0b", width: 2.5 } }]
        : [];
    await this.plot.draw({
      z,
      rows,
      cols,
      zmin: lo,
      zmax: hi,
      colorscale: plotlyScale(scale),
      title: t("stats.plot_title", { name: info.name }),
      colorbar: info.unit || t("stats.share"),
      width,
      height: 96 + 40 * resp.layers.length,
      xTitle: t("stats.head"),
      yTitle: t("stats.layer"),
      tickAngle: 0,
      trace: {
        xgap: 2,
        ygap: 2,
        // Values in the cells when they fit; the tooltip and the table have them anyway.
        texttemplate: cellPx >= 25 ? "%{z:.2f}" : "",
        textfont: { size: cellPx >= 32 ? 10 : 9 },
      },
      layout: { shapes },
      hover: (r, c, v) => [
        t("stats.hover", { layer: resp.layers[r], head: resp.heads[c], name: info.name.toLowerCase(), value: `${v.toFixed(3)}${info.unit ? ` ${info.unit}` : ""}` }),
        t("grid.open"),
      ],
      onClick: (r, c) => this.onOpen(resp.layers[r], resp.heads[c]),
    });
    this.plot.el.dataset.stat = info.id;
  }

  renderBody() {
    const { key, dir } = this.sort;
    const sorted = [...this.rows].sort((a, b) => {
      if (key === "layer") return dir * (a.layer - b.layer || a.head - b.head);
      const x = a[key] ?? -Infinity;
      const y = b[key] ?? -Infinity;
      return dir * (x - y) || a.layer - b.layer || a.head - b.head;
    });
    const pick = this.picker.value;
    const body = sorted.map((r) => {
      const tr = document.createElement("tr");
      if (r.layer === this.selected.layer && r.head === this.selected.head) tr.className = "selected";
      const th = document.createElement("th");
      th.scope = "row";
      const b = document.createElement("button");
      b.type = "button";
      b.className = "link";
      b.dataset.layer = String(r.layer);
      b.dataset.head = String(r.head);
      b.textContent = `L${r.layer} · H${r.head}`;
      b.setAttribute("aria-label", t("stats.open_row", { layer: r.layer, head: r.head }));
      th.append(b);
      tr.append(th);
      for (const s of STATS) {
        const td = document.createElement("td");
        td.textContent = fmt(r[s.id]);
        if (s.id === pick) td.className = "picked";
        tr.append(td);
      }
      return tr;
    });
    this.table.tBodies[0].replaceChildren(...body);
    for (const th of this.table.tHead.rows[0].cells) th.classList.toggle("picked", th.dataset.key === pick);
  }

  hide() {}

  exportPng(stem) {
    return this.plot.downloadPng(stem);
  }

  /** The table as CSV (header first, every statistic of every head). */
  exportCsv(stem) {
    exporter.downloadRows(this.csvRows(), `${stem}.csv`);
  }

  /** The table as CSV rows (header first). */
  csvRows() {
    return [["layer", "head", ...STATS.map((s) => s.id)], ...this.rows.map((r) => [r.layer, r.head, ...STATS.map((s) => r[s.id] ?? "")])];
  }
}
