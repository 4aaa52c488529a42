"""Issue 16's reading views in real Chromium: the text view, the line view, PNG/SVG export of every
view, dark mode's contrast, keyboard access and the text alternative, the Chinese page.

Numbers are checked against the API's JSON weights (and the colours against a NumPy interpolation of
the Blues scale written here), never against what the page computed. Every test's page also asserts
(``page`` fixture) that no request left the server. Screenshots: /work/wt/views-*.png.
"""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest

from tests.browser.conftest import renders, wait_ready, wait_render, wait_until
from tests.browser.test_i18n_page import english_left

pytestmark = pytest.mark.browser

SENTENCE = "The cat sat on the mat, and the cat slept."
TEXT128 = " ".join(["the quick brown fox jumps over the lazy dog"] * 14)  # 126 words + [CLS], [SEP]
WEIGHT_TOL = 1 / 255 + 1e-4  # the page's uint8 levels against the JSON's 4 decimals
SHOTS = Path("/work/wt")
# colors.js "blues", written out again: the test's own interpolation of the scale
BLUES = ["#f7fbff", "#deebf7", "#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c", "#08306b"]


def api(server: str, text: str, **extra: object) -> dict:
    r = httpx.post(f"{server}/api/attention", json={"text": text, **extra}, timeout=120)
    r.raise_for_status()
    return r.json()


def open_view(page, server: str, text: str, view: str, extra: str = "") -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{server}/#text={quote(text)}&model=minilm&view={view}{extra}")
    wait_ready(page)
    wait_until(page, f"document.getElementById('app').dataset.view === '{view}'")


def blues(x: np.ndarray) -> np.ndarray:
    """RGB (0..255) of Blues at x in [0, 1], piecewise linear between the stops."""
    stops = np.array([[int(h[i : i + 2], 16) for i in (1, 3, 5)] for h in BLUES], dtype=float)
    pos = np.linspace(0, 1, len(BLUES))
    return np.stack([np.interp(x, pos, stops[:, c]) for c in range(3)], axis=-1)


def text_view_state(page) -> dict:  # type: ignore[no-untyped-def]
    return page.evaluate(
        """(() => { const el = document.getElementById('tv-text');
             const spans = [...el.querySelectorAll('.tv-tok')];
             return {pinned: Number(el.dataset.pinned), selected: Number(el.dataset.selected),
                     labels: spans.map(s => s.textContent), w: spans.map(s => Number(s.dataset.w)),
                     bg: spans.map(s => getComputedStyle(s).backgroundColor.match(/\\d+/g).slice(0, 3).map(Number)),
                     fg: spans.map(s => getComputedStyle(s).color.match(/\\d+/g).slice(0, 3).map(Number))}; })()"""
    )


def assert_shading(state: dict, expected: np.ndarray) -> None:
    np.testing.assert_allclose(np.array(state["w"]), expected, atol=WEIGHT_TOL)
    # The colour of w / max(w): the page's weights are the JSON's to within WEIGHT_TOL, so its shade lies
    # between the colours of the lowest and highest ratio that allows (the scale is steep near the top).
    lo = np.clip((expected - WEIGHT_TOL) / (expected.max() + WEIGHT_TOL), 0, 1)
    hi = np.clip((expected + WEIGHT_TOL) / max(expected.max() - WEIGHT_TOL, 1e-6), 0, 1)
    ratios = lo[:, None] + (hi - lo)[:, None] * np.linspace(0, 1, 64)[None, :]  # [T, 64]
    colours = blues(ratios)  # [T, 64, 3]
    actual = np.array(state["bg"], dtype=float)[:, None, :]
    below = colours.min(axis=1)[:, None, :] - 1.5 <= actual
    above = actual <= colours.max(axis=1)[:, None, :] + 1.5
    assert (below & above).all(), np.argwhere(~(below & above).all(axis=-1))


def test_text_view_shades_the_api_weights_of_the_pinned_token(page, server):  # type: ignore[no-untyped-def]
    open_view(page, server, SENTENCE, "text", "&layer=2&head=3")
    resp = api(server, SENTENCE)
    att = np.array(resp["attention"])  # (L, H, T, T)
    state = text_view_state(page)
    assert state["labels"] == resp["labels"]  # the readable labels, one span per token
    assert "".join(page.inner_text("#tv-text").split()) == "".join(resp["labels"])  # flowing text, in order

    page.click("#tv-t4")  # pin token 4
    page.mouse.move(0, 0)
    wait_until(page, "document.getElementById('tv-text').dataset.selected === '4'")
    state = text_view_state(page)
    assert state["pinned"] == 4
    assert_shading(state, att[2, 3, 4])

    # switched: the weights to the pinned token (its column)
    page.check("input[name=tv-dir][value=to]")
    wait_until(page, "document.getElementById('tv-text').dataset.direction === 'to'")
    assert_shading(text_view_state(page), att[2, 3, :, 4])
    page.check("input[name=tv-dir][value=from]")

    # the arrow keys move the pin; hover previews another token and leaving restores the pin
    page.focus("#tv-text")
    page.keyboard.press("ArrowRight")
    wait_until(page, "document.getElementById('tv-text').dataset.pinned === '5'")
    assert_shading(text_view_state(page), att[2, 3, 5])
    assert page.get_attribute("#tv-text", "aria-activedescendant") == "tv-t5"
    page.hover("#tv-t8")
    wait_until(page, "document.getElementById('tv-text').dataset.selected === '8'")
    assert_shading(text_view_state(page), att[2, 3, 8])
    page.mouse.move(5, 5)
    wait_until(page, "document.getElementById('tv-text').dataset.selected === '5'")

    # another head from the selectors: the text view follows
    before = renders(page)
    page.fill("#head", "7")
    page.dispatch_event("#head", "input")
    wait_render(page, before)
    wait_until(page, "document.getElementById('tv-status').textContent.includes('head 7')")
    assert_shading(text_view_state(page), att[2, 7, 5])

    # every token's text stays readable on its shade (WCAG contrast, computed here)
    state = text_view_state(page)
    for bg, fg in zip(state["bg"], state["fg"], strict=True):
        assert contrast(bg, fg) >= 4.5, (bg, fg)

    # the text alternative: the focused head's top weights per token, as a table
    page.click("#tv-alt summary")
    wait_until(page, "document.querySelectorAll('#tv-alt tbody tr').length > 0")  # filled on the toggle event
    rows = page.evaluate("[...document.querySelectorAll('#tv-alt tbody tr')].map(r => r.cells[1].textContent)")
    assert len(rows) == len(resp["tokens"])
    top = int(np.argmax(att[2, 7, 0]))
    assert rows[0].startswith(f"{resp['labels'][top]} (#{top})")
    page.screenshot(path=str(SHOTS / "views-text-light.png"), full_page=True)


def test_long_text_shades_only_what_is_in_view(page, server):  # type: ignore[no-untyped-def]
    # The longest input the page still asks /api/attention for (past 256 tokens it opens a run, whose
    # text view reads one row or column at a time: test_text_long.py).
    text = " ".join(["Attention is all you need, said the paper in 2017."] * 19)
    resp = api(server, text, truncate=True)
    n = len(resp["tokens"])
    assert 200 < n <= 256
    page.set_viewport_size({"width": 1440, "height": 330})  # the text box is 70% of that high
    page.goto(f"{server}/#view=text")
    wait_ready(page)
    page.fill("#text", text)
    page.press("#text", "Control+Enter")
    wait_until(page, f"document.querySelectorAll('#tv-text .tv-tok').length === {n}", 120)
    wait_ready(page)
    info = page.evaluate(
        """(() => { const chunks = [...document.querySelectorAll('#tv-text .tv-chunk')];
             const key = chunks[0].dataset.shaded;
             return {chunks: chunks.length, shaded: chunks.filter(c => c.dataset.shaded === key).length,
                     lastShaded: chunks.at(-1).dataset.shaded === key}; })()"""
    )
    assert info["chunks"] >= 3
    assert 1 <= info["shaded"] < info["chunks"] and not info["lastShaded"], info
    # End pins the last token; its chunk scrolls in and is shaded with the new selection
    page.focus("#tv-text")
    page.keyboard.press("End")
    wait_until(page, f"document.getElementById('tv-text').dataset.pinned === '{n - 1}'")
    wait_until(
        page,
        f"""(() => {{ const c = [...document.querySelectorAll('#tv-text .tv-chunk')];
                    return c.at(-1).dataset.shaded && c.at(-1).dataset.shaded.endsWith(':{n - 1}'); }})()""",
    )
    att = np.array(resp["attention"][0][0])
    w = page.evaluate(f"Number(document.getElementById('tv-t{n - 2}').dataset.w)")
    assert abs(w - att[n - 1, n - 2]) <= WEIGHT_TOL


def line_state(page) -> dict:  # type: ignore[no-untyped-def]
    return page.evaluate(
        """(() => { const c = document.getElementById('lv-canvas');
             return {lines: c.lineList.map(l => [l.head, l.q, l.k]), drawn: c.drawnLines.map(l => [l.head, l.q, l.k]),
                     count: Number(c.dataset.lineCount), drawnCount: Number(c.dataset.drawn)}; })()"""
    )


def expected_lines(att: np.ndarray, layer: int, heads: list[int], threshold: float) -> tuple[set, set]:
    """(head, q, k) surely above the threshold, and those within the uint8 rounding of it."""
    sure, near = set(), set()
    for h in heads:
        for q, k in zip(*np.nonzero(att[layer, h] > threshold - WEIGHT_TOL), strict=True):
            w = att[layer, h, q, k]
            (near if abs(w - threshold) <= WEIGHT_TOL else sure).add((h, int(q), int(k)))
    return sure, near


def test_line_view_draws_one_line_per_weight_above_the_threshold(page, server):  # type: ignore[no-untyped-def]
    open_view(page, server, TEXT128, "lines", "&layer=1&head=4")
    att = np.array(api(server, TEXT128)["attention"])
    assert att.shape[-1] == 128
    wait_until(page, "document.getElementById('lv-canvas').dataset.heads === '4'")

    def check(heads: list[int], threshold: float) -> dict:
        st = line_state(page)
        sure, near = expected_lines(att, 1, heads, threshold)
        drawn = {tuple(x) for x in st["drawn"]}
        assert sure <= drawn and drawn <= sure | near, (len(sure), len(near), len(drawn))
        assert len(st["drawn"]) == len(drawn) == st["drawnCount"] == st["count"]  # one line each, none twice
        return st

    check([4], 0.1)
    page.click("#lv-all")  # all 12 heads of the layer: 128 tokens x 12 heads
    wait_until(page, "document.getElementById('lv-canvas').dataset.heads.split(',').length === 12")
    st = check(list(range(12)), 0.1)
    assert {h for h, _, _ in st["drawn"]} == set(range(12))
    page.fill("#lv-threshold", "0.3")
    wait_until(page, "document.getElementById('lv-canvas').dataset.threshold === '0.3'")
    check(list(range(12)), 0.3)
    ms = float(page.get_attribute("#lv-canvas", "data-draw-ms") or "nan")  # reported, not asserted

    # hovering a query token keeps only its lines; so does the keyboard
    page.evaluate("document.getElementById('lv-canvas').scrollIntoView()")
    g = page.evaluate(
        """(() => { const r = document.getElementById('lv-canvas').getBoundingClientRect();
                    return {left: r.left, top: r.top}; })()"""
    )
    page.mouse.move(g["left"] + 20, g["top"] + 28 + 3.5 * 15)  # row 3 of the query column
    wait_until(page, "document.getElementById('lv-canvas').dataset.focus === 'q3'")
    st = line_state(page)
    assert st["drawn"] and all(q == 3 for _, q, _ in st["drawn"])
    assert len(st["drawn"]) == sum(1 for _, q, _ in st["lines"] if q == 3)
    page.mouse.move(0, 0)
    page.focus("#lv-canvas")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowRight")  # the key column, token 0
    wait_until(page, "document.getElementById('lv-canvas').dataset.focus === 'k0'")
    st = line_state(page)
    assert len(st["drawn"]) == sum(1 for _, _, k in st["lines"] if k == 0)
    page.keyboard.press("Escape")
    wait_until(page, "document.getElementById('lv-canvas').dataset.focus === ''")
    print(f"line view: {st['count']} lines at 128 tokens x 12 heads, drawn in {ms} ms")


def figure_size(page, plot_id: str) -> list[int]:  # type: ignore[no-untyped-def]
    return page.evaluate(
        f"(() => {{ const f = document.getElementById('{plot_id}')._fullLayout; return [f.width, f.height]; }})()"
    )


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:8]
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def download(page, button: str) -> bytes:  # type: ignore[no-untyped-def]
    with page.expect_download() as dl:
        page.click(button)
    return Path(dl.value.path()).read_bytes()


def test_every_view_exports_png_at_twice_its_size_and_svg(page, server):  # type: ignore[no-untyped-def]
    open_view(page, server, SENTENCE, "lines", "")
    page.click("#lv-all")
    wait_until(page, "document.getElementById('lv-canvas').dataset.heads.split(',').length === 12")
    css_w = page.evaluate("document.getElementById('lv-canvas').getBoundingClientRect().width")
    css_h = page.evaluate("document.getElementById('lv-canvas').getBoundingClientRect().height")
    assert png_size(download(page, "#export-png")) == (round(css_w) * 2, round(css_h) * 2)
    svg = ET.fromstring(download(page, "#export-svg"))
    ns = "{http://www.w3.org/2000/svg}"
    assert svg.tag == f"{ns}svg"
    assert len(svg.findall(f"{ns}line")) == int(page.get_attribute("#lv-canvas", "data-drawn") or 0) > 0

    page.click("#tab-text")
    wait_until(page, "document.getElementById('app').dataset.view === 'text'")
    w, h = png_size(download(page, "#export-png"))
    assert w == 1800 and h > 0  # the text laid out 900 px wide, at scale 2
    svg = ET.fromstring(download(page, "#export-svg"))
    weights = [float(g.get("data-weight", "nan")) for g in svg.iter(f"{ns}g")]
    shown = page.evaluate("[...document.querySelectorAll('#tv-text .tv-tok')].map(s => Number(s.dataset.w))")
    np.testing.assert_allclose(weights, shown, atol=1e-6)  # the file shades what the page does

    page.click("#tab-head")
    wait_until(page, "document.getElementById('app').dataset.view === 'head'")
    size = figure_size(page, "heatmap")
    assert png_size(download(page, "#export-png")) == (size[0] * 2, size[1] * 2)
    assert ET.fromstring(download(page, "#export-svg")).tag == f"{ns}svg"

    page.click("#tab-model")
    wait_until(page, "document.getElementById('app').dataset.view === 'model'")
    w, h = png_size(download(page, "#export-png"))
    # the grid composite (pad 36, cells of 80 with a gap of 4, 6 layers x 12 heads), doubled
    assert (w, h) == (2 * (36 + 12 * 84), 2 * (36 + 6 * 84))
    assert ET.fromstring(download(page, "#export-svg")).tag == f"{ns}svg"

    page.click("#tab-stats")
    wait_until(page, "!!document.getElementById('stats-plot')._fullLayout")
    size = figure_size(page, "stats-plot")
    assert png_size(download(page, "#export-png")) == (size[0] * 2, size[1] * 2)
    assert ET.fromstring(download(page, "#export-svg")).tag == f"{ns}svg"


def test_explain_tab_exports_png_at_twice_its_size_and_svg(page, server):  # type: ignore[no-untyped-def]
    """The explainer's steps as one image: the SVG nests each Plotly figure at its drawn size; the PNG is
    twice the SVG's size."""
    page.goto(f"{server}/#text={quote(SENTENCE)}&model=custom&view=explain&head=2")
    wait_ready(page)
    wait_until(page, "document.getElementById('explain-view').dataset.status === 'ready'")
    assert not page.is_disabled("#export-png") and not page.is_disabled("#export-svg")
    figures = page.evaluate(
        """[...document.querySelectorAll('#explain-steps .mplot')].map(el =>
             [el.dataset.matrix, el._fullLayout.width, el._fullLayout.height])"""
    )
    assert len(figures) >= 7
    svg = ET.fromstring(download(page, "#export-svg"))
    ns = "{http://www.w3.org/2000/svg}"
    assert svg.tag == f"{ns}svg"
    nested = [(e.get("data-matrix"), float(e.get("width", "nan")), float(e.get("height", "nan")))
              for e in svg.findall(f"{ns}svg")]  # fmt: skip
    assert nested == [(m, float(w), float(h)) for m, w, h in figures]  # every figure, at its drawn size
    width, height = float(svg.get("width", "nan")), float(svg.get("height", "nan"))
    assert width >= max(w for _, w, _ in figures) and height >= sum(h for _, _, h in figures)
    titles = [t.text for t in svg.findall(f"{ns}text")]
    assert any("Softmax weights" in (t or "") for t in titles)
    assert png_size(download(page, "#export-png")) == (round(width) * 2, round(height) * 2)


# -- dark mode and contrast ---------------------------------------------------------------------------


def luminance(rgb: list[int] | tuple[int, ...]) -> float:
    c = np.array(rgb[:3], dtype=float) / 255
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return float(0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2])


def contrast(a: list[int], b: list[int]) -> float:
    hi, lo = sorted([luminance(a), luminance(b)], reverse=True)
    return (hi + 0.05) / (lo + 0.05)


# Every visible text of the page (not inside a figure, nor a disabled control) with the colour the
# browser computed for it and the background behind it: the first opaque background-color up its
# ancestors, with translucent ones composited over it.
TEXT_COLOURS = """() => {
  const rgba = (s) => {
    const m = s.match(/[\\d.]+/g);
    return m ? [+m[0], +m[1], +m[2], m.length > 3 ? +m[3] : 1] : [0, 0, 0, 0];
  };
  const over = (top, under) => top.slice(0, 3).map((c, i) => c * top[3] + under[i] * (1 - top[3]));
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c[3] > 0) layers.push(c);
      if (c[3] >= 1) break;
    }
    let bg = [255, 255, 255];
    const root = rgba(getComputedStyle(document.documentElement).backgroundColor);
    if (!layers.length || layers.at(-1)[3] < 1) bg = root.slice(0, 3);
    for (const c of layers.reverse()) bg = over(c, bg);
    return bg;
  };
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!node.textContent.trim() || !el) continue;
    if (el.closest(".js-plotly-plot, script, style, :disabled, .inactive, option")) continue;
    if (!el.checkVisibility({ checkVisibilityCSS: true, opacityProperty: true })) continue;
    const bg = background(el);
    const fg = rgba(getComputedStyle(el).color);
    out.push({ text: node.textContent.trim().slice(0, 40), cls: el.className, fg: over(fg, bg), bg });
  }
  return out;
}"""


def low_contrast(page) -> list[tuple[str, str, float]]:  # type: ignore[no-untyped-def]
    items = page.evaluate(TEXT_COLOURS)
    assert len(items) > 30
    return [
        (i["text"], str(i["cls"]), round(contrast(i["fg"], i["bg"]), 2))
        for i in items
        if contrast(i["fg"], i["bg"]) < 4.5
    ]


def plot_contrast(page, plot_id: str) -> float:  # type: ignore[no-untyped-def]
    colours = page.evaluate(
        f"(() => {{ const f = document.getElementById('{plot_id}')._fullLayout;"
        " return [f.font.color, f.paper_bgcolor]; })()"
    )

    def rgb(c: str) -> list[int]:
        if c.startswith("#"):
            return [int(c[i : i + 2], 16) for i in (1, 3, 5)]
        return [int(float(x)) for x in c[c.index("(") + 1 : -1].split(",")[:3]]

    return contrast(rgb(colours[0]), rgb(colours[1]))


@pytest.mark.parametrize("scheme", ["dark", "light"])
def test_text_contrast_is_at_least_4_5_in_both_themes(browser, server, recorder, scheme):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, color_scheme=scheme)
    page = context.new_page()
    page.on("request", lambda r: recorder.requests.append(r.url))
    page.on("pageerror", lambda e: recorder.errors.append(str(e)))
    try:
        open_view(page, server, SENTENCE, "head", "&layer=1&head=2")
        assert page.get_attribute("html", "data-theme") == scheme  # from prefers-color-scheme
        assert page.get_attribute("#theme-toggle", "aria-pressed") == str(scheme == "dark").lower()
        page.click("#help summary")
        failures = {"head": low_contrast(page)}
        assert plot_contrast(page, "heatmap") >= 4.5
        page.screenshot(path=str(SHOTS / f"views-head-{scheme}.png"), full_page=True)
        for view in ["text", "lines", "model", "stats", "heads"]:
            page.click(f"#tab-{view}")
            wait_until(page, f"document.getElementById('app').dataset.view === '{view}'")
            if view == "text":
                page.click("#tv-t3")
                page.mouse.move(0, 0)
            if view == "lines":
                page.click("#lv-all")
            page.wait_for_timeout(300)
            failures[view] = low_contrast(page)
            if view == "stats":
                wait_until(page, "!!document.getElementById('stats-plot')._fullLayout")
                assert plot_contrast(page, "stats-plot") >= 4.5
            if view in ("text", "lines"):
                page.screenshot(path=str(SHOTS / f"views-{view}-{scheme}.png"), full_page=True)
        assert {k: v for k, v in failures.items() if v} == {}

        # the toggle switches, is remembered over a reload, and the figure follows
        other = "light" if scheme == "dark" else "dark"
        page.click("#theme-toggle")
        assert page.get_attribute("html", "data-theme") == other
        page.reload()
        wait_ready(page)
        assert page.get_attribute("html", "data-theme") == other
        page.click("#tab-head")
        wait_until(page, "document.getElementById('app').dataset.view === 'head'")
        assert plot_contrast(page, "heatmap") >= 4.5
        assert low_contrast(page) == []
    finally:
        context.close()
    assert [u for u in recorder.requests if not u.startswith((server + "/", "data:", "blob:"))] == []
    assert recorder.errors == []


def test_reading_views_in_chinese_have_no_english_left(page, server):  # type: ignore[no-untyped-def]
    from tests.browser.test_i18n_page import VISIBLE_UI_TEXT

    page.goto(f"{server}/?lang=zh-CN#text={quote(SENTENCE)}&model=minilm&view=text")
    wait_ready(page)
    data = ".tv-text, .tv-status, .alt-table td, .alt-table th[scope=row], "  # tokens and numbers
    skip = VISIBLE_UI_TEXT.replace("#token-strip, ", f"#token-strip, {data}")
    for view in ["text", "lines"]:
        page.click(f"#tab-{view}")
        wait_until(page, f"document.getElementById('app').dataset.view === '{view}'")
        page.click("#tv-alt summary" if view == "text" else "#lv-alt summary")
        texts = page.evaluate(skip)
        assert english_left(texts) == [], view
        assert "深色模式" in texts
    assert "文本视图" in page.inner_text("#tab-text") and "连线视图" in page.inner_text("#tab-lines")
    label = page.get_attribute("#lv-canvas", "aria-label") or ""
    assert "层" in label and "连线" in label


def test_views_are_reachable_by_keyboard(page, server):  # type: ignore[no-untyped-def]
    open_view(page, server, SENTENCE, "head", "")
    page.focus("#tab-head")
    page.keyboard.press("ArrowRight")
    wait_until(page, "document.getElementById('app').dataset.view === 'text'")
    page.keyboard.press("ArrowRight")
    wait_until(page, "document.getElementById('app').dataset.view === 'lines'")
    # Tab from the tab list reaches the line view's controls and its drawing
    seen = []
    for _ in range(40):
        page.keyboard.press("Tab")
        seen.append(page.evaluate("document.activeElement.id || document.activeElement.tagName"))
        if seen[-1] == "lv-canvas":
            break
    assert "lv-all" in seen and seen[-1] == "lv-canvas", seen
    page.keyboard.press("ArrowDown")
    wait_until(page, "document.getElementById('lv-canvas').dataset.focus === 'q0'")
    # the head view's text alternative is a table of top weights
    page.click("#tab-head")
    page.click("#head-alt summary")
    wait_until(page, "document.querySelectorAll('#head-alt tbody tr').length > 0")
    caption = page.evaluate("document.querySelector('#head-alt caption').textContent")
    assert caption.endswith("minilm · layer 0 · head 0")
