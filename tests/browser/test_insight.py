"""The insight tabs in real Chromium: head statistics, compare A − B, the explainer; sentence pairs.

Numbers shown are checked against the JSON API (the page fetches the same endpoints, but the tests
recompute from /api/attention where they can, so a wrong index or sign in the page fails here).
The ``page`` fixture also asserts no request left the server and no page error was raised.
"""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from tests.browser.conftest import renders, run_text, shot, ticks, wait_ready, wait_render, wait_until

pytestmark = pytest.mark.browser

TOL = 1e-4 + 1e-6  # the insight endpoints and /api/attention both round to 4 decimals
SENTENCE = "The cat sat on the mat, and the cat slept."


def post(server: str, path: str, body: dict) -> dict:
    r = httpx.post(f"{server}{path}", json=body, timeout=120)
    r.raise_for_status()
    return r.json()


def attention(server: str, text: str, model: str = "minilm", **extra: object) -> np.ndarray:
    """(L, H, T, T) weights from /api/attention (json, 4 decimals)."""
    return np.array(post(server, "/api/attention", {"text": text, "model": model, **extra})["attention"])


def status(page, panel: str) -> str:  # type: ignore[no-untyped-def]
    return page.evaluate(f"document.getElementById('{panel}').dataset.status || ''")


def wait_status(page, panel: str, *wanted: str, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    states = json.dumps([*wanted, "error"])
    wait_until(page, f"{states}.includes(document.getElementById('{panel}').dataset.status)", timeout)
    got = status(page, panel)
    assert got in wanted, f"{panel}: {got}: {page.evaluate(f'document.getElementById({panel!r}).innerText')[:400]}"


def plot_z(page, selector: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The z matrix the Plotly heatmap in `selector` holds."""
    return np.array(page.evaluate("(sel) => document.querySelector(sel).data[0].z", selector), dtype=float)


def plot_ticks(page, selector: str, axis: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Displayed tick labels on `axis` ("x" or "y") of the plot in `selector`, by position."""
    return page.evaluate(
        """([sel, axis]) => [...document.querySelectorAll(`${sel} g.${axis}tick`)]
              .map(g => [g.__data__.x, g.textContent]).sort((a, b) => a[0] - b[0]).map(p => p[1])""",
        [selector, axis],
    )


def cell_xy(page, selector: str, row: int, col: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Client coordinates of cell (row, col) of the Plotly heatmap in `selector`."""
    x, y = page.evaluate(
        """([sel, row, col]) => { const gd = document.querySelector(sel); const fl = gd._fullLayout;
                     gd.scrollIntoView({block: 'center'});
                     const r = gd.getBoundingClientRect();
                     return [r.left + fl.xaxis._offset + fl.xaxis.l2p(col),
                             r.top + fl.yaxis._offset + fl.yaxis.l2p(row)]; }""",
        [selector, row, col],
    )
    return x, y


def slide(page, slider: str, value: int) -> None:  # type: ignore[no-untyped-def]
    before = renders(page)
    page.fill(f"#{slider}", str(value))
    page.dispatch_event(f"#{slider}", "input")
    wait_render(page, before)


def column(page, index: int) -> list[str]:  # type: ignore[no-untyped-def]
    """Text of column `index` (0 = the head button) of the statistics table, top to bottom."""
    return page.evaluate(
        f"[...document.querySelectorAll('#stats-table tbody tr')].map(tr => tr.children[{index}].textContent)"
    )


# -- head statistics -------------------------------------------------------------------------------


def test_stats_heatmap_and_sortable_table(page, server, recorder):  # type: ignore[no-untyped-def]
    page.goto(server + "/")
    wait_ready(page)
    run_text(page, SENTENCE)
    assert not any(u.endswith("/api/stats") for u in recorder.requests), "statistics are fetched lazily"
    page.click("#tab-stats")
    wait_status(page, "stats-view", "ready")
    expected = post(server, "/api/stats", {"text": SENTENCE})["stats"]

    # The summary heatmap: layers x heads cells of the chosen statistic.
    z = plot_z(page, "#stats-plot")
    assert z.shape == (6, 12)
    np.testing.assert_allclose(z, expected["entropy"], atol=TOL)
    assert plot_ticks(page, "#stats-plot", "y") == [f"L{i}" for i in range(6)]
    assert plot_ticks(page, "#stats-plot", "x") == [f"H{i}" for i in range(12)]

    # Entropy by hand from /api/attention: -sum w ln w averaged over query rows.
    att = attention(server, SENTENCE)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.nansum(np.where(att > 0, att * np.log(att), 0), axis=-1).mean(axis=-1)
    np.testing.assert_allclose(z, ent, atol=0.01)  # 4-decimal weights in the hand computation

    page.select_option("#stat", "to_previous")
    wait_until(page, "document.getElementById('stats-plot').dataset.stat === 'to_previous'")
    np.testing.assert_allclose(plot_z(page, "#stats-plot"), expected["to_previous"], atol=TOL)
    assert "stat=to_previous" in page.url

    # The table: 72 rows; header buttons sort (mouse, then keyboard), aria-sort follows.
    assert page.locator("#stats-table tbody tr").count() == 72
    assert column(page, 0)[:3] == ["L0 · H0", "L0 · H1", "L0 · H2"]
    page.click("#stats-table th[data-key='entropy'] button")
    values = [float(v) for v in column(page, 1)]
    assert values == sorted(values, reverse=True)
    assert page.get_attribute("#stats-table th[data-key='entropy']", "aria-sort") == "descending"
    top = column(page, 0)[0]
    layer, head = np.unravel_index(np.argmax(np.array(expected["entropy"])), (6, 12))
    assert top == f"L{layer} · H{head}"
    page.click("#stats-table th[data-key='entropy'] button")
    values = [float(v) for v in column(page, 1)]
    assert values == sorted(values)
    assert page.get_attribute("#stats-table th[data-key='entropy']", "aria-sort") == "ascending"

    page.focus("#stats-table th[data-key='distance'] button")
    page.keyboard.press("Enter")
    values = [float(v) for v in column(page, 2)]
    assert values == sorted(values, reverse=True)
    assert page.get_attribute("#stats-table th[data-key='distance']", "aria-sort") == "descending"
    assert page.get_attribute("#stats-table th[data-key='entropy']", "aria-sort") == "none"
    flat = sorted(np.array(expected["distance"]).ravel(), reverse=True)
    np.testing.assert_allclose(values, flat, atol=5e-4)  # shown with 3 decimals
    shot(page, "stats-view")

    # Cached per text and model: switching tabs back and forth asks once.
    page.click("#tab-head")
    page.click("#tab-stats")
    wait_status(page, "stats-view", "ready")
    assert sum(u.endswith("/api/stats") for u in recorder.requests) == 1


def test_stats_cell_and_row_open_that_head(page, server):  # type: ignore[no-untyped-def]
    page.goto(server + "/#view=stats")
    wait_ready(page)
    wait_status(page, "stats-view", "ready")
    x, y = cell_xy(page, "#stats-plot", 3, 7)
    page.mouse.move(x, y)
    wait_until(page, "!document.getElementById('tooltip').hidden", 10)
    assert page.inner_text("#tooltip").startswith("Layer 3 · head 7: entropy ")
    page.mouse.click(x, y)
    wait_until(page, "document.getElementById('app').dataset.view === 'head'")
    wait_until(page, "document.querySelector('#heatmap .gtitle')?.textContent.includes('layer 3 · head 7')")
    assert page.get_attribute("#tab-head", "aria-selected") == "true"
    assert page.input_value("#layer") == "3" and page.input_value("#head") == "7"

    # The table's row buttons do the same, from the keyboard.
    page.click("#tab-stats")
    wait_status(page, "stats-view", "ready")
    page.focus("#stats-table button[data-layer='5'][data-head='2']")
    page.keyboard.press("Enter")
    wait_until(page, "document.querySelector('#heatmap .gtitle')?.textContent.includes('layer 5 · head 2')")


# -- compare ---------------------------------------------------------------------------------------


def compare(page, a: str, b: str, model_a: str = "minilm", model_b: str = "minilm") -> None:  # type: ignore[no-untyped-def]
    page.fill("#cmp-a-text", a)
    page.fill("#cmp-b-text", b)
    page.select_option("#cmp-a-model", model_a)
    page.select_option("#cmp-b-model", model_b)
    before = renders(page)
    page.click("#cmp-run")
    wait_render(page, before)


def test_compare_diff_is_a_minus_b(page, server):  # type: ignore[no-untyped-def]
    a, b = "The doctor said he was tired.", "The doctor said she was tired."
    page.goto(server + "/")
    wait_ready(page)
    page.click("#tab-compare")
    wait_status(page, "compare-view", "idle")
    assert page.input_value("#cmp-a-text") == page.input_value("#text"), "A starts from the text shown"
    compare(page, a, b)
    wait_status(page, "compare-view", "ready")
    slide(page, "layer", 2)
    slide(page, "head", 5)
    wait_status(page, "compare-view", "ready")
    assert page.evaluate("document.getElementById('compare-view').dataset.layer") == "2"
    assert page.evaluate("document.getElementById('compare-view').dataset.head") == "5"

    att_a, att_b = attention(server, a), attention(server, b)
    np.testing.assert_allclose(plot_z(page, "#cmp-plot-a"), att_a[2, 5], atol=TOL)
    np.testing.assert_allclose(plot_z(page, "#cmp-plot-b"), att_b[2, 5], atol=TOL)
    diff = plot_z(page, "#cmp-plot-diff")
    np.testing.assert_allclose(diff, att_a[2, 5] - att_b[2, 5], atol=2.5e-4)  # diff of unrounded weights
    # One chosen cell, as a user reads it: the tooltip of query "he/she" (4) -> key "doctor" (2).
    x, y = cell_xy(page, "#cmp-plot-diff", 4, 2)
    page.mouse.move(x, y)
    wait_until(page, "!document.getElementById('tooltip').hidden", 10)
    tip = page.inner_text("#tooltip")
    assert tip.startswith("he / she → doctor: A − B "), tip
    shown_value = float(tip.split("A − B ")[1].split("\n")[0].replace("−", "-"))
    assert abs(shown_value - (att_a[2, 5, 4, 2] - att_b[2, 5, 4, 2])) <= 1 / 255
    assert "he / she" in plot_ticks(page, "#cmp-plot-diff", "y")
    assert "Tokens that differ (position: A / B): 4: he / she." in page.inner_text("#cmp-notes")
    page.mouse.move(0, 0)
    shot(page, "compare-view")

    # An aggregate: mean over heads of each side, then A − B.
    before = renders(page)
    page.select_option("#aggregate", "mean")
    wait_render(page, before)
    wait_status(page, "compare-view", "ready")
    np.testing.assert_allclose(plot_z(page, "#cmp-plot-diff"), att_a[2].mean(axis=0) - att_b[2].mean(axis=0), atol=2e-4)

    # Two models sharing a tokenizer: the custom block is minilm's layer 0, so A − B is ~0 there.
    before = renders(page)
    page.select_option("#aggregate", "head")
    wait_render(page, before)
    compare(page, a, a, "minilm", "custom")
    wait_status(page, "compare-view", "ready")
    assert page.evaluate("document.getElementById('compare-view').dataset.layer") == "0"
    assert "only share layers 0–0" in page.inner_text("#compare-message")
    assert np.abs(plot_z(page, "#cmp-plot-diff")).max() <= 1e-3


def test_compare_link_round_trips(page, server):  # type: ignore[no-untyped-def]
    """Compare puts both texts and models in the URL; opening that link shows the same comparison."""
    from urllib.parse import parse_qs

    a, b = "The nurse said he was late.", "The nurse said she was late."
    page.goto(server + "/#view=compare&layer=1&head=3")
    wait_ready(page)
    compare(page, a, b, "minilm", "minilm")
    wait_status(page, "compare-view", "ready")
    fragment = parse_qs(page.evaluate("location.hash").lstrip("#"))
    assert (fragment["a"], fragment["b"], fragment["am"], fragment["bm"]) == ([a], [b], ["minilm"], ["minilm"])
    link = page.evaluate("location.href")

    fresh = page.context.new_page()
    fresh.goto(link)
    wait_status(fresh, "compare-view", "ready")
    assert fresh.input_value("#cmp-a-text") == a and fresh.input_value("#cmp-b-text") == b
    att_a, att_b = attention(server, a), attention(server, b)
    np.testing.assert_allclose(plot_z(fresh, "#cmp-plot-diff"), att_a[1, 3] - att_b[1, 3], atol=2.5e-4)
    # A link naming a model this server lacks falls back to the current choice instead of failing.
    fresh.goto(link.replace("bm=minilm", "bm=nope") + "&x=1")
    fresh.reload()
    wait_status(fresh, "compare-view", "ready")
    assert fresh.input_value("#cmp-b-model") == "minilm"
    fresh.close()


def test_compare_says_when_tokens_do_not_align(page, server):  # type: ignore[no-untyped-def]
    a, b = "The doctor said he was tired.", "The old doctor said that she was very tired."
    page.goto(server + "/#view=compare")
    wait_ready(page)
    compare(page, a, b)
    wait_status(page, "compare-view", "misaligned")
    reason = post(server, "/api/compare", {"a": {"text": a}, "b": {"text": b}, "layers": [0], "heads": [0]})["reason"]
    message = page.inner_text("#compare-message")
    assert "do not line up" in message and reason in message
    assert page.is_hidden("#cmp-plot-diff"), "no difference is drawn"
    assert page.evaluate("document.getElementById('cmp-plot-diff').data") is None
    # Both sides are still shown, each with its own tokens.
    assert plot_ticks(page, "#cmp-plot-a", "y") == post(server, "/api/attention", {"text": a})["labels"]
    assert plot_ticks(page, "#cmp-plot-b", "y") == post(server, "/api/attention", {"text": b})["labels"]
    shot(page, "compare-misaligned")


# -- explainer -------------------------------------------------------------------------------------


def test_explain_walks_seven_steps_and_softmax_equals_attention(page, server):  # type: ignore[no-untyped-def]
    text = "The cat sat on the mat."
    page.goto(server + "/")
    wait_ready(page)
    run_text(page, text)
    page.click("#tab-explain")
    wait_status(page, "explain-view", "gate")
    assert "Choose the custom model" in page.inner_text("#explain-view")
    assert page.is_hidden("#selectors")
    page.click("#explain-switch")
    wait_status(page, "explain-view", "ready")
    assert page.input_value("#model") == "custom"
    assert page.is_visible("#head-slider") and page.is_hidden("#layer-slider")

    slide(page, "head", 3)
    wait_until(page, "document.querySelector('#explain-steps [data-step=\"4\"] .mplot')?.data !== undefined")
    wait_until(page, "document.getElementById('explain-intro').textContent.includes('following head 3')")
    keys = page.evaluate("[...document.querySelectorAll('#explain-steps > li')].map(li => li.dataset.key)")
    assert keys == ["embeddings", "qkv", "scores", "weights", "weighted_sum", "residual_norm", "output"]
    titles = page.evaluate("[...document.querySelectorAll('#explain-steps > li h3')].map(h => h.textContent)")
    assert titles[0] == "Embeddings" and titles[3] == "Softmax weights" and titles[6] == "Linear output"
    for i in range(7):
        card = page.locator("#explain-steps > li").nth(i)
        assert card.locator(".formula").inner_text().strip()
        assert card.locator(".step-text").inner_text().strip()
        assert card.locator("figcaption .shape").count() >= 1
        assert card.locator(".mplot").count() == card.locator("figcaption").count()

    att = attention(server, text, "custom")  # (1, 12, T, T)
    tokens = post(server, "/api/attention", {"text": text, "model": "custom"})["labels"]  # what the ticks show
    T = len(tokens)
    softmax = plot_z(page, '.mplot[data-step="4"][data-matrix="A"]')
    np.testing.assert_allclose(softmax, att[0, 3], atol=TOL)
    np.testing.assert_allclose(softmax.sum(axis=1), 1, atol=2e-3)
    assert page.inner_text("#explain-steps [data-step='4'] figcaption .shape") == f"{T} × {T}"
    assert page.inner_text("#explain-steps [data-step='2'] figcaption .shape") == f"{T} × 32"
    assert plot_ticks(page, '.mplot[data-matrix="A"]', "y") == tokens
    # The scores step's softmax is the weights step (computed here from the page's own S).
    scores = plot_z(page, '.mplot[data-step="3"][data-matrix="S"]')
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    np.testing.assert_allclose(e / e.sum(axis=1, keepdims=True), att[0, 3], atol=1e-3)
    shot(page, "explain-view")


# -- sentence pairs --------------------------------------------------------------------------------


def test_pair_run_shows_both_segments_and_the_boundary(page, server):  # type: ignore[no-untyped-def]
    text, pair = "Where is the cat?", "The cat is on the mat."
    page.goto(server + "/")
    wait_ready(page)
    page.click("#pair-box summary")
    page.fill("#pair", pair)
    run_text(page, text)
    resp = post(server, "/api/attention", {"text": text, "text_pair": pair})
    tokens, segments = resp["tokens"], resp["segments"]
    assert ticks(page, "y") == resp["labels"] and ticks(page, "x") == resp["labels"]
    assert tokens.count("[SEP]") == 2 and set(segments) == {0, 1}
    boundary = segments.index(1)
    shapes = page.evaluate("document.getElementById('heatmap').layout.shapes")
    assert len(shapes) == 2, shapes
    assert {s["xref"] for s in shapes} == {"x", "paper"}
    assert all(s.get("x0") == boundary - 0.5 or s.get("y0") == boundary - 0.5 for s in shapes)
    # Drawn: one vertical and one horizontal red line inside the plot.
    assert page.locator("#heatmap .shapelayer path").count() == 2
    np.testing.assert_allclose(
        np.array(page.evaluate("document.getElementById('heatmap').data[0].z")),
        np.array(resp["attention"][0][0]),
        atol=1 / 255 + 1e-4,
    )
    assert "pair=" in page.url
    shot(page, "pair-run")


# -- hostile text ----------------------------------------------------------------------------------

EVIL = [
    "[CLS]",
    "<img src=x onerror=window.__pwned=1>",
    "<b>b</b>",
    "<script>window.__pwned=2</script>",
    "&amp;",
    "[SEP]",
]
MARKUP = "img, b, i, script, a, iframe"


def _json(route, body: dict) -> None:  # type: ignore[no-untyped-def]
    route.fulfill(status=200, content_type="application/json", body=json.dumps(body))


def _matrix(n: int, m: int, fill: float) -> list[list[float]]:
    return [[fill] * m for _ in range(n)]


def _side(tokens: list[str]) -> dict:
    t = len(tokens)
    return {
        "model": "<i>evil</i>",
        "kind": "encoder",
        "tokens": tokens,
        "special": [i in (0, t - 1) for i in range(t)],
        "segments": [0] * t,
        "truncated": False,
        "attention": [[_matrix(t, t, round(1 / t, 4))]],
    }


def _explain(tokens: list[str]) -> dict:
    t = len(tokens)
    steps = []
    for i, key in enumerate(["embeddings", "qkv", "scores", "weights", "weighted_sum", "residual_norm", "output"]):
        cols, width = ("tokens", t) if key in ("scores", "weights") else ("features", 4)
        steps.append(
            {
                "step": i + 1,
                "key": key,
                "title": f"<b>step</b> {i + 1}",
                "formula": "<img src=x onerror=window.__pwned=4>",
                "explanation": "<script>window.__pwned=5</script>",
                "parameters": [{"name": "<i>W</i>", "shape": [4, 4], "description": "<a href='javascript:1'>x</a>"}],
                "matrices": [
                    {
                        "name": "A" if key == "weights" else "<b>M</b>",
                        "label": "<img src=x onerror=window.__pwned=6>",
                        "shape": [t, width],
                        "rows": "tokens",
                        "columns": cols,
                        "values": _matrix(t, width, 0.25),
                    }
                ],
            }
        )
    info = {"model": "<i>evil</i>", "kind": "custom", "tokens": tokens, "special": [False] * t, "segments": [0] * t}
    return {**info, "truncated": False, "head": 0, "num_heads": 12, "embed_size": 4, "head_size": 4, "steps": steps}


def test_hostile_text_stays_inert_in_the_insight_tabs(page, server):  # type: ignore[no-untyped-def]
    page.goto(server + "/")
    wait_ready(page)
    # Real markup through the real model, in compare: BERT splits it into harmless pieces.
    hostile = "<img src=x onerror=alert(1)> <b>x</b>"
    page.click("#tab-compare")
    compare(page, hostile, hostile.replace("x</b>", "y</b>"))
    wait_status(page, "compare-view", "ready")
    assert "<" in plot_ticks(page, "#cmp-plot-a", "y")

    # Whole-markup tokens, model names, reasons and step texts from stubbed endpoints.
    aligned = {"layers": [0], "heads": [0], "view": "heads", "aligned": True, "reason": None,
               "mismatched_positions": [1], "a": _side(EVIL), "b": _side([*EVIL[:1], "<u>u</u>", *EVIL[2:]]),
               "diff": [[_matrix(len(EVIL), len(EVIL), 0.01)]]}  # fmt: skip
    page.route("**/api/compare", lambda route: _json(route, aligned))
    compare(page, "anything", "anything else")
    wait_status(page, "compare-view", "ready")
    assert plot_ticks(page, "#cmp-plot-a", "y")[1] == EVIL[1][:17] + "…"
    assert plot_ticks(page, "#cmp-plot-diff", "y")[2] == "<b>b</b>"
    assert "<img src=x onerror=window.__pwned=1> / <u>u</u>" in page.inner_text("#cmp-notes")
    page.unroute("**/api/compare")
    misaligned = {**aligned, "aligned": False, "diff": None, "mismatched_positions": [],
                  "reason": "<img src=x onerror=window.__pwned=7> differs"}  # fmt: skip
    page.route("**/api/compare", lambda route: _json(route, misaligned))
    compare(page, "anything", "something else")
    wait_status(page, "compare-view", "misaligned")
    assert "<img src=x onerror=window.__pwned=7> differs" in page.inner_text("#compare-message")
    assert page.evaluate(f"document.querySelectorAll('#compare-view :is({MARKUP})').length") == 0

    stats = post(server, "/api/stats", {"text": "a b c d"})
    stats.update(model="<img src=x onerror=window.__pwned=8>", tokens=EVIL)
    page.route("**/api/stats", lambda route: _json(route, stats))
    page.click("#tab-stats")
    wait_status(page, "stats-view", "ready")
    assert page.inner_text("#stats-caption").startswith("<img src=x onerror=window.__pwned=8> · ")
    assert page.evaluate(f"document.querySelectorAll('#stats-view :is({MARKUP})').length") == 0

    page.route("**/api/explain", lambda route: _json(route, _explain(EVIL)))
    page.select_option("#model", "custom")
    run_text(page, "anything at all")
    page.click("#tab-explain")
    wait_status(page, "explain-view", "ready")
    assert page.locator("#explain-steps > li").count() == 7
    assert page.locator("#explain-steps h3").first.inner_text() == "<b>step</b> 1"
    assert "<script>window.__pwned=5</script>" in page.inner_text("#explain-steps")
    assert plot_ticks(page, '.mplot[data-matrix="A"]', "x")[2] == "<b>b</b>"
    assert page.evaluate(f"document.querySelectorAll('#explain-view :is({MARKUP})').length") == 0
    x, y = cell_xy(page, '.mplot[data-matrix="A"]', 1, 2)
    page.mouse.move(x, y)
    wait_until(page, "!document.getElementById('tooltip').hidden", 10)
    assert page.inner_text("#tooltip").startswith("<img src=x onerror=window.__pwned=1> → <b>b</b>: ")
    assert page.evaluate("document.querySelectorAll('#tooltip *').length") == 2
    shot(page, "explain-hostile")
    assert page.evaluate("window.__pwned === undefined")
