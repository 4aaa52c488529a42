// The "Show" selector's measures the server computes (issue 15): norm-based attention per head
// (POST /api/attention with measure "norms"), attention flow and ALTI per layer and rolled out
// (POST /api/aggregate). Each is fetched once per run, when first shown, and kept with the run.
// Formulas and references: app/attention/definitions.py (MEASURES), in the page as definitions.js.

import { getAggregate, getAttention } from "./api.js";
import { tensorFromResponse } from "./tensor.js";

/** The aggregates computed by the server, not in the page. */
export const SERVER_AGGS = Object.freeze(["norms", "flow", "alti", "alti_rollout"]);

export const isServerAgg = (agg) => SERVER_AGGS.includes(agg);

/** [T][T] nested rows -> Float32Array(T*T), row-major. */
function flatten(rows) {
  const T = rows.length;
  const out = new Float32Array(T * T);
  rows.forEach((row, i) => out.set(row, i * T));
  return out;
}

export class ServerMeasures {
  /** @param {{text: string, pair: string, model: string, truncate: boolean}} request the run's request */
  constructor(request) {
    this.request = request;
    this.pending = new Map(); // agg -> Promise<response>
    this.done = new Set(); // aggs whose response has arrived
  }

  fetch(agg) {
    let p = this.pending.get(agg);
    if (!p) {
      p =
        agg === "norms"
          ? getAttention({ ...this.request, measure: "norms" }).then(({ data }) => tensorFromResponse(data))
          : getAggregate(this.request, [agg]).then((data) => data[agg].map(flatten));
      // A failed request (413, 422, network) is forgotten: the next visit retries and shows its error.
      p.then(
        () => this.done.add(agg),
        () => this.pending.get(agg) === p && this.pending.delete(agg),
      );
      this.pending.set(agg, p);
    }
    return p;
  }

  /** True when `agg`'s numbers are at hand (no request to wait for). */
  has(agg) {
    return this.done.has(agg);
  }

  /** @returns {Promise<Float32Array>} T*T: head h of layer l (norms) or layer l (the others) */
  async get(agg, l, h) {
    const data = await this.fetch(agg);
    return agg === "norms" ? data.matrix(l, h) : data[l];
  }
}
