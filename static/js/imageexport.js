// PNG (2x) and SVG export for the views that were drawn before the reading views (issue 16): the
// Plotly figures through Plotly's own image export (toImage/downloadImage: SVG as drawn, PNG rendered
// from it at scale 2), the model grid's canvases wrapped in an SVG <image>. Added to the view objects
// here (views.js interface: exportPng?, exportSvg?) so their modules stay as they are. Nothing leaves
// the page: the files are built in it and downloaded through a blob: or data: URL.

import { download } from "./exporter.js";
import { SVG_NS } from "./reading.js";

const plotly = () => window.Plotly;

/** Download the Plotly figure `gd` (element or {data, layout}) as SVG. */
export function plotSvg(gd, stem, size = {}) {
  return plotly().downloadImage(gd, { format: "svg", filename: stem, ...size });
}

/** Download the Plotly figure `gd` as PNG at twice its size. */
export function plotPng(gd, stem, size = {}) {
  return plotly().downloadImage(gd, { format: "png", filename: stem, scale: 2, ...size });
}

/** An SVG document holding `canvas` as a PNG image at its pixel size (`scale` device px per unit). */
export function canvasSvg(canvas, scale = 1) {
  const w = canvas.width / scale;
  const h = canvas.height / scale;
  return `<svg xmlns="${SVG_NS}" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}"><image width="${w}" height="${h}" href="${canvas.toDataURL("image/png")}"/></svg>`;
}

/** A canvas scaled by 2 (for the grid's composite, which is drawn at 1x). */
function doubled(canvas) {
  const out = document.createElement("canvas");
  out.width = canvas.width * 2;
  out.height = canvas.height * 2;
  const ctx = out.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(canvas, 0, 0, out.width, out.height);
  return out;
}

/**
 * Give the views SVG export (and PNG at 2x where they had none).
 * @param {Record<string, object>} views the page's views by name (views.js)
 */
export function addImageExports(views) {
  const { head, model, stats, heads, compare } = views;
  if (head) {
    head.exportSvg = (stem) => {
      const { width, height } = head.el._fullLayout;
      return plotSvg(head.exportFigure(), stem, { width, height });
    };
  }
  if (stats) stats.exportSvg = (stem) => plotSvg(stats.plot.el, stem);
  if (compare) {
    compare.exportSvg = (stem) => {
      const plot = compare.exportPlot();
      return plot ? plotSvg(plot.el, stem) : undefined;
    };
  }
  if (heads) {
    const drawn = () => heads.simPlot._fullLayout;
    heads.exportPng = (stem) => (drawn() ? plotPng(heads.simPlot, stem) : undefined);
    heads.exportSvg = (stem) => (drawn() ? plotSvg(heads.simPlot, stem) : undefined);
  }
  if (model) {
    const composite = () => doubled(model.composite());
    model.exportPng = (stem) =>
      new Promise((resolve) =>
        composite().toBlob((blob) => {
          if (blob) download(blob, `${stem}.png`);
          resolve();
        }, "image/png"),
      );
    model.exportSvg = (stem) => download(new Blob([canvasSvg(composite(), 2)], { type: "image/svg+xml" }), `${stem}.svg`);
  }
}
