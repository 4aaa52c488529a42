"""The encoder–decoder tab in real Chromium, on a server with tiny random T5 and BART models (built in the test).

The cross view must be a target × source matrix (target tokens down, source tokens across) holding the API's
`cross_attention` numbers; the decoder view the API's causal `decoder_attention`; the target box shows only for
an encoder–decoder model. The API's numbers are checked against transformers' eager attention in
tests/test_seq2seq.py; here the page must draw exactly what the API gives.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.browser.conftest import Recorder, renders, wait_ready, wait_render, wait_until
from tests.harness import headmap_serve
from tests.tiny_models import make_bart, make_bert, make_t5

pytestmark = pytest.mark.browser

SOURCE = "The cat sat on the mat because it was tired."
TARGET = "Die Katze saß auf der Matte."
COMPACT_TOL = 1 / 510 + 5e-5 + 1e-6  # the page draws the compact encoding; the reference is 4-decimal JSON
SCREENSHOT = Path("/work/wt/seq2seq.png")


@pytest.fixture(scope="module")
def s2s_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("s2s-page")
    models = f"bart={make_bart(root / 'bart')},t5={make_t5(root / 't5')},bert={make_bert(root / 'bert')}"
    env = {"HEADMAP_MODELS": models, "HEADMAP_BUILTIN_MODELS": "", "HEADMAP_DEFAULT_MODEL": "bart"}
    with headmap_serve(env) as srv:
        yield srv.url


@pytest.fixture
def s2s_page(browser, s2s_server: str) -> Iterator[object]:  # type: ignore[no-untyped-def]
    recorder = Recorder()
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    pg = context.new_page()
    pg.on("pageerror", lambda e: recorder.errors.append(str(e)))
    pg.on("request", lambda r: recorder.requests.append(r.url))
    yield pg
    context.close()
    assert recorder.errors == [], f"uncaught page errors: {recorder.errors}"
    outside = [u for u in recorder.requests if not u.startswith((s2s_server + "/", "data:", "blob:"))]
    assert outside == [], f"requests outside the server: {outside}"


def plotted(page) -> dict:  # type: ignore[no-untyped-def]
    return page.evaluate(
        """(() => { const gd = document.getElementById('s2s-plot');
                    return {z: gd.data[0].z, x: gd.layout.xaxis.ticktext, y: gd.layout.yaxis.ticktext,
                            part: gd.dataset.part, rows: Number(gd.dataset.rows), cols: Number(gd.dataset.cols),
                            title: gd.layout.title.text}; })()"""
    )


def slide(page, slider: str, value: int) -> None:  # type: ignore[no-untyped-def]
    page.evaluate(
        f"(() => {{ const el = document.getElementById('{slider}'); el.value = '{value}'; "
        "el.dispatchEvent(new Event('input')); })()"
    )


def run_with_target(page, model: str) -> None:  # type: ignore[no-untyped-def]
    runs = page.evaluate("document.getElementById('app').dataset.runs || '0'")
    page.select_option("#model", model)
    page.fill("#text", SOURCE)
    page.fill("#target", TARGET)
    page.press("#text", "Control+Enter")
    wait_until(page, f"(document.getElementById('app').dataset.runs || '0') !== '{runs}'", 180)
    wait_ready(page, 180)


@pytest.mark.parametrize("model", ["bart", "t5"])
def test_cross_view_is_target_by_source_with_the_apis_numbers(s2s_page, s2s_server: str, model: str) -> None:  # type: ignore[no-untyped-def]
    page = s2s_page
    page.goto(f"{s2s_server}/?lang=en")
    wait_ready(page, 180)
    assert page.is_visible("#target-box")
    run_with_target(page, model)
    assert page.is_visible("#tab-seq2seq")
    api = httpx.post(f"{s2s_server}/api/attention", json={"text": SOURCE, "target": TARGET, "model": model},
                     timeout=120).json()  # fmt: skip
    before = renders(page)
    page.click("#tab-seq2seq")
    wait_render(page, before, 60)
    wait_until(page, "document.getElementById('s2s-plot').dataset.part === 'cross'", 30)
    got = plotted(page)
    t, s = len(api["target_tokens"]), len(api["tokens"])
    assert (got["rows"], got["cols"]) == (t, s) and t != s
    assert np.array(got["z"]).shape == (t, s)  # target tokens down, source tokens across
    assert len(got["y"]) == t and len(got["x"]) == s
    assert "Katze" in "".join(api["target_labels"]) and "".join(got["y"]).count("Ka") >= 1
    np.testing.assert_allclose(np.array(got["z"]), np.array(api["cross_attention"])[0][0], atol=COMPACT_TOL, rtol=0)

    # Layer 1, head 2 through the sliders.
    before = renders(page)
    slide(page, "layer", 1)
    wait_render(page, before, 30)
    before = renders(page)
    slide(page, "head", 2)
    wait_render(page, before, 30)
    wait_until(page, "document.getElementById('s2s-plot').dataset.head === '2'", 30)
    np.testing.assert_allclose(np.array(plotted(page)["z"]), np.array(api["cross_attention"])[1][2], atol=COMPACT_TOL,
                               rtol=0)  # fmt: skip

    # The decoder's self-attention: target × target, the causal triangle.
    page.select_option("#s2s-part", "decoder")
    wait_until(page, "document.getElementById('s2s-plot').dataset.part === 'decoder'", 30)
    dec = np.array(plotted(page)["z"])
    assert dec.shape == (t, t)
    np.testing.assert_allclose(dec, np.array(api["decoder_attention"])[1][2], atol=COMPACT_TOL, rtol=0)
    assert np.all(np.triu(dec, k=1) == 0)
    if model == "bart":
        page.select_option("#s2s-part", "cross")
        wait_until(page, "document.getElementById('s2s-plot').dataset.part === 'cross'", 30)
        page.locator(".viewer").screenshot(path=str(SCREENSHOT))


def test_target_box_only_for_encoder_decoders_and_tab_goes_away(s2s_page, s2s_server: str) -> None:  # type: ignore[no-untyped-def]
    page = s2s_page
    page.goto(f"{s2s_server}/?lang=zh-CN#text=The+cat+sat.")  # the Chinese example is over 64 tokens here
    wait_ready(page, 180)
    assert page.is_visible("#target-box")
    assert page.inner_text("label[for=target]").startswith("目标文本")
    page.select_option("#model", "bert")
    assert not page.is_visible("#target-box")
    runs = page.evaluate("document.getElementById('app').dataset.runs || '0'")
    page.press("#text", "Control+Enter")
    wait_until(page, f"(document.getElementById('app').dataset.runs || '0') !== '{runs}'", 120)
    wait_ready(page, 120)
    assert not page.is_visible("#tab-seq2seq")  # an encoder's response has no decoder
