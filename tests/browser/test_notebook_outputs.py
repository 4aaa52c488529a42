"""The example notebook's HTML outputs in headless Chromium, as a notebook frontend shows them: in one page.

No server: the outputs are put into an empty page (``set_content``) and every request is recorded and
refused, so a figure that needs the network fails here.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("nbclient")

from tests.browser.conftest import ARTIFACTS, wait_until
from tests.notebook_run import executed_example, html_outputs

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def nb_page(browser) -> Iterator[tuple[object, list[str], list[str]]]:  # type: ignore[no-untyped-def]
    """(page, requests, errors): requests are recorded and aborted, page errors collected."""
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    requests: list[str] = []
    errors: list[str] = []

    def refuse(route):  # type: ignore[no-untyped-def]
        requests.append(route.request.url)
        route.abort()

    context.route("**/*", refuse)
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield page, requests, errors
    context.close()


def open_outputs(page, outputs: list[str]) -> None:  # type: ignore[no-untyped-def]
    body = "\n".join(f'<div class="cell-output">{html}</div>' for html in outputs)
    # parsing plotly.js (4.8 MB) inline takes seconds on a busy machine: a generous limit, not a timing check
    page.set_content(
        f"<!doctype html><html><head><meta charset='utf-8'></head><body>{body}</body></html>", timeout=180_000
    )
    wait_until(page, f"document.querySelectorAll('.headmap-output[data-ready=\"1\"]').length === {len(outputs)}", 90)


def head_plot(page, index: int) -> dict:  # type: ignore[no-untyped-def]
    return page.evaluate(
        f"""(() => {{ const root = document.querySelectorAll('.headmap-output')[{index}];
                      const gd = root.querySelector('[data-hm="head-plot"]');
                      const data = JSON.parse(root.querySelector('[data-hm="data"]').textContent);
                      return {{z: gd.data[0].z, shown: root.dataset.shown, tokens: data.tokens.length,
                              drawn: gd.querySelectorAll('.main-svg').length,
                              cells: root.querySelectorAll('canvas.hm-cell').length,
                              rows: root.querySelectorAll('[data-hm="stat-table"] tbody tr').length}}; }})()"""
    )


def test_outputs_draw_offline_and_react_independently(nb_page) -> None:  # type: ignore[no-untyped-def]
    page, requests, errors = nb_page
    outputs = html_outputs(executed_example())
    open_outputs(page, outputs)
    for i in range(len(outputs)):
        view = head_plot(page, i)
        t = view["tokens"]
        assert view["drawn"] > 0 and len(view["z"]) == t and all(len(row) == t for row in view["z"])
        # a heatmap of attention: every query row sums to 1 (weights stored to 1/510 each)
        assert all(abs(sum(row) - 1) <= t / 510 + 1e-9 for row in view["z"]), i
        assert view["cells"] > 0 and view["rows"] == view["cells"]  # grid canvas and statistics row per head
    # the minilm output (index 2) and the bertviz-style one (index 3): change layer and head in one only
    before, before_minilm = head_plot(page, 3), head_plot(page, 2)
    page.locator(".headmap-output").nth(2).locator('[data-hm="layer"]').select_option("4")
    page.locator(".headmap-output").nth(2).locator('[data-hm="head"]').select_option("7")
    wait_until(page, "document.querySelectorAll('.headmap-output')[2].dataset.shown === '4/7'", 10)
    changed, after = head_plot(page, 2), head_plot(page, 3)
    assert changed["z"] != before_minilm["z"]  # output 2 redrew with layer 4, head 7
    assert after["shown"] == before["shown"] == "0/0" and after["z"] == before["z"]
    # a click in the model grid of output 3 opens that head there, and only there
    page.locator(".headmap-output").nth(3).locator("canvas.hm-cell").nth(13).click()
    wait_until(page, "document.querySelectorAll('.headmap-output')[3].dataset.shown === '1/1'", 10)
    assert head_plot(page, 2)["shown"] == "4/7"
    assert requests == [], f"requests left the page: {requests}"
    assert errors == [], errors


def test_an_output_above_the_plotly_carrier_still_draws(nb_page) -> None:  # type: ignore[no-untyped-def]
    """Outputs render in any order (lazy rendering, cells moved): one without plotly.js waits for it."""
    page, requests, errors = nb_page
    outputs = html_outputs(executed_example())
    open_outputs(page, [outputs[2], outputs[0]])
    assert head_plot(page, 0)["drawn"] > 0
    assert requests == [] and errors == []


def test_without_scripts_the_static_grid_shows(browser) -> None:  # type: ignore[no-untyped-def]
    """A viewer that runs no scripts (GitHub, an untrusted notebook): the summary and the PNG of every head."""
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1000, "height": 900})
    requests: list[str] = []

    def refuse(route):  # type: ignore[no-untyped-def]
        requests.append(route.request.url)
        route.abort()

    context.route("**/*", refuse)
    page = context.new_page()
    outputs = html_outputs(executed_example())
    page.set_content(f"<!doctype html><html><head><meta charset='utf-8'></head><body>{outputs[2]}</body></html>")
    shown = page.evaluate(
        """(() => { const img = document.querySelector('img[data-hm="static"]');
                    return {w: img.naturalWidth, h: img.naturalHeight, visible: img.offsetParent !== null,
                            body: document.querySelector('[data-hm="body"]').hidden}; })()"""
    )
    # minilm in the example: 6 layers x 12 heads, 2 px gaps around tiles of at least 40 px
    assert shown["visible"] and shown["body"] and shown["w"] >= 2 + 12 * 42 and shown["h"] >= 2 + 6 * 42
    page.screenshot(path=str(ARTIFACTS / "notebook-static.png"), full_page=True)
    assert requests == []
    context.close()
