// What every Plotly figure of the page shares: fonts, colours, label sizing and the axis base.

export const FONT =
  'system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "PingFang SC", "Hiragino Sans GB", "Microsoft YaHei", ' +
  '"Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Micro Hei", sans-serif';
// Live bindings: theme.js switches them with setPlotlyTheme() (light/dark); a figure reads them when drawn.
export let TEXT_COLOR = "#334155";
export let TITLE_COLOR = "#0f172a";
export let PAPER_BG = "#ffffff";

/** The figure colours of each page theme: text and title on the paper (WCAG contrast >= 4.5:1 each). */
export const PLOTLY_THEMES = {
  light: { text: "#334155", title: "#0f172a", paper: "#ffffff" },
  dark: { text: "#cbd5e1", title: "#f1f5f9", paper: "#111827" },
};

/** Use the colours of `theme` ("light" | "dark") for every figure drawn from now on. */
export function setPlotlyTheme(theme) {
  const c = PLOTLY_THEMES[theme] ?? PLOTLY_THEMES.light;
  TEXT_COLOR = c.text;
  TITLE_COLOR = c.title;
  PAPER_BG = c.paper;
}
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
