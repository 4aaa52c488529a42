// The text alternative of a head (or aggregate) for screen readers and anyone who prefers numbers: a
// table of each token's largest weights, in a <details> under the view. Filled when opened (and kept
// in step while open), so a closed one costs nothing at 2,000 tokens.

import { t } from "./i18n.js";
import { topWeights } from "./reading.js";

export const TOP_K = 3;

export class AltTable {
  /** @param {HTMLDetailsElement} details holds a <summary>; the table is added after it */
  constructor(details) {
    this.details = details;
    this.table = document.createElement("table");
    this.table.className = "alt-table";
    this.wrap = document.createElement("div");
    this.wrap.className = "table-wrap alt-wrap";
    this.wrap.append(this.table);
    details.append(this.wrap);
    this.spec = null;
    this.filled = null;
    details.addEventListener("toggle", () => this.fill());
  }

  /**
   * What the table describes.
   * @param {{key: string, matrix: Float32Array, n: number, groups: Array<{label: string}>, caption: string}} spec
   *   key: changes when the matrix does. With `rows` (token indices), `matrix` holds only those rows
   *   (rows.length x n): a long run's text view gives the one vector it shows
   */
  set(spec) {
    this.spec = spec;
    this.fill();
  }

  fill() {
    const spec = this.spec;
    if (!spec || !this.details.open || this.filled === spec.key) return;
    this.filled = spec.key;
    const caption = document.createElement("caption");
    caption.textContent = spec.caption;
    const head = document.createElement("tr");
    const cols = [t("alt.token"), ...Array.from({ length: TOP_K }, (_, i) => t("alt.rank", { rank: i + 1 }))];
    for (const text of cols) {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = text;
      head.append(th);
    }
    const thead = document.createElement("thead");
    thead.append(head);
    const tbody = document.createElement("tbody");
    const top = topWeights(spec.matrix, spec.n, TOP_K, spec.rows?.length ?? spec.n);
    top.forEach((row, i) => {
      const q = spec.rows ? spec.rows[i] : i;
      const tr = document.createElement("tr");
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = `${q} ${spec.groups[q].label}`;
      tr.append(th);
      for (const { key, w } of row) {
        const td = document.createElement("td");
        td.textContent = t("alt.cell", { token: spec.groups[key].label, pos: key, weight: w.toFixed(3) });
        tr.append(td);
      }
      tbody.append(tr);
    });
    this.table.replaceChildren(caption, thead, tbody);
  }
}
