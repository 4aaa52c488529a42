// Module worker: attention rollout of a whole tensor, posting each layer's product as it is done.
// Message in: {values: Uint8Array, shape: [L, H, T, T], scale}. Out, per layer: {layer, matrix: Float32Array}.

import { rolloutLayers } from "./aggregate.js";

self.onmessage = ({ data }) => {
  const [layers, heads, size] = data.shape;
  const tensor = { values: data.values, layers, heads, size, scale: data.scale };
  for (const [layer, product] of rolloutLayers(tensor)) {
    const matrix = Float32Array.from(product);
    self.postMessage({ layer, matrix }, [matrix.buffer]);
  }
};
