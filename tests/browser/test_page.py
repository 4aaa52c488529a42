"""The page in real headless Chromium against a real server: run, switch, grid, share, hostile text.

Every test's page also asserts (in the ``page`` fixture) that it requested nothing outside the
server, opened no dialog and raised no uncaught error. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import base64
import json
import re
import time
from urllib.parse import quote

import httpx
import numpy as np
import pytest

from tests.browser.conftest import (
    ARTIFACTS,
    hover_cell,
    renders,
    run_text,
    shot,
    shown,
    ticks,
    wait_ready,
    wait_render,
    wait_until,
)

pytestmark = pytest.mark.browser

SENTENCE = "The cat sat on the mat, and the cat slept."
WEIGHT_TOL = 1 / 255 + 1e-4  # compact uint8 levels against the JSON's 4 decimals


def api(server: str, text: str, **extra: object) -> dict:
    r = httpx.post(f"{server}/api/attention", json={"text": text, **extra}, timeout=120)
    r.raise_for_status()
    return r.json()


def attention_requests(requests: list[str]) -> int:
    return sum(u.endswith("/api/attention") for u in requests)


def rollout(att: np.ndarray, upto: int) -> np.ndarray:
    """Abnar & Zuidema rollout of (L, H, T, T) weights up to layer `upto` (inclusive)."""
    out = None
    for layer in range(upto + 1):
        a = 0.5 * att[layer].mean(axis=0) + 0.5 * np.eye(att.shape[-1])
        a /= a.sum(axis=-1, keepdims=True)
        out = a if out is None else a @ out
    return out


def select(page, selector: str, value: str) -> None:  # type: ignore[no-untyped-def]
    before = renders(page)
    page.select_option(selector, value)
    wait_render(page, before)


def test_run_draws_the_api_tokens_with_hover(page, server, recorder):  # type: ignore[no-untyped-def]
    page.goto(server + "/")
    wait_ready(page)
    assert page.input_value("#text").strip(), "text box is prefilled"
    assert "minilm" in page.input_value("#model")

    run_text(page, SENTENCE)
    resp = api(server, SENTENCE)
    tokens = resp["labels"]  # what each token covers in the text (uncased minilm: "The", not "the")
    # Repeated tokens ("the", "cat") keep their own rows and columns: one tick per token, in order.
    assert ticks(page, "y") == tokens
    assert ticks(page, "x") == tokens
    assert [t.lower() for t in tokens].count("the") == 3

    expected = api(server, SENTENCE)["attention"][0][0]
    tip = hover_cell(page, 2, 3)
    m = re.match(r"(\S+) → (\S+): ([\d.]+)", tip)
    assert m, tip
    assert (m[1], m[2]) == (tokens[2], tokens[3])
    assert abs(float(m[3]) - expected[2][3]) <= WEIGHT_TOL + 5e-4
    shot(page, "head-view")

    served = [u for u in recorder.requests if u.startswith(server)]
    assert any(u.split("?")[0].endswith("/vendor/plotly.min.js") for u in served)
    assert attention_requests(recorder.requests) == 2  # the prefilled example on load, then ours


def test_layer_head_aggregates_switch_in_the_page(page, server, recorder):  # type: ignore[no-untyped-def]
    page.goto(server + "/")
    wait_ready(page)
    run_text(page, SENTENCE)
    sent = attention_requests(recorder.requests)
    att = np.array(api(server, SENTENCE)["attention"])  # (L, H, T, T)

    # Keyboard: focus the heatmap; Down twice = layer 2, Right three times = head 3.
    page.focus("#heatmap")
    for key in ["ArrowDown", "ArrowDown", "ArrowRight", "ArrowRight", "ArrowRight"]:
        before = renders(page)
        page.keyboard.press(key)
        wait_render(page, before)
    view = shown(page)
    assert "layer 2 · head 3" in view["titleText"]
    assert page.input_value("#layer") == "2" and page.input_value("#head") == "3"
    np.testing.assert_allclose(np.array(view["z"]), att[2, 3], atol=WEIGHT_TOL)

    select(page, "#aggregate", "mean")
    np.testing.assert_allclose(np.array(shown(page)["z"]), att[2].mean(axis=0), atol=WEIGHT_TOL)
    assert "mean over 12 heads" in shown(page)["titleText"]

    select(page, "#aggregate", "max")
    np.testing.assert_allclose(np.array(shown(page)["z"]), att[2].max(axis=0), atol=WEIGHT_TOL)

    select(page, "#aggregate", "rollout")
    before = renders(page)
    page.fill("#layer", "5")
    page.dispatch_event("#layer", "input")
    wait_render(page, before)
    z = np.array(shown(page)["z"])
    np.testing.assert_allclose(z, rollout(att, 5), atol=0.01)
    np.testing.assert_allclose(z.sum(axis=1), 1, atol=1e-3)
    assert "rollout, layers 0–5" in shown(page)["titleText"]

    # Hiding special tokens drops [CLS]/[SEP] and renormalises every row.
    before = renders(page)
    page.check("#hide-special")
    wait_render(page, before)
    assert ticks(page, "y") == api(server, SENTENCE)["labels"][1:-1]
    np.testing.assert_allclose(np.array(shown(page)["z"]).sum(axis=1), 1, atol=1e-3)

    assert attention_requests(recorder.requests) == sent, "switching must not ask the server again"


def test_merge_words_sums_keys_and_averages_queries(page, server):  # type: ignore[no-untyped-def]
    text = "Tokenization is unbelievably tiresome."
    page.goto(server + "/#" + "merge=1&agg=head&layer=1&head=4&text=" + quote(text))
    wait_ready(page)
    resp = api(server, text)
    tokens = resp["tokens"]
    assert any(t.startswith("##") for t in tokens)
    # Reference: words from the ## rule; sum over key pieces, mean over query pieces.
    words: list[list[int]] = []
    for i, t in enumerate(tokens):
        if t.startswith("##") and words:
            words[-1].append(i)
        else:
            words.append([i])
    labels = ["".join(resp["labels"][j] for j in w) for w in words]  # the text the pieces cover
    assert ticks(page, "y") == labels
    a = np.array(resp["attention"][1][4])
    expected = np.array([[a[np.ix_(q, k)].sum(axis=1).mean() for k in words] for q in words])
    z = np.array(shown(page)["z"])
    np.testing.assert_allclose(z, expected, atol=WEIGHT_TOL)
    np.testing.assert_allclose(z.sum(axis=1), 1, atol=0.01)


def test_model_grid_has_every_head_and_opens_one(page, server):  # type: ignore[no-untyped-def]
    page.goto(server + "/")
    wait_ready(page)
    run_text(page, SENTENCE)
    page.click("#tab-model")
    wait_until(page, "document.getElementById('app').dataset.view === 'model'")
    assert page.locator("#grid button.cell canvas").count() == 6 * 12
    shot(page, "model-view")
    _record_timing("model_grid_render_ms_14_tokens", float(page.get_attribute("#app", "data-render-ms")))

    page.click("#grid button.cell[data-layer='3'][data-head='7']")
    wait_until(page, "document.getElementById('app').dataset.view === 'head'")
    wait_until(page, "document.querySelector('#heatmap .gtitle')?.textContent.includes('layer 3 · head 7')")
    assert page.get_attribute("#tab-head", "aria-selected") == "true"


def test_shared_url_restores_the_view(page, server, browser):  # type: ignore[no-untyped-def]
    page.goto(server + "/")
    wait_ready(page)
    run_text(page, "Colourless green ideas sleep furiously.")
    page.select_option("#aggregate", "mean")
    page.fill("#layer", "4")
    page.dispatch_event("#layer", "input")
    page.check("#hide-special")
    page.select_option("#colorscale", "viridis")
    page.select_option("#range", "one")
    before = renders(page)
    page.click("#tab-model")
    wait_render(page, before)
    url = page.url
    assert "text=Colourless" in url and "view=model" in url and "agg=mean" in url

    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    other = context.new_page()
    try:
        other.goto(url)
        wait_ready(other)
        assert other.input_value("#text") == "Colourless green ideas sleep furiously."
        assert other.get_attribute("#tab-model", "aria-selected") == "true"
        assert other.input_value("#aggregate") == "mean"
        assert other.input_value("#layer") == "4"
        assert other.is_checked("#hide-special")
        assert other.input_value("#colorscale") == "viridis"
        assert other.input_value("#range") == "one"
        other.click("#tab-head")
        wait_until(other, "document.querySelector('#heatmap .gtitle')?.textContent.includes('layer 4 · mean')")
        assert "[CLS]" not in ticks(other, "y")
        shot(other, "restored-from-url")
    finally:
        context.close()


HOSTILE_TOKENS = [
    "[CLS]",
    "<img src=x onerror=window.__pwned=1>",
    "<b>bold</b>",
    "<script>window.__pwned=2</script>",
    "&amp;",
    "<a href='javascript:window.__pwned=3'>x</a>",
    "$x$",
    "[SEP]",
]


def _fake_response(tokens: list[str], model: str) -> dict:
    """A well-formed compact response with the given tokens (uniform attention, 1 layer x 2 heads)."""
    t = len(tokens)
    levels = np.full((1, 2, t, t), 255 // t, dtype=np.uint8)
    return {
        "model": model,
        "kind": "encoder",
        "tokens": tokens,
        "offsets": [None, *([[0, 1]] * (t - 2)), None],
        "special": [True, *([False] * (t - 2)), True],
        "unknown": [False] * t,
        "segments": [0] * t,
        "layers": [0],
        "heads": [0, 1],
        "attention": None,
        "attention_compact": {
            "dtype": "uint8",
            "shape": [1, 2, t, t],
            "scale": 1 / 255,
            "data": base64.b64encode(levels.tobytes()).decode(),
        },
        "truncated": False,
    }


def test_hostile_text_stays_inert(page, server):  # type: ignore[no-untyped-def]
    page.goto(server + "/")
    wait_ready(page)
    # 1. Real text through the real model: BERT splits the markup into pieces; all stay text.
    hostile = "<img src=x onerror=alert(1)> <b>x</b> <script>alert(2)</script>"
    run_text(page, hostile)
    assert ticks(page, "y") == api(server, hostile)["labels"]
    assert "<" in ticks(page, "y") and "script" in ticks(page, "y")
    assert page.url.count("<") == 0, "the shared URL carries the text percent-encoded"

    # 2. Tokens that are whole markup strings (as a BPE model could produce), from a stubbed API.
    page.route(
        "**/api/attention",
        lambda route: route.fulfill(
            status=200,
            content_type="application/json",
            body=json.dumps(_fake_response(HOSTILE_TOKENS, "<i>evil</i>")),
        ),
    )
    run_text(page, "anything")
    # Long labels are shortened on the axes (the tooltip has them whole).
    labels = [t if len(t) <= 18 else t[:17] + "…" for t in HOSTILE_TOKENS]
    assert ticks(page, "y") == labels
    assert ticks(page, "x") == labels
    view = shown(page)
    assert view["titleText"].startswith("<i>evil</i> · layer")
    markup = page.evaluate("document.querySelectorAll('#head-view :is(img, b, i, script, a)').length")
    assert markup == 0
    tip = hover_cell(page, 1, 2)
    assert tip.startswith("<img src=x onerror=window.__pwned=1> → <b>bold</b>: ")
    assert page.evaluate("document.querySelectorAll('#tooltip *').length") == 2  # two text lines, no markup
    with page.expect_download() as dl:
        page.click("#export-csv")
    assert re.fullmatch(r"[A-Za-z0-9._-]+", dl.value.suggested_filename), dl.value.suggested_filename
    csv = dl.value.path().read_text(encoding="utf-8-sig")
    assert '"<img src=x onerror=window.__pwned=1>"' in csv
    shot(page, "hostile-text")
    assert page.evaluate("window.__pwned === undefined")


def test_long_input_unicode_and_errors(page, server):  # type: ignore[no-untyped-def]
    page.goto(server + "/")
    wait_ready(page)

    # 128 tokens: time to first heatmap, measured from the key press to the drawn plot.
    text128 = " ".join(["the quick brown fox jumps over the lazy dog"] * 14)
    t0 = time.perf_counter()
    run_text(page, text128)
    elapsed = (time.perf_counter() - t0) * 1000
    _record_timing(f"first_heatmap_ms_{len(api(server, text128)['tokens'])}_tokens", elapsed)

    # ~500 tokens: labels thinned to fit, every label back when zoomed in.
    long_text = " ".join(["Attention is all you need, said the paper in 2017."] * 38)
    t0 = time.perf_counter()
    run_text(page, long_text)
    elapsed = (time.perf_counter() - t0) * 1000
    n = len(api(server, long_text, layers=[0], heads=[0])["tokens"])
    _record_timing(f"first_heatmap_ms_{n}_tokens", elapsed)
    _record_timing(f"head_view_render_ms_{n}_tokens", float(page.get_attribute("#app", "data-render-ms")))
    assert 400 < n <= 512
    assert 10 < len(ticks(page, "y")) < 80
    shot(page, "long-input")
    page.evaluate("Plotly.relayout('heatmap', {'xaxis.range': [99.5, 119.5], 'yaxis.range': [119.5, 99.5]})")
    wait_until(page, "document.querySelectorAll('#heatmap-labels .ytick').length === 20")
    before = renders(page)
    page.click("#tab-model")
    wait_render(page, before)
    _record_timing(f"model_grid_render_ms_{n}_tokens", float(page.get_attribute("#app", "data-render-ms")))
    page.click("#tab-head")

    # CJK, RTL and emoji: the labels are the text each token covers (the response's labels); an [UNK] is
    # visibly marked and still shows the text it replaced (⟨😀⟩), ⟨UNK⟩ only where the labels know none.
    mixed = "日本語 שלום עולם 😀"
    run_text(page, mixed)
    resp = api(server, mixed)
    tokens = resp["tokens"]
    expected = [
        (f"⟨{label}⟩" if label != token else "⟨UNK⟩") if u else label
        for label, token, u in zip(resp["labels"], tokens, resp["unknown"], strict=True)
    ]
    assert ticks(page, "y") == expected
    marked = [x for x, u in zip(ticks(page, "x"), resp["unknown"], strict=True) if u]
    assert marked and all(x.startswith("⟨") and x.endswith("⟩") and x != "⟨UNK⟩" for x in marked), marked
    shot(page, "unicode")

    # Errors from the API appear readably.
    page.fill("#text", "   ")
    page.press("#text", "Control+Enter")
    wait_until(page, "document.getElementById('app').dataset.state === 'error'")
    assert "Nothing to analyse" in page.inner_text("#error")
    assert "empty_text" in page.inner_text("#error")
    too_long = "word " * 600
    page.fill("#text", too_long)
    page.click("#run")
    wait_until(page, "document.getElementById('error').innerText.includes('413')")
    assert "token" in page.inner_text("#error-detail").lower()
    shot(page, "error")


def test_exports(page, server):  # type: ignore[no-untyped-def]
    page.goto(server + "/#layer=1&head=2")
    wait_ready(page)
    resp = api(server, page.input_value("#text"))
    with page.expect_download() as dl:
        page.click("#export-png")
    assert dl.value.suggested_filename == "headmap_minilm_L1_H2.png"
    assert dl.value.path().read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    with page.expect_download() as dl:
        page.click("#export-csv")
    lines = dl.value.path().read_text(encoding="utf-8-sig").splitlines()
    assert len(lines) == len(resp["tokens"]) + 1
    header = [f.strip('"') for f in lines[0].split(",")]
    assert header[1:] == resp["labels"]  # the CSV is labelled with what the tokens cover
    first = [float(v) for v in lines[1].split(",")[1:]]
    np.testing.assert_allclose(first, resp["attention"][1][2][0], atol=WEIGHT_TOL)

    with page.expect_download() as dl:
        page.click("#export-json")
    saved = json.loads(dl.value.path().read_text(encoding="utf-8"))
    assert saved["tokens"] == resp["tokens"] and saved["attention_compact"]["shape"][:2] == [6, 12]

    before = renders(page)
    page.click("#tab-model")
    wait_render(page, before)
    with page.expect_download() as dl:
        page.click("#export-png")
    assert dl.value.suggested_filename == "headmap_minilm_model_view.png"
    assert dl.value.path().read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _record_timing(name: str, ms: float) -> None:
    """Append a measurement to test-artifacts/timings.json (read by people, not asserted)."""
    path = ARTIFACTS / "timings.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = round(ms, 1)
    path.write_text(json.dumps(data, indent=2))


def test_hostile_text_round_trips_through_the_shared_url(page, server):  # type: ignore[no-untyped-def]
    """A shared link carrying markup restores it as plain text in the box and the plot; nothing runs."""
    hostile = '"><img src=x onerror=window.__pwned=1><script>window.__pwned=2</script> javascript:alert(3)'
    page.goto(server + "/")
    wait_ready(page)
    run_text(page, hostile)
    want = ticks(page, "y")  # long inputs thin their labels, so compare with the first run's
    assert want and any("<" in t for t in want)
    url = page.url
    assert "<" not in url and ">" not in url and '"' not in url  # percent-encoded
    page.goto("about:blank")
    page.goto(url)
    wait_ready(page)
    assert page.input_value("#text") == hostile
    deadline = time.monotonic() + 60
    while ticks(page, "y") != want and time.monotonic() < deadline:  # the restored text runs by itself
        time.sleep(0.1)
    assert ticks(page, "y") == want
    markup = page.evaluate("document.querySelectorAll('main :is(img, script:not([src]), a[href^=javascript])').length")
    assert markup == 0
    assert page.evaluate("window.__pwned === undefined")
