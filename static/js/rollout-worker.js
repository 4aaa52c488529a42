// Module worker: attention rollout of a whole tensor, posting each layer's product as it is done.
// Message in: {values: Uint8Array, shape: [L, H, T, T], scale}. Out, per layer: {layer, matrix: Float32Array}.

import { matmul, meanHeads, withResidual } from "./aggregate.js";

self.onmessage = ({ data }) => {
  const [layers, heads, size] = data.shape;
  const tensor = { values: data.values, layers, heads, size, scale: data.scale };
  let prev = null;
  for (let l = 0; l < layers; l++) {
    const a = withResidual(meanHeads(tensor, l), size);
    prev = l === 0 ? a : matmul(a, prev, size);
    const matrix = Float32Array.from(prev);
    self.postMessage({ layer: l, matrix }, [matrix.buffer]);
  }
};
