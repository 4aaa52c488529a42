// The attention tensor of one response, kept as the API's uint8 levels: at 512 tokens and
// 6 x 12 heads that is 19 MB, where float32 would be 75 MB.

/** Base64 (RFC 4648) -> bytes. */
export function decodeBase64(b64) {
  if (typeof Uint8Array.fromBase64 === "function") return Uint8Array.fromBase64(b64);
  const binary = atob(b64);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

export class AttentionTensor {
  /**
   * @param {Uint8Array|Float32Array} values row-major, shape [L, H, T, T]
   * @param {number[]} shape [L, H, T, T]
   * @param {number} scale weight = value * scale
   */
  constructor(values, shape, scale) {
    if (shape.length !== 4 || shape[2] !== shape[3]) {
      throw new Error(`Attention shape must be [layers, heads, T, T], got [${shape}]`);
    }
    const [L, H, T] = shape;
    if (values.length !== L * H * T * T) {
      throw new Error(`Attention has ${values.length} values, expected ${L}x${H}x${T}x${T} = ${L * H * T * T}`);
    }
    this.values = values;
    this.layers = L;
    this.heads = H;
    this.size = T;
    this.scale = scale;
  }

  /** Weights of layer index `l`, head index `h`: Float32Array(T*T), row = query. */
  matrix(l, h) {
    const n = this.size * this.size;
    const start = (l * this.heads + h) * n;
    const out = new Float32Array(n);
    const src = this.values;
    const s = this.scale;
    for (let i = 0; i < n; i++) out[i] = src[start + i] * s;
    return out;
  }
}

/** Build the tensor from an API response, compact (`attention_compact`) or plain (`attention`). */
export function tensorFromResponse(resp) {
  const T = resp.tokens.length;
  if (resp.attention_compact) {
    const c = resp.attention_compact;
    if (c.dtype !== "uint8") throw new Error(`Unsupported compact dtype ${c.dtype}`);
    const tensor = new AttentionTensor(decodeBase64(c.data), c.shape, c.scale);
    if (tensor.size !== T) throw new Error(`Attention covers ${tensor.size} tokens, the response has ${T}`);
    return tensor;
  }
  if (Array.isArray(resp.attention)) {
    const L = resp.attention.length;
    const H = L ? resp.attention[0].length : 0;
    const flat = new Float32Array(L * H * T * T);
    let i = 0;
    for (const layer of resp.attention) for (const head of layer) for (const row of head) for (const w of row) flat[i++] = w;
    return new AttentionTensor(flat, [L, H, T, T], 1);
  }
  throw new Error("The response holds no attention weights.");
}

/** A [layers, heads, rows, cols] stack of matrices that need not be square (cross-attention: target × source). */
export class MatrixStack {
  constructor(values, shape, scale) {
    if (shape.length !== 4) throw new Error(`Attention shape must be [layers, heads, rows, cols], got [${shape}]`);
    const [L, H, R, C] = shape;
    if (values.length !== L * H * R * C) throw new Error(`Attention has ${values.length} values, expected ${L * H * R * C}`);
    this.values = values;
    this.layers = L;
    this.heads = H;
    this.rows = R;
    this.cols = C;
    this.scale = scale;
  }

  /** Weights of layer index `l`, head index `h`: Float32Array(rows*cols), row-major. */
  matrix(l, h) {
    const n = this.rows * this.cols;
    const start = (l * this.heads + h) * n;
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = this.values[start + i] * this.scale;
    return out;
  }
}

/**
 * One attention of an encoder–decoder response: `field` is "attention" (encoder self), "decoder_attention" or
 * "cross_attention"; read from `<field>_compact` or the nested lists. Null when the response has none.
 */
export function stackFromResponse(resp, field) {
  const c = resp[`${field}_compact`];
  if (c) {
    if (c.dtype !== "uint8") throw new Error(`Unsupported compact dtype ${c.dtype}`);
    return new MatrixStack(decodeBase64(c.data), c.shape, c.scale);
  }
  const nested = resp[field];
  if (!Array.isArray(nested)) return null;
  const L = nested.length;
  const H = L ? nested[0].length : 0;
  const R = H ? nested[0][0].length : 0;
  const C = R ? nested[0][0][0].length : 0;
  const flat = new Float32Array(L * H * R * C);
  let i = 0;
  for (const layer of nested) for (const head of layer) for (const row of head) for (const w of row) flat[i++] = w;
  return new MatrixStack(flat, [L, H, R, C], 1);
}
