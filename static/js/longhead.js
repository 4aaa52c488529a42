// The head view of a long input (issue 13): a run's overview of the chosen layer and head, zoomed by
// dragging a box or the scroll wheel (Plotly's own zoom; its ranges become the state's `zoom`, so the
// URL keeps it); once the view spans at most TILE_SPAN tokens a side, the exact tile of that range with
// every token label. A minimap shows where the view is (click to move there) and a search box jumps
// to a token by its text. The arithmetic is in longview.js, the server's run in longrun.js.

import { title } from "./derive.js";
import { $ } from "./dom.js";
import * as exporter from "./exporter.js";
import { lut } from "./colors.js";
import { paint } from "./grid.js";
import { maybe, t } from "./i18n.js";
import {
  clampView, colourTop, edgesOf, findToken, isExact, isFull, maxOf, minimapBox, minimapJump, rangesOf, runHead, searchView,
  viewOfRanges,
} from "./longview.js";
import { groupTokens } from "./tokens.js";

/** Overview side (blocks a side) of the head view and its minimap. */
export const OVERVIEW_SIZE = 256;
const HIGHLIGHT = "#f59e0b";

const sameView = (a, b) => a.q0 === b.q0 && a.q1 === b.q1 && a.k0 === b.k0 && a.k1 === b.k1;
const fmt = (v) => Number(v).toFixed(4); // the API rounds to 4 decimals; long inputs have small weights

/** Token groups of a long run: one per token (hiding and merging do not apply to runs), memoised. */
export function longGroups(run) {
  if (!run.longGroups) run.longGroups = groupTokens(run.resp, { hideSpecial: false, mergeWords: false });
  return run.longGroups;
}

export class LongHead {
  /**
   * @param {import("./heatmap.js").HeadView} headView draws the figure and its labels
   * @param {import("./store.js").Store} store the zoom is state (the URL keeps it)
   * @param {{start: (message: string) => void, stop: () => void}} progress
   */
  constructor(headView, store, progress) {
    this.headView = headView;
    this.store = store;
    this.progress = progress;
    this.bar = $("long-bar");
    this.info = $("long-info");
    this.minimap = $("minimap");
    this.minimapView = $("minimap-view");
    this.searchForm = $("token-search-form");
    this.searchInput = $("token-search");
    this.searchResult = $("token-search-result");
    this.run = null;
    this.view = null; // {q0, q1, k0, k1} shown
    this.shown = null; // what draw() got: {exact, matrix, rows, cols, ...}
    this.found = -1; // the token the last search jumped to
    this.minimapKey = "";
    this.minimap.addEventListener("click", (ev) => this.onMinimap(ev));
    this.searchForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.search(this.searchInput.value);
    });
    this.searchInput.addEventListener("input", () => {
      this.found = -1; // a new query starts from the top
    });
  }

  setActive(active) {
    this.bar.hidden = !active;
  }

  /** The view interface's show() for a run of a long input. */
  async show(run, state, signal) {
    const hv = this.headView;
    if (run !== this.run) {
      this.run = run;
      this.found = -1;
      this.searchResult.textContent = "";
      this.minimapKey = "";
    }
    const long = run.long;
    const T = long.tokens;
    const head = runHead(state.agg, state.head);
    this.info.textContent = t("long.info", { tokens: T, span: OVERVIEW_SIZE });
    if (head === null) {
      // Rollout and the server's measures need every weight of every layer: not for runs.
      hv.setMessage(t("long.agg_unavailable", { measure: maybe(`agg.${state.agg}`) ?? t(`select.${state.agg}`), tokens: T }));
      return;
    }
    const v = clampView(state.zoom, T);
    const slow = !long.cache.has(`o:${state.layer}:${head}:${OVERVIEW_SIZE}:max`);
    if (slow) this.progress.start(t("long.loading", { tokens: T }));
    let overview;
    let tile = null;
    try {
      overview = await long.overview(state.layer, head, OVERVIEW_SIZE, "max");
      if (isExact(v)) tile = await long.tile(state.layer, head, v);
    } finally {
      if (slow) this.progress.stop();
    }
    if (signal?.aborted) return;
    hv.setMessage("");
    this.view = v;
    const drawn = tile ? this.tileView(run, state, tile) : this.overviewView(run, state, overview, v);
    this.shown = tile ? { exact: true, ...tile } : { exact: false, ...overview };
    await hv.draw(drawn);
    this.paintMinimap(overview, state);
    this.placeMinimap(v, T);
    const root = document.getElementById("app");
    root.dataset.longView = tile ? "tile" : "overview";
    root.dataset.longRange = `${v.q0}-${v.q1},${v.k0}-${v.k1}`;
    root.dataset.runId = long.runId; // for tests: the run read (it changes when the server forgot it)
  }

  /** Common parts of both figures. */
  base(run, state, v, extra) {
    const groups = longGroups(run);
    const boundaries = [];
    for (let i = 1; i < groups.length; i++) if (groups[i].segment !== groups[i - 1].segment) boundaries.push(i);
    const shapes = [];
    const f = this.found;
    if (f >= 0 && f >= Math.min(v.q0, v.k0) && f < Math.max(v.q1, v.k1)) {
      // the token found: its row and its column, outlined
      const line = { color: HIGHLIGHT, width: 2 };
      shapes.push({ type: "rect", xref: "x", yref: "y", x0: v.k0 - 0.5, x1: v.k1 - 0.5, y0: f - 0.5, y1: f + 0.5, line });
      shapes.push({ type: "rect", xref: "x", yref: "y", x0: f - 0.5, x1: f + 0.5, y0: v.q0 - 0.5, y1: v.q1 - 0.5, line });
    }
    return {
      n: Math.max(v.q1 - v.q0, v.k1 - v.k0),
      groups,
      boundaries,
      scale: state.scale,
      ranges: rangesOf(v),
      shapes,
      long: true,
      revision: `${run.id}:long:${v.q0}-${v.q1}:${v.k0}-${v.k1}:${f}`,
      zlabel: t("heatmap.colorbar"),
      title: `${title(run, { ...state, hide: false, merge: false })} · ${extra}`,
    };
  }

  overviewView(run, state, o, v) {
    const rows = new Array(o.n);
    for (let i = 0; i < o.n; i++) rows[i] = Array.from(o.matrix.subarray(i * o.n, (i + 1) * o.n));
    const groups = longGroups(run);
    return {
      ...this.base(run, state, v, t("long.title_overview", { blocks: o.n, tokens: o.qBounds.at(-1) })),
      matrix: o.matrix,
      z: rows,
      trace: { x: edgesOf(o.kBounds), y: edgesOf(o.qBounds) }, // uneven blocks, in token coordinates
      zmax: state.range === "one" ? 1 : colourTop(o.matrix),
      zlabel: state.range === "one" ? t("heatmap.colorbar") : t("long.zlabel_clipped"),
      tickformat: ".3~g",
      hover: (p) => {
        const [i, j] = p.pointNumber;
        const [q0, q1, k0, k1] = [o.qBounds[i], o.qBounds[i + 1] - 1, o.kBounds[j], o.kBounds[j + 1] - 1];
        return [
          t("long.hover_block", { q0, q1, k0, k1, value: fmt(p.z) }),
          `${groups[q0].label} … ${groups[q1].label} → ${groups[k0].label} … ${groups[k1].label}`,
          t("long.hover_zoom"),
        ];
      },
    };
  }

  tileView(run, state, tile) {
    const groups = longGroups(run);
    return {
      ...this.base(run, state, tile, t("long.title_tile", { q0: tile.q0, q1: tile.q1 - 1, k0: tile.k0, k1: tile.k1 - 1 })),
      matrix: tile.matrix,
      z: Array.from({ length: tile.rows }, (_, i) => Array.from(tile.matrix.subarray(i * tile.cols, (i + 1) * tile.cols))),
      trace: { x0: tile.k0, dx: 1, y0: tile.q0, dy: 1 },
      zmax: state.range === "one" ? 1 : maxOf(tile.matrix),
      tickformat: ".3~g", // far from the first tokens, weights are small
      hover: (p) => {
        const [i, j] = p.pointNumber;
        const q = groups[tile.q0 + i];
        const k = groups[tile.k0 + j];
        const lines = [`${q.label} → ${k.label}: ${fmt(p.z)}`];
        if (q.raw !== q.label || k.raw !== k.label) lines.push(`${q.raw} → ${k.raw}`);
        lines.push(t("heatmap.hover_pos", { query: tile.q0 + i, key: tile.k0 + j }));
        return lines;
      },
    };
  }

  /** Plotly zoomed (a box dragged, the wheel turned, a double-click): the state's zoom follows. */
  onRelayout(ev) {
    if (!this.run?.long || !ev) return;
    const T = this.run.long.tokens;
    const keys = Object.keys(ev);
    let next;
    if (keys.some((k) => k.endsWith(".autorange"))) next = null;
    else if (keys.some((k) => /^[xy]axis\.range/.test(k))) {
      const full = this.headView.el._fullLayout;
      next = viewOfRanges(full.xaxis.range, full.yaxis.range, T);
      if (isFull(next, T)) next = null;
    } else return;
    const current = clampView(this.store.state.zoom, T);
    const target = next ?? clampView(null, T);
    if (sameView(current, target) && Boolean(this.store.state.zoom) === Boolean(next)) return;
    this.store.setState({ zoom: next });
  }

  /** Jump to the next token whose text contains `query`. */
  search(query) {
    const run = this.run;
    if (!run?.long) return;
    const labels = longGroups(run).map((g) => g.label);
    const i = findToken(labels, query, this.found);
    const box = this.searchResult;
    if (i < 0) {
      box.textContent = query.trim() ? t("long.search_none", { query: query.trim() }) : "";
      box.dataset.found = "-1";
      return;
    }
    this.found = i;
    box.textContent = t("long.search_found", { index: i, tokens: run.long.tokens, label: labels[i] });
    box.dataset.found = String(i);
    const T = run.long.tokens;
    this.store.setState({ zoom: searchView(clampView(this.store.state.zoom, T), i, T) });
  }

  paintMinimap(o, state) {
    const key = `${this.run.id}:${state.layer}:${state.agg}:${state.head}:${state.scale}`;
    if (key === this.minimapKey) return;
    this.minimapKey = key;
    paint(this.minimap, o.matrix, o.n, colourTop(o.matrix), lut(state.scale));
  }

  placeMinimap(v, T) {
    const side = this.minimap.clientWidth || 120;
    const box = minimapBox(v, T, side);
    const s = this.minimapView.style;
    s.left = `${box.left}px`;
    s.top = `${box.top}px`;
    s.width = `${box.width}px`;
    s.height = `${box.height}px`;
  }

  onMinimap(ev) {
    if (!this.run?.long) return;
    const r = this.minimap.getBoundingClientRect();
    const T = this.run.long.tokens;
    const v = minimapJump(clampView(this.store.state.zoom, T), ev.clientX - r.left, ev.clientY - r.top, T, r.width);
    this.store.setState({ zoom: isFull(v, T) ? null : v });
  }

  /** CSV of what is shown: the exact tile (token labels), or the overview (block ranges as labels). */
  exportCsv(stem) {
    const s = this.shown;
    if (!s) return;
    const groups = longGroups(this.run);
    const rows = [];
    if (s.exact) {
      rows.push(["query \\ key", ...Array.from({ length: s.cols }, (_, j) => groups[s.k0 + j].label)]);
      for (let i = 0; i < s.rows; i++) {
        const row = [groups[s.q0 + i].label];
        for (let j = 0; j < s.cols; j++) row.push(s.matrix[i * s.cols + j].toFixed(6));
        rows.push(row);
      }
    } else {
      const span = (b, i) => `${b[i]}-${b[i + 1] - 1}`;
      rows.push(["query \\ key", ...Array.from({ length: s.n }, (_, j) => span(s.kBounds, j))]);
      for (let i = 0; i < s.n; i++) {
        const row = [span(s.qBounds, i)];
        for (let j = 0; j < s.n; j++) row.push(s.matrix[i * s.n + j].toFixed(6));
        rows.push(row);
      }
    }
    exporter.downloadRows(rows, `${stem}.csv`);
  }
}
