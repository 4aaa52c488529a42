// The tab views and how the page drives them.
//
// Every tab view (HeadView, ModelGrid, StatsView, CompareView, ExplainView) has the same interface:
//
//   show(run, state, signal)  Draw `run` (the response shown: {id, resp, tensor, aggs, request, kind,
//                             models}, see main.js) as `state` (store.js) says. Called after every state
//                             change while the tab is active, so it skips work when nothing it uses
//                             changed. May be async. `signal` (AbortSignal) is aborted when the state
//                             moves on: a slow view should then not draw, a newer show() follows. An
//                             error the view already displays in place carries `shown: true`.
//   hide()                    The tab was left (drop tooltips and the like).
//   exportPng?(stem)          Optional: the PNG button applies to this view. Returns a promise.
//   exportSvg?(stem)          Optional: the SVG button applies to this view (PNG is at 2x scale;
//                             imageexport.js adds both to the views that predate issue 16).
//   exportCsv?(stem)          Optional: the CSV button applies to this view.
//
// A view changes the state only through store.setState (directly or through a callback it is given).

import { t } from "./i18n.js";

/** Views that read every weight of the response (run.tensor): a long input's run has none (longhead.js).
 * The text view reads a run's rows and columns instead (GET /api/runs/{id}/vector). */
const NEED_ALL_WEIGHTS = new Set(["lines", "seq2seq"]);

export class Views {
  /** @param {Record<string, {show: Function, hide: Function}>} byName one view per `state.view` */
  constructor(byName) {
    this.byName = byName;
    this.shown = null;
  }

  get(name) {
    return this.byName[name];
  }

  /** Show `state.view` (hiding the one shown before, if another). */
  async show(run, state, signal) {
    const view = this.byName[state.view];
    if (this.shown && this.shown !== view) this.shown.hide();
    this.shown = view;
    if (run?.long && NEED_ALL_WEIGHTS.has(state.view)) {
      throw new Error(t("long.view_unavailable", { tokens: run.long.tokens, view: t(`tab.${state.view}`) }));
    }
    await view.show(run, state, signal);
  }
}
