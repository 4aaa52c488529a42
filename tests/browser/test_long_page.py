"""Long inputs in the page (issue 13), end to end in Chromium: an 8,192-token text on a tiny random
Llama served by ``headmap serve`` opens on the run's overview; a dragged box and the scroll wheel zoom
in until the exact tile shows, whose values are the API's tile for that range; the minimap and the
token search move the view; the URL keeps the zoom; the model grid is small overviews; a run the
server forgot is made again by the page; no request leaves the server.

The reference for every number is the runs API itself, asked by this test for its own run of the same
text (the API's agreement with eager attention is the runs backend's tests' job).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.browser.conftest import (
    ARTIFACTS,
    Recorder,
    renders,
    run_text,
    shot,
    ticks,
    wait_ready,
    wait_render,
    wait_until,
)
from tests.harness import headmap_serve

pytestmark = pytest.mark.browser

TOKENS = 8192
MODEL = "tllama"
APP = "document.getElementById('app').dataset"


def make_long_llama(folder: Path) -> Path:
    """The tests' tiny Llama (2 layers, 4 query heads, 2 key/value heads) with room for 8,192 positions."""
    import torch
    from transformers import LlamaConfig, LlamaModel

    from tests import tiny_models

    tok = tiny_models._byte_level_tokenizer(folder, TOKENS)
    config = LlamaConfig(**{**tiny_models._llm_common(tok), "max_position_embeddings": TOKENS})
    torch.manual_seed(5)
    LlamaModel(config).eval().save_pretrained(folder)
    return folder


def text_of(folder: Path, count: int) -> str:
    """Sentences of the tiny corpus repeated to exactly `count` tokens of the model's tokenizer."""
    from transformers import AutoTokenizer

    from tests import tiny_models

    tok = AutoTokenizer.from_pretrained(folder)
    size = lambda s: len(tok(s)["input_ids"])  # noqa: E731
    unit = " ".join(tiny_models.CORPUS[:4])
    words = " ".join([unit] * math.ceil(count / size(unit) + 1)).split(" ")
    lo, hi = 1, len(words)  # the most words that stay within `count` tokens
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if size(" ".join(words[:mid])) <= count else (lo, mid - 1)
    text = " ".join(words[:lo])
    while size(text) < count:
        text += " the"  # one token
    assert size(text) == count
    return text


@pytest.fixture(scope="module")
def long_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL, text): `headmap serve` with only the tiny Llama, and an 8,192-token text for it."""
    folder = make_long_llama(tmp_path_factory.mktemp("long-llama"))
    env = {"HEADMAP_BUILTIN_MODELS": "", "HEADMAP_MODELS": f"{MODEL}={folder}", "HEADMAP_DEFAULT_MODEL": MODEL}
    ARTIFACTS.mkdir(exist_ok=True)
    with headmap_serve(env, log=ARTIFACTS / "long-server.log") as srv:
        yield srv.url, text_of(folder, TOKENS)


@pytest.fixture
def long_page(browser, long_server: tuple[str, str]) -> Iterator[tuple[object, Recorder]]:  # type: ignore[no-untyped-def]
    """A fresh page on the long server; afterwards: nothing asked of another origin, no page error."""
    url = long_server[0]
    rec = Recorder()
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    pg = context.new_page()
    pg.on("request", lambda r: rec.requests.append(f"{r.method} {r.url}"))
    pg.on("pageerror", lambda e: rec.errors.append(str(e)))
    yield pg, rec
    context.close()
    outside = [u for u in rec.requests if not u.split(" ", 1)[1].startswith((url + "/", "data:", "blob:"))]
    assert outside == [], f"requests outside the server: {outside}"
    assert rec.errors == [], f"uncaught page errors: {rec.errors}"


def dataset(page, key: str) -> str:  # type: ignore[no-untyped-def]
    return str(page.evaluate(f"{APP}.{key} ?? ''"))


def shown_range(page) -> tuple[int, int, int, int]:  # type: ignore[no-untyped-def]
    q, k = dataset(page, "longRange").split(",")
    q0, q1 = map(int, q.split("-"))
    k0, k1 = map(int, k.split("-"))
    return q0, q1, k0, k1


def plot_box(page) -> tuple[float, float, float, float]:  # type: ignore[no-untyped-def]
    """Left, top, width, height of the head view's plot area in page pixels."""
    return tuple(  # type: ignore[return-value]
        page.evaluate(
            """(() => { const gd = document.getElementById('heatmap'); const fl = gd._fullLayout;
                        const r = gd.getBoundingClientRect();
                        return [r.left + fl.xaxis._offset, r.top + fl.yaxis._offset,
                                fl.xaxis._length, fl.yaxis._length]; })()"""
        )
    )


def figure(page) -> dict:  # type: ignore[no-untyped-def]
    return page.evaluate(
        """(() => { const d = document.getElementById('heatmap').data[0];
                    return {z: d.z, x: d.x ?? null, y: d.y ?? null, x0: d.x0 ?? null, y0: d.y0 ?? null}; })()"""
    )


def wait_drawn(page, q0: int, q1: int, k0: int, k1: int) -> None:  # type: ignore[no-untyped-def]
    """Until the figure is the exact tile of that range."""
    wait_until(
        page,
        f"""(() => {{ const d = document.getElementById('heatmap').data?.[0];
                     return {APP}.longRange === '{q0}-{q1},{k0}-{k1}' && d && d.x0 === {k0} && d.y0 === {q0}
                            && d.z.length === {q1 - q0} && d.z[0].length === {k1 - k0}; }})()""",
        60,
    )


def api_tile(api: httpx.Client, run: str, head: int, q0: int, q1: int, k0: int, k1: int) -> np.ndarray:
    """The API's exact weights of that range (the reference)."""
    params = {"layer": 0, "head": head, "q0": q0, "q1": q1, "k0": k0, "k1": k1}
    return np.array(api.get(f"{run}/tile", params=params).raise_for_status().json()["weights"])


def short(label: str) -> str:
    return label if len(label) <= 18 else label[:17] + "…"


def test_long_input_overview_zoom_tile_minimap_search(long_page, long_server) -> None:  # type: ignore[no-untyped-def]
    page, rec = long_page
    url, text = long_server
    api = httpx.Client(base_url=url, timeout=300)
    # The reference: the API's own run of the same text.
    info = api.post("/api/runs", json={"text": text, "model": MODEL}).raise_for_status().json()
    assert info["num_tokens"] == TOKENS
    run = f"/api/runs/{info['run_id']}"
    labels = info["labels"]

    page.goto(url + "/")
    wait_ready(page)
    run_text(page, text, timeout=300)

    # Opens on the overview of layer 0, head 0: the API's 256 x 256 block maxima, in token coordinates.
    assert dataset(page, "longView") == "overview"
    assert shown_range(page) == (0, TOKENS, 0, TOKENS)
    ov = api.get(f"{run}/overview", params={"layer": 0, "head": 0, "size": 256, "reduce": "max"}).json()
    fig = figure(page)
    np.testing.assert_allclose(np.array(fig["z"]), np.array(ov["matrix"]), atol=1e-6)
    assert fig["x"] == [b - 0.5 for b in ov["k_bounds"]] and fig["y"] == [b - 0.5 for b in ov["q_bounds"]]
    assert 10 < len(ticks(page, "y")) < 80  # labels thinned to fit
    shot(page, "long-overview")

    # A dragged box zooms in (still more than 256 tokens a side: the overview's blocks, closer).
    x, y, w, h = plot_box(page)
    page.mouse.move(x + w * 0.40, y + h * 0.40)
    page.mouse.down()
    page.mouse.move(x + w * 0.55, y + h * 0.55, steps=6)
    page.mouse.up()
    wait_until(page, f"{APP}.longRange !== '0-{TOKENS},0-{TOKENS}'", 60)
    q0, q1, k0, k1 = shown_range(page)
    assert 256 < q1 - q0 < 0.2 * TOKENS and 256 < k1 - k0 < 0.2 * TOKENS
    assert abs(q0 - 0.40 * TOKENS) < 0.02 * TOKENS and abs(k0 - 0.40 * TOKENS) < 0.02 * TOKENS
    assert dataset(page, "longView") == "overview"
    assert f"q={q0}-{q1}" in page.url and f"k={k0}-{k1}" in page.url

    # The wheel zooms further, until the view is the exact tile.
    page.mouse.move(x + w * 0.5, y + h * 0.5)
    for _ in range(80):
        if dataset(page, "longView") == "tile":
            break
        page.mouse.wheel(0, -120)
        time.sleep(0.15)
    wait_until(page, f"{APP}.longView === 'tile'", 60)
    time.sleep(0.5)  # the last wheel steps settle
    q0, q1, k0, k1 = shown_range(page)
    wait_drawn(page, q0, q1, k0, k1)
    assert 0 < q1 - q0 <= 256 and 0 < k1 - k0 <= 256
    fig = figure(page)
    np.testing.assert_allclose(np.array(fig["z"]), api_tile(api, run, 0, q0, q1, k0, k1), atol=1e-6)
    assert (fig["x0"], fig["y0"]) == (k0, q0)
    shot(page, "long-tile")

    # Zoomed to 24 tokens a side, every token's label is there (the run's labels of that range).
    ranges = f"{{'xaxis.range': [{k0 - 0.5}, {k0 + 23.5}], 'yaxis.range': [{q0 + 23.5}, {q0 - 0.5}]}}"
    page.evaluate(f"Plotly.relayout('heatmap', {ranges})")
    wait_drawn(page, q0, q0 + 24, k0, k0 + 24)
    wait_until(page, "document.querySelectorAll('#heatmap-labels .ytick').length === 24", 30)
    assert ticks(page, "y") == [short(s) for s in labels[q0 : q0 + 24]]
    assert ticks(page, "x") == [short(s) for s in labels[k0 : k0 + 24]]
    expected = api_tile(api, run, 0, q0, q0 + 24, k0, k0 + 24)
    np.testing.assert_allclose(np.array(figure(page)["z"]), expected, atol=1e-6)
    shot(page, "long-tile-labels")

    # The minimap: its box is the view; a click moves the view there, the span kept.
    side = page.evaluate("document.getElementById('minimap').getBoundingClientRect().width")
    box = page.evaluate("(s => [parseFloat(s.left), parseFloat(s.top)])(document.getElementById('minimap-view').style)")
    assert abs(box[0] - k0 / TOKENS * side) < 1 and abs(box[1] - q0 / TOKENS * side) < 1
    mm = page.evaluate("(r => [r.left, r.top])(document.getElementById('minimap').getBoundingClientRect())")
    before = dataset(page, "longRange")
    page.mouse.click(mm[0] + side * 0.75, mm[1] + side * 0.25)
    wait_until(page, f"{APP}.longRange !== '{before}'", 60)
    q0, q1, k0, k1 = shown_range(page)
    assert (q1 - q0, k1 - k0) == (24, 24)
    slack = 2 * TOKENS / side  # two pixels of the minimap
    assert abs((q0 + q1) / 2 - 0.25 * TOKENS) < slack and abs((k0 + k1) / 2 - 0.75 * TOKENS) < slack

    # The search box jumps to the first token whose text contains the query, then to the next.
    hits = [i for i, s in enumerate(labels) if "market" in s.lower()]
    assert len(hits) > 2
    page.fill("#token-search", "market")
    for hit in hits[:2]:
        page.press("#token-search", "Enter")
        wait_until(page, f"document.getElementById('token-search-result').dataset.found === '{hit}'", 30)
        wait_until(
            page,
            f"""(() => {{ const [q, k] = {APP}.longRange.split(',').map(r => r.split('-').map(Number));
                         return {APP}.longView === 'tile' && q[0] <= {hit} && {hit} < q[1]
                                && k[0] <= {hit} && {hit} < k[1]; }})()""",
            60,
        )
        q0, q1, k0, k1 = shown_range(page)
        assert (q1 - q0, k1 - k0) == (24, 24) and q0 <= hit < q1 and k0 <= hit < k1
    assert "market" in page.inner_text("#token-search-result")

    # The URL keeps the zoom: the link opens on the same range.
    link = page.url
    zoomed = dataset(page, "longRange")
    other = page.context.new_page()
    other.on("pageerror", lambda e: rec.errors.append(str(e)))
    other.goto(link)
    wait_ready(other, 300)
    wait_until(other, f"{APP}.longRange === '{zoomed}'", 120)
    assert other.evaluate(f"{APP}.longView") == "tile"
    other.close()

    # The model grid: every head as a 32 x 32 overview.
    before = renders(page)
    page.click("#tab-model")
    wait_render(page, before, 300)
    assert page.evaluate("[...document.querySelectorAll('#grid button.cell canvas')].map(c => c.width)") == [32] * 8
    grid_asks = {r.split("?", 1)[1] for r in rec.requests if "/overview?" in r and "size=32" in r}
    assert {f"layer={layer}&head={h}&size=32&reduce=max" for layer in range(2) for h in range(4)} <= grid_asks
    page.click("#tab-head")

    # A run the server no longer has (404 run_not_found) is made again by the page from its text.
    run_id = dataset(page, "runId")
    assert api.delete(f"/api/runs/{run_id}").status_code == 204
    posts = sum(r.startswith("POST ") and r.endswith("/api/runs") for r in rec.requests)
    page.fill("#head", "3")
    page.dispatch_event("#head", "input")
    wait_until(page, f"{APP}.runId !== '{run_id}'", 300)
    wait_ready(page)
    assert sum(r.startswith("POST ") and r.endswith("/api/runs") for r in rec.requests) == posts + 1
    q0, q1, k0, k1 = shown_range(page)
    wait_drawn(page, q0, q1, k0, k1)
    np.testing.assert_allclose(np.array(figure(page)["z"]), api_tile(api, run, 3, q0, q1, k0, k1), atol=1e-6)
