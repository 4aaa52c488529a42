// Light and dark mode. The page follows the system (prefers-color-scheme) until the reader picks one
// with the header toggle; the choice is remembered (localStorage) and set as <html data-theme>. The CSS
// (views.css) keys its colours on that attribute, and on the media query while none is set, so the
// first paint is already right. Plotly figures take their colours from plotly-theme.js.

import { setPlotlyTheme, PLOTLY_THEMES } from "./plotly-theme.js";

export const STORAGE_KEY = "headmap-theme";
const media = () => globalThis.matchMedia?.("(prefers-color-scheme: dark)");

/** The remembered choice ("light" | "dark"), or null to follow the system. */
function remembered() {
  try {
    const v = globalThis.localStorage?.getItem(STORAGE_KEY);
    return v === "light" || v === "dark" ? v : null;
  } catch {
    return null; // storage refused (privacy settings): follow the system
  }
}

/** The theme in force: the remembered choice, else the system's. */
export function currentTheme() {
  return remembered() ?? (media()?.matches ? "dark" : "light");
}

/**
 * Set up the toggle `button` (aria-pressed = dark) and keep the page, the figures and `onChange`
 * (redraw what draws its own colours: canvases, figures) in step with the theme.
 */
export function initTheme(button, onChange) {
  const apply = (theme, redraw) => {
    document.documentElement.dataset.theme = theme;
    setPlotlyTheme(theme);
    button.setAttribute("aria-pressed", String(theme === "dark"));
    if (redraw) {
      restylePlots(theme);
      onChange(theme);
    }
  };
  apply(currentTheme(), false);
  button.addEventListener("click", () => {
    const next = currentTheme() === "dark" ? "light" : "dark";
    try {
      localStorage.setItem(STORAGE_KEY, next);
    } catch {
      // not remembered; still switched for this page
    }
    apply(next, true);
  });
  media()?.addEventListener("change", () => {
    if (!remembered()) apply(currentTheme(), true);
  });
}

/** Recolour every Plotly figure on the page in place (the next draw uses the new colours anyway). */
function restylePlots(theme) {
  const c = PLOTLY_THEMES[theme];
  for (const gd of document.querySelectorAll(".js-plotly-plot")) {
    if (!gd._fullLayout) continue;
    const patch = { paper_bgcolor: c.paper, plot_bgcolor: c.paper, "font.color": c.text };
    if (gd.layout?.title?.text) patch["title.font.color"] = c.title;
    window.Plotly.relayout(gd, patch);
  }
}

/** The CSS custom property `name` as computed on <html> (a colour string), for canvases. */
export function cssVar(name, fallback = "#000") {
  const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return v || fallback;
}
