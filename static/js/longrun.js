// A long input's run on the server (POST /api/runs) as the page uses it: overviews and exact tiles,
// cached here, and a run the server forgot (expired, evicted, restarted: 404 run_not_found) made again
// from the same text, once, by itself. The API functions are passed in so node tests can fake them.

import { RequestCache } from "./cache.js";
import { flatten } from "./longview.js";

export class LongRun {
  /**
   * @param {{text: string, pair: string, model: string, truncate: boolean}} req the run's inputs
   * @param {object} info the RunInfo POST /api/runs answered
   * @param {{createRun: Function, getOverview: Function, getTile: Function, getVector?: Function, deleteRun: Function}} api
   */
  constructor(req, info, api) {
    this.req = { ...req, model: info.model };
    this.info = info;
    this.api = api;
    this.runId = info.run_id;
    this.remade = 0; // times the run was made again after a 404
    this.recreating = null;
    // Values do not depend on the run id (the same text gives the same weights), so a run made
    // again keeps what was fetched. Head-view overviews and tiles (up to 256 KB each as float32) are
    // few; the model grid's small overviews (4 KB at 32 x 32) one per head of the model.
    this.cache = new RequestCache(64);
    this.small = new RequestCache(4096);
    // The text view's rows and columns (4 bytes a token each): the tokens hovered and pinned lately.
    this.vectors = new RequestCache(512);
  }

  get tokens() {
    return this.info.num_tokens;
  }

  /** `call(runId)`, making the run again once if the server no longer has it. */
  async withRun(call) {
    const id = this.runId;
    try {
      return await call(id);
    } catch (err) {
      if (err?.code !== "run_not_found") throw err;
      await this.recreate(id);
      return call(this.runId);
    }
  }

  /** POST /api/runs again (one request however many callers saw the 404 of run `staleId`). */
  recreate(staleId) {
    if (this.runId !== staleId) return Promise.resolve(); // someone already made it again
    if (!this.recreating) {
      this.recreating = this.api
        .createRun(this.req)
        .then((info) => {
          if (info.num_tokens !== this.info.num_tokens) throw new Error(`the run came back with ${info.num_tokens} tokens, not ${this.info.num_tokens}`);
          this.runId = info.run_id;
          this.info = { ...this.info, run_id: info.run_id, expires_at: info.expires_at };
          this.remade += 1;
        })
        .finally(() => {
          this.recreating = null;
        });
    }
    return this.recreating;
  }

  /**
   * The overview of (layer, head) as {matrix: Float32Array (n x n), n, qBounds, kBounds}.
   * @param {number} layer @param {number|"mean"|"max"} head @param {number} size @param {"max"|"mean"} reduce
   */
  overview(layer, head, size, reduce = "max") {
    const cache = size <= 64 ? this.small : this.cache;
    return cache.get(`o:${layer}:${head}:${size}:${reduce}`, async () => {
      const o = await this.withRun((id) => this.api.getOverview(id, { layer, head, size, reduce }));
      const { matrix, rows } = flatten(o.matrix);
      return { matrix, n: rows, qBounds: o.q_bounds, kBounds: o.k_bounds, reduce: o.reduce ?? reduce };
    });
  }

  /** The exact weights of view `v` ({q0, q1, k0, k1}) of (layer, head) as {matrix, rows, cols, ...v}. */
  tile(layer, head, v) {
    const { q0, q1, k0, k1 } = v;
    return this.cache.get(`t:${layer}:${head}:${q0}:${q1}:${k0}:${k1}`, async () => {
      const tile = await this.withRun((id) => this.api.getTile(id, { layer, head, q0, q1, k0, k1 }));
      return { ...flatten(tile.weights), q0, q1, k0, k1 };
    });
  }

  /**
   * One row (axis "query": the weights of query `index` over every key) or column (axis "key": every
   * query's weight on key `index`) of (layer, head), as a Float32Array of the run's tokens.
   * @param {number} layer @param {number|"mean"|"max"} head @param {number} index @param {"query"|"key"} axis
   */
  vector(layer, head, index, axis) {
    return this.vectors.get(`v:${layer}:${head}:${index}:${axis}`, async () => {
      const v = await this.withRun((id) => this.api.getVector(id, { layer, head, index, axis }));
      return Float32Array.from(v.weights);
    });
  }

  /** Tell the server it may drop the run (a newer one replaced it). Errors do not matter: it expires. */
  dispose() {
    this.api.deleteRun(this.runId).catch(() => {});
  }
}
