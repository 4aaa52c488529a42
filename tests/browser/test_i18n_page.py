"""The page in Chinese (issue 14) in Chromium: <html lang>, no English UI text left, the language toggle,
the example buttons and the [UNK] notice for a model that does not know the script."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from headmap import i18n
from tests.browser.conftest import run_text, shot, ticks, wait_ready, wait_until

pytestmark = pytest.mark.browser

SCREENSHOT = Path("/work/wt/zh-page.png")
NAMES = {"README"}  # names that stay in every language

# Every visible text of the page that is interface (not data): text nodes, the options of the
# selects, placeholders, aria-labels and titles. Data is left out: the text box, the model list and
# the model's description, token labels (axes, tokens strip), Plotly's own figure (axis titles are
# checked separately), and
# bibliographic citations (authors and paper titles stay in their language, marked <cite class="citation">).
VISIBLE_UI_TEXT = """() => {
  const skip = "#text, #pair, #model, #model-info, #cmp-a-model, #cmp-b-model, .tick-labels, #token-strip, "
    + ".js-plotly-plot, .brand, .version, .lang-switch, cite.citation";
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    const text = node.textContent.trim();
    if (!text || !el || el.closest(skip) || el.closest("script, style")) continue;
    if (!el.checkVisibility({ checkVisibilityCSS: true })) continue;
    out.push(text);
  }
  for (const el of document.querySelectorAll("select option, [placeholder], [aria-label], [title]")) {
    if (el.closest(skip)) continue;
    const host = el.tagName === "OPTION" ? el.parentElement : el;
    if (!host.checkVisibility({ checkVisibilityCSS: true })) continue;
    if (el.tagName === "OPTION") out.push(el.textContent.trim());
    for (const name of ["placeholder", "aria-label", "title"]) {
      if (el.getAttribute(name)) out.push(el.getAttribute(name));
    }
  }
  return out.filter(Boolean);
}"""


def english_fragments() -> list[re.Pattern[str]]:
    """The literal parts (between placeholders) of every en message that zh-CN translates, as whole words."""
    en, zh = i18n.messages("en"), i18n.messages("zh-CN")
    out = set()
    for key, text in en.items():
        if text == zh[key]:
            continue  # names and units that stay (PNG, Viridis, [CLS], ⟨UNK⟩)
        for chunk in re.split(r"\{\w+\}", text):
            chunk = chunk.strip(" ·:,.()“”")
            if re.search(r"[A-Za-z]{3,}", chunk) and chunk not in NAMES:
                out.add(chunk)
    return [re.compile(rf"(?<![\w-]){re.escape(c)}(?![\w-])") for c in sorted(out)]


def english_left(texts: list[str]) -> list[tuple[str, str]]:
    fragments = english_fragments()
    return [(text, f.pattern) for text in texts for f in fragments if f.search(text)]


def test_chinese_page_has_no_english_ui_and_warns_about_unknown_tokens(page, server):  # type: ignore[no-untyped-def]
    page.goto(server + "/?lang=zh-CN")
    wait_ready(page)
    assert page.get_attribute("html", "lang") == "zh-CN"
    page.click("#help summary")  # open "How to read this"
    texts = page.evaluate(VISIBLE_UI_TEXT)
    assert any("注意力" in t for t in texts) and len(texts) > 40
    assert english_left(texts) == []
    # The head view's axis titles and the model view are Chinese too.
    zh = i18n.messages("zh-CN")
    layout = page.evaluate("() => document.getElementById('heatmap').layout")
    layout = [layout["xaxis"]["title"]["text"], layout["yaxis"]["title"]["text"]]
    assert layout == [zh["heatmap.key_axis"], zh["heatmap.query_axis"]]
    # Every other tab: the model grid, the statistics (names, units and help from the catalogue),
    # compare (waiting for text B) and the explainer's gate (minilm is not the custom block).
    for tab, panel, done in [
        ("model", None, None),
        ("stats", "stats-view", "ready"),
        ("compare", "compare-view", "idle"),
        ("explain", "explain-view", "gate"),
    ]:
        page.click(f"#tab-{tab}")
        if panel:
            wait_until(page, f"document.getElementById('{panel}').dataset.status === '{done}'")
        assert english_left(page.evaluate(VISIBLE_UI_TEXT)) == [], tab
    stat_names = {text for key, text in zh.items() if key.startswith("stat.") and key.endswith(".name")}
    assert page.evaluate("[...document.getElementById('stat').options].map((o) => o.text)")[0] in stat_names
    page.click("#tab-head")

    # The Chinese example on minilm (an English vocabulary): most characters are [UNK], and the page
    # says so in Chinese, with the share and the model, pointing at the README section.
    page.click("#example-zh")
    wait_until(page, "document.getElementById('text').value.startsWith('注意力')")
    wait_until(page, "!document.getElementById('unknown-notice').hidden")
    wait_ready(page)
    notice = page.inner_text("#unknown-notice")
    body = {"text": page.input_value("#text"), "model": "minilm", "layers": [0], "heads": [0]}
    resp = httpx.post(f"{server}/api/attention", json=body, timeout=120).json()
    assert resp["unknown_share"] > 0.1
    assert f"{round(resp['unknown_share'] * 100)}%" in notice and "minilm" in notice
    assert f"{resp['unknown_count']} 个" in notice and "HEADMAP_MODELS" in notice
    assert zh["unknown.link"] in notice
    # Merged into words, the tick labels are the text the tokens cover (⟨注⟩ where minilm has [UNK]).
    page.check("#merge-words")
    wait_until(page, "document.querySelectorAll('#heatmap-labels .ytick').length > 0")
    labels = ticks(page, "y")
    assert "。" in labels and "，" in labels
    assert any("⟨" in x for x in labels) and not any("⟨UNK⟩" in x for x in labels), labels
    page.uncheck("#merge-words")
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    shot(page, "zh-CN")

    # An English text: no notice.
    page.click("#example-en")
    wait_until(page, "document.getElementById('unknown-notice').hidden")
    wait_ready(page)
    assert page.is_hidden("#unknown-notice")


def test_language_toggle_keeps_the_view_and_is_remembered(page, server):  # type: ignore[no-untyped-def]
    page.goto(server + "/?lang=zh-CN#layer=1&head=2")
    wait_ready(page)
    assert page.inner_text("#tab-head") == i18n.t("zh-CN", "tab.head")
    # Remembered: without ?lang= the cookie picks Chinese.
    page.goto(server + "/")
    wait_ready(page)
    assert page.get_attribute("html", "lang") == "zh-CN"
    # The toggle switches to English and keeps what is shown (the fragment).
    page.goto(server + "/?lang=zh-CN#layer=1&head=2")
    wait_ready(page)
    run_text(page, "Attention is all you need.")
    page.click(".lang-switch a[data-lang='en']")
    wait_ready(page)
    assert page.get_attribute("html", "lang") == "en"
    url = urlparse(page.url)
    assert parse_qs(url.query)["lang"] == ["en"]
    assert "layer=1" in url.fragment and "head=2" in url.fragment
    assert page.input_value("#text") == "Attention is all you need."
    assert page.inner_text("#tab-head") == i18n.t("en", "tab.head")
