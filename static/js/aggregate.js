// Matrices derived from an AttentionTensor: one head, mean and max over heads, attention rollout.
// Every matrix is a Float32Array of T*T, row-major, row = query, column = key.

/** Mean over heads at layer l: (1/H) sum_h A[l,h]. */
export function meanHeads(tensor, l) {
  const T2 = tensor.size * tensor.size;
  const out = new Float32Array(T2);
  const base = l * tensor.heads * T2;
  const src = tensor.values;
  for (let h = 0; h < tensor.heads; h++) {
    const start = base + h * T2;
    for (let i = 0; i < T2; i++) out[i] += src[start + i];
  }
  const s = tensor.scale / tensor.heads;
  for (let i = 0; i < T2; i++) out[i] *= s;
  return out;
}

/** Element-wise maximum over heads at layer l. */
export function maxHeads(tensor, l) {
  const T2 = tensor.size * tensor.size;
  const out = new Float32Array(T2);
  const base = l * tensor.heads * T2;
  const src = tensor.values;
  for (let h = 0; h < tensor.heads; h++) {
    const start = base + h * T2;
    for (let i = 0; i < T2; i++) if (src[start + i] > out[i]) out[i] = src[start + i];
  }
  for (let i = 0; i < T2; i++) out[i] *= tensor.scale;
  return out;
}

/** The residual-corrected matrix of the rollout definition (ROLLOUT.step): half `a`, half the identity, rows renormalised to 1 (a new T x T Float64Array). */
export function withResidual(a, T) {
  const out = new Float64Array(T * T);
  for (let q = 0; q < T; q++) {
    let sum = 0;
    for (let k = 0; k < T; k++) {
      const v = 0.5 * a[q * T + k] + (q === k ? 0.5 : 0);
      out[q * T + k] = v;
      sum += v;
    }
    if (sum > 0) for (let k = 0; k < T; k++) out[q * T + k] /= sum;
  }
  return out;
}

/** C = A · B for T x T matrices (Float64Array), i-k-j order for contiguous inner loops. */
export function matmul(a, b, T) {
  const c = new Float64Array(T * T);
  for (let i = 0; i < T; i++) {
    const ci = i * T;
    for (let k = 0; k < T; k++) {
      const aik = a[ci + k];
      if (aik === 0) continue;
      const bk = k * T;
      for (let j = 0; j < T; j++) c[ci + j] += aik * b[bk + j];
    }
  }
  return c;
}

/** Above this many tokens rollout runs in a worker (T³ per layer: 0.3 s a layer at 512 tokens). */
const SYNC_LIMIT = 160;

/**
 * Attention rollout as app/attention/definitions.py defines it (ROLLOUT): after each layer l = 0..upTo,
 * yields [l, product] with the product of the residual-corrected layer means from l down to 0
 * (Float64Array T*T, reused by the next step: copy it to keep it). The one loop behind the page's
 * Rollout and rollout-worker.js.
 */
export function* rolloutLayers(tensor, upTo = tensor.layers - 1) {
  let prev = null;
  for (let l = 0; l <= upTo; l++) {
    const a = withResidual(meanHeads(tensor, l), tensor.size);
    prev = l === 0 ? a : matmul(a, prev, tensor.size);
    yield [l, prev];
  }
}

/**
 * Attention rollout of a tensor, computed layer by layer and cached. Large inputs are computed in a
 * module worker so the page stays responsive.
 */
export class Rollout {
  constructor(tensor) {
    this.tensor = tensor;
    this.done = []; // done[l]: Float32Array
    this.waiters = []; // [layer, resolve, reject]
    this.worker = null;
  }

  /** @returns {Promise<Float32Array>} */
  at(l) {
    if (this.done[l]) return Promise.resolve(this.done[l]);
    if (this.tensor.size <= SYNC_LIMIT || typeof Worker === "undefined") {
      for (const [i, product] of rolloutLayers(this.tensor, l)) this.done[i] ??= Float32Array.from(product);
      return Promise.resolve(this.done[l]);
    }
    return new Promise((resolve, reject) => {
      this.waiters.push([l, resolve, reject]);
      this.start();
    });
  }

  start() {
    if (this.worker) return;
    const t = this.tensor;
    this.worker = new Worker(new URL("./rollout-worker.js", import.meta.url), { type: "module" });
    this.worker.onmessage = ({ data }) => {
      this.done[data.layer] = data.matrix;
      this.waiters = this.waiters.filter(([l, resolve]) => (l === data.layer ? (resolve(data.matrix), false) : true));
      if (data.layer === t.layers - 1) this.dispose();
    };
    this.worker.onerror = (ev) => {
      const err = new Error(`Rollout failed: ${ev.message || "worker error"}`);
      this.waiters.forEach(([, , reject]) => reject(err));
      this.waiters = [];
      this.dispose();
    };
    // The tensor is copied, not transferred: the page keeps using it.
    this.worker.postMessage({ values: t.values, shape: [t.layers, t.heads, t.size, t.size], scale: t.scale });
  }

  dispose() {
    if (this.worker) this.worker.terminate();
    this.worker = null;
  }
}

/** Memoises derived matrices of one tensor, keyed by "agg:layer:head". */
export class Aggregates {
  constructor(tensor) {
    this.tensor = tensor;
    this.rollout = new Rollout(tensor);
    this.cache = new Map();
  }

  /**
   * @param {"head"|"mean"|"max"|"rollout"} agg
   * @returns {Promise<Float32Array>} immediately resolved except for rollout on large inputs
   */
  async get(agg, l, h) {
    if (agg === "rollout") return this.rollout.at(l);
    return this.getSync(agg, l, h);
  }

  /** head, mean or max (never rollout): computed at once. */
  getSync(agg, l, h) {
    const key = agg === "head" ? `head:${l}:${h}` : `${agg}:${l}`;
    let m = this.cache.get(key);
    if (!m) {
      if (agg === "head") m = this.tensor.matrix(l, h);
      else if (agg === "mean") m = meanHeads(this.tensor, l);
      else if (agg === "max") m = maxHeads(this.tensor, l);
      else throw new Error(`Unknown aggregate ${agg}`);
      if (this.cache.size > 64) this.cache.delete(this.cache.keys().next().value);
      this.cache.set(key, m);
    }
    return m;
  }

  dispose() {
    this.rollout.dispose();
  }
}
