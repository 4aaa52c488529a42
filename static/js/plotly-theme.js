// What every Plotly figure of the page shares: fonts, colours, label sizing and the axis base.

export const FONT =
  'system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "PingFang SC", "Hiragino Sans GB", "Microsoft YaHei", ' +
  '"Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Micro Hei", sans-serif';
export const TEXT_COLOR = "#334155";
export const TITLE_COLOR = "#0f172a";
export const MAX_LABEL_CHARS = 18;

/** A label cut to MAX_LABEL_CHARS code points (emoji are not cut in half). */
export function shortLabel(label) {
  const chars = Array.from(label);
  return chars.length > MAX_LABEL_CHARS ? `${chars.slice(0, MAX_LABEL_CHARS - 1).join("")}…` : label;
}

/** Pixels the widest (shortened) label of `groups` needs at `fontPx`. */
export function labelPx(groups, fontPx) {
  let chars = 1;
  for (const g of groups) chars = Math.max(chars, Math.min(MAX_LABEL_CHARS, Array.from(g.label).length));
  return chars * fontPx * 0.62;
}

/**
 * Axis settings both heatmaps use: no grid, invisible ticks (a gap between labels and cells), and
 * margins fitted by us. Plotly's default ticklabeloverflow ("hide past div") measures every label after
 * each draw, forcing a layout per label: 80% of a layer switch at 128 tokens.
 */
export function axisBase(fontPx, ticklen) {
  return {
    showgrid: false,
    zeroline: false,
    ticks: "outside",
    ticklen,
    tickcolor: "rgba(0,0,0,0)",
    tickfont: { size: fontPx },
    automargin: false,
    ticklabeloverflow: "allow",
  };
}
