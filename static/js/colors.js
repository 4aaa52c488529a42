// Colour scales shared by the Plotly head view and the canvas model grid, so both look alike.

const HEX = {
  blues: ["#f7fbff", "#deebf7", "#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c", "#08306b"],
  viridis: ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"],
  magma: ["#000004", "#1c1044", "#4f127b", "#812581", "#b5367a", "#e55964", "#fb8761", "#fec287", "#fcfdbf"],
  cividis: ["#00224e", "#123570", "#3b496c", "#575d6d", "#707173", "#8a8779", "#a69d75", "#c4b56c", "#e4cf5b", "#fee838"],
  ylorrd: ["#ffffcc", "#ffeda0", "#fed976", "#feb24c", "#fd8d3c", "#fc4e2a", "#e31a1c", "#bd0026", "#800026"],
  greys: ["#ffffff", "#f0f0f0", "#d9d9d9", "#bdbdbd", "#969696", "#737373", "#525252", "#252525", "#000000"],
};

export const SCALES = [
  { id: "blues", name: "Blues" },
  { id: "viridis", name: "Viridis" },
  { id: "magma", name: "Magma" },
  { id: "cividis", name: "Cividis (colour-blind safe)" },
  { id: "ylorrd", name: "Yellow–red" },
  { id: "greys", name: "Greys" },
];

export const DEFAULT_SCALE = "blues";

export function isScale(id) {
  return Object.hasOwn(HEX, id);
}

/** Plotly colorscale: [[0, "#..."], ..., [1, "#..."]]. */
export function plotlyScale(id) {
  const stops = HEX[id] || HEX[DEFAULT_SCALE];
  return stops.map((c, i) => [i / (stops.length - 1), c]);
}

const luts = new Map();

/** 256-entry RGB lookup table (Uint8Array of 768) for the canvas grid. */
export function lut(id) {
  if (luts.has(id)) return luts.get(id);
  const stops = (HEX[id] || HEX[DEFAULT_SCALE]).map((h) => [1, 3, 5].map((o) => parseInt(h.slice(o, o + 2), 16)));
  const out = new Uint8Array(256 * 3);
  for (let i = 0; i < 256; i++) {
    const x = (i / 255) * (stops.length - 1);
    const j = Math.min(Math.floor(x), stops.length - 2);
    const f = x - j;
    for (let c = 0; c < 3; c++) out[i * 3 + c] = Math.round(stops[j][c] * (1 - f) + stops[j + 1][c] * f);
  }
  luts.set(id, out);
  return out;
}

/** Diverging scale for signed values (differences, scores, activations): blue < 0 < red, white at 0. */
const DIVERGING = ["#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fddbc7", "#f4a582", "#d6604d", "#b2182b"];

/** Plotly colorscale of DIVERGING; use with zmin = -zmax so 0 sits in the white middle. */
export function divergingScale() {
  return DIVERGING.map((c, i) => [i / (DIVERGING.length - 1), c]);
}
