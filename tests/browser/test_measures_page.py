"""The page's server-side measures (issue 15) in real Chromium: norms, flow and ALTI in the "Show"
selector equal the API's numbers; 413/422 are said in place; the head-types map follows the API's
strongest detector; the head-similarity points are the API's MDS embedding; clicks open the head.

References are the API's own JSON (the numbers themselves are checked against the papers' code in
tests/test_measures.py and tests/test_heads.py); here the page must draw exactly what the API gives.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.browser.conftest import renders, run_text, shot, shown, wait_ready, wait_render, wait_until

pytestmark = pytest.mark.browser

SHORT = "The cat sat on the mat."
SENTENCE = "The cat sat on the mat, and the cat slept."
JSON_TOL = 2e-4  # the API's 4 decimals, drawn as float32
SCREENSHOT = Path("/work/wt/measures-page.png")


def post(server: str, path: str, body: dict) -> dict:
    r = httpx.post(f"{server}{path}", json=body, timeout=300)
    r.raise_for_status()
    return r.json()


def select(page, selector: str, value: str) -> None:  # type: ignore[no-untyped-def]
    before = renders(page)
    page.select_option(selector, value)
    wait_render(page, before, timeout=180)


def set_layer(page, layer: int) -> None:  # type: ignore[no-untyped-def]
    before = renders(page)
    page.fill("#layer", str(layer))
    page.dispatch_event("#layer", "input")
    wait_render(page, before, timeout=180)


def test_flow_alti_norms_equal_the_api_and_refusals_show_in_place(page, server):  # type: ignore[no-untyped-def]
    page.goto(server + "/")
    wait_ready(page)
    # The help lists each measure from the definitions, formulas with sub/superscripts, identifiers intact.
    assert page.locator("#help-norms [data-formula] sub").count() > 0
    assert "maximum_flow" in page.text_content("#help-flow")
    run_text(page, SHORT)
    agg = post(server, "/api/aggregate", {"text": SHORT, "methods": ["flow", "alti", "alti_rollout"]})
    flow = np.array(agg["flow"])  # [L, T, T]
    assert flow.shape[1] == len(agg["tokens"])

    select(page, "#aggregate", "flow")
    np.testing.assert_allclose(np.array(shown(page)["z"]), flow[0], atol=JSON_TOL)
    set_layer(page, 5)
    z = np.array(shown(page)["z"])
    np.testing.assert_allclose(z, flow[5], atol=JSON_TOL)
    assert "attention flow, layers 0–5" in shown(page)["titleText"]
    assert "Abnar" in page.inner_text("#agg-help")  # the definition's reference

    select(page, "#aggregate", "alti")
    np.testing.assert_allclose(np.array(shown(page)["z"]), np.array(agg["alti"])[5], atol=JSON_TOL)
    select(page, "#aggregate", "alti_rollout")
    np.testing.assert_allclose(np.array(shown(page)["z"]), np.array(agg["alti_rollout"])[5], atol=JSON_TOL)
    assert "Ferrando" in page.inner_text("#agg-help")

    # Norms per head: the compact levels (scale = max/255) against the JSON's 4 decimals.
    norms = np.array(post(server, "/api/attention", {"text": SHORT, "measure": "norms"})["attention"])
    select(page, "#aggregate", "norms")
    before = renders(page)
    page.fill("#head", "7")
    page.dispatch_event("#head", "input")
    wait_render(page, before)
    assert page.input_value("#aggregate") == "norms", "moving the head keeps the per-head measure"
    np.testing.assert_allclose(np.array(shown(page)["z"]), norms[5, 7], atol=norms.max() / 255 + 1e-4)
    shot(page, "norms")

    # Flow past its bound (24 tokens): the API's 413 detail in place of the heatmap, nothing broken.
    select(page, "#aggregate", "flow")
    long_text = "the quick brown fox jumps over the lazy dog " * 4
    r = httpx.post(f"{server}/api/aggregate", json={"text": long_text, "methods": ["flow"]}, timeout=60)
    assert r.status_code == 413
    run_text(page, long_text)
    wait_until(page, "!document.getElementById('heatmap-message').hidden")
    message = page.inner_text("#heatmap-message")
    assert r.json()["detail"] in message and "413" in message
    assert page.is_hidden("#heatmap")
    assert page.get_attribute("#app", "data-state") == "ready"
    select(page, "#aggregate", "mean")  # the other aggregates still work
    assert page.is_hidden("#heatmap-message") and page.is_visible("#heatmap")
    assert len(shown(page)["z"]) > 24

    # Norms on the custom block (no value projections to read): the API's 422 detail, in place.
    page.select_option("#model", "custom")
    run_text(page, SHORT)
    r = httpx.post(f"{server}/api/attention", json={"text": SHORT, "model": "custom", "measure": "norms"}, timeout=60)
    assert r.status_code == 422 and r.json()["error"] == "measure_unsupported"
    page.select_option("#aggregate", "norms")
    wait_until(page, "!document.getElementById('heatmap-message').hidden")
    assert r.json()["detail"] in page.inner_text("#heatmap-message")
    assert "measure_unsupported" in page.inner_text("#heatmap-message")


def test_head_types_map_and_similarity_open_heads(page, server):  # type: ignore[no-untyped-def]
    page.goto(server + "/")
    wait_ready(page)
    run_text(page, SENTENCE)
    heads = post(server, "/api/heads", {"text": SENTENCE})
    sim = post(server, "/api/stats", {"text": SENTENCE, "similarity": True})["similarity"]
    L, H = heads["num_layers"], heads["num_heads"]

    page.click("#tab-heads")
    wait_until(page, "document.getElementById('heads-view').dataset.status === 'ready'", 180)
    wait_until(page, "document.getElementById('sim-message').dataset.status === 'ready'", 180)
    assert page.locator("#heads-map button.type-cell").count() == L * H

    # Reference: the argmax over the detectors with scores (null ones skipped), "none" below the threshold.
    ids = [k for k, v in heads["scores"].items() if v is not None]
    scores = np.array([heads["scores"][k] for k in ids])  # [detectors, L, H]
    cells = page.evaluate(
        """[...document.querySelectorAll('#heads-map button.type-cell')].map(b =>
             [Number(b.dataset.layer), Number(b.dataset.head), b.dataset.detector,
              getComputedStyle(b).backgroundColor])"""
    )
    swatch = dict(
        page.evaluate(
            """[...document.querySelectorAll('#heads-legend .legend-item')].map(s =>
                 [s.dataset.detector, getComputedStyle(s.querySelector('i')).backgroundColor])"""
        )
    )
    assert len(set(swatch.values())) == len(swatch), "every type has its own colour"
    threshold = float(page.input_value("#heads-threshold"))
    for layer, head, detector, colour in cells:
        best = int(scores[:, layer, head].argmax())
        expected = ids[best] if scores[best, layer, head] >= threshold else "none"
        assert detector == expected, (layer, head)
        assert colour == swatch[expected]
    shot(page, "head-types")
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # The similarity plot: one point per head at the API's MDS coordinates.
    xy = page.evaluate("(() => { const t = document.getElementById('sim-plot').data[0]; return [t.x, t.y]; })()")
    np.testing.assert_allclose(np.array(xy).T, np.array(sim["embedding"]), atol=1e-9)
    assert len(xy[0]) == L * H

    # Clicking a map cell opens that head: state, URL and heatmap follow.
    page.click("#heads-map button.type-cell[data-layer='2'][data-head='5']")
    wait_until(page, "document.getElementById('app').dataset.view === 'head'")
    wait_until(page, "document.querySelector('#heatmap .gtitle')?.textContent.includes('layer 2 · head 5')")
    assert "view=head" in page.url and "layer=2" in page.url and "head=5" in page.url

    # Clicking a similarity point opens its head.
    page.click("#tab-heads")
    wait_until(page, "document.getElementById('app').dataset.view === 'heads'")
    target = next(i for i, (layer, head) in enumerate(sim["heads"]) if (layer, head) == (4, 9))
    page.locator("#sim-plot").scroll_into_view_if_needed()  # mouse coordinates are the viewport's
    x, y = page.evaluate(
        f"""(() => {{ const gd = document.getElementById('sim-plot'); const fl = gd._fullLayout;
                     const r = gd.getBoundingClientRect(); const t = gd.data[0];
                     return [r.left + fl.xaxis._offset + fl.xaxis.l2p(t.x[{target}]),
                             r.top + fl.yaxis._offset + fl.yaxis.l2p(t.y[{target}])]; }})()"""
    )
    page.mouse.move(x, y)
    page.mouse.click(x, y)
    wait_until(page, "document.getElementById('app').dataset.view === 'head'")
    clicked = page.evaluate("[document.getElementById('layer').value, document.getElementById('head').value]")
    # Points may overlap: the head opened is one whose point lies under the cursor.
    emb = np.array(sim["embedding"])
    opened = next(i for i, (layer, head) in enumerate(sim["heads"]) if [str(layer), str(head)] == clicked)
    assert np.allclose(emb[opened], emb[target], atol=0.05 * np.ptp(emb)), (clicked, target)
