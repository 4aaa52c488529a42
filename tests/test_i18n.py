"""Message catalogues (en, zh-CN), language negotiation, and what follows the reader's language."""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from headmap import i18n
from headmap.cli import main

ZH = "注意力机制是一种在深度学习中被广泛应用的技术，它模拟了人类的注意力机制。"


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_key_is_in_every_catalogue_with_the_same_placeholders() -> None:
    en = i18n.catalogue("en")
    for lang in i18n.LANGUAGES:
        cat = i18n.catalogue(lang)
        assert cat["_meta"]["language"] == lang
        missing = set(en["messages"]) - set(cat["messages"])
        extra = set(cat["messages"]) - set(en["messages"])
        assert not missing, f"{lang} lacks {sorted(missing)}"
        assert not extra, f"{lang} has keys en lacks: {sorted(extra)}"
        assert set(cat["glossary"]) == set(en["glossary"])
        for key, text in cat["messages"].items():
            assert placeholders(text) == placeholders(en["messages"][key]), f"{lang} {key}: placeholders differ"
            assert text.strip() or not en["messages"][key].strip(), f"{lang} {key} is empty"


def test_zh_catalogue_is_chinese_and_keeps_to_its_glossary() -> None:
    zh = i18n.catalogue("zh-CN")
    gloss = zh["glossary"]
    assert gloss["token"] == "词元" and gloss["query"] == "查询" and gloss["key"] == "键" and gloss["value"] == "值"
    assert gloss["layer normalization"] == "层归一化" and gloss["residual connection"] == "残差连接"
    texts = "\n".join(zh["messages"].values())
    # the other translations of "token" and "attention" that float around must not creep in
    for stray in ("令牌", "标记", "符元", "关注度"):
        assert stray not in texts, stray
    assert texts.count("词元") > 20 and "多头" in gloss["multi-head attention"]
    # messages with letters in English have Chinese in zh-CN (names, units and formulas aside)
    en = i18n.messages("en")
    same = [k for k, v in zh["messages"].items() if v == en[k] and re.search(r"[a-z]{4,}", re.sub(r"\{\w+\}", "", v))]
    assert set(same) <= {"app.title", "colors.viridis", "colors.magma", "example.en", "example.zh"}, same


@pytest.mark.parametrize(
    ("query", "cookie", "header", "expected"),
    [
        (None, None, None, "en"),
        (None, None, "zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"),
        (None, None, "fr-FR, en;q=0.5, zh;q=0.7", "zh-CN"),  # q-values, unsupported fr skipped
        (None, None, "zh-TW;q=0.2, en-GB;q=0.9", "en"),
        (None, None, "zh-Hant", "zh-CN"),  # Simplified is the Chinese catalogue there is
        (None, None, "de, fr", "en"),
        (None, "zh-CN", "en", "zh-CN"),  # the remembered choice beats the browser
        ("en", "zh-CN", "zh", "en"),  # ?lang= beats both
        ("xx", "zh-CN", "en", "zh-CN"),  # an unknown ?lang= is ignored
    ],
)
def test_negotiation_order(query: str | None, cookie: str | None, header: str | None, expected: str) -> None:
    assert i18n.negotiate(query, cookie, header) == expected


def test_error_codes_stay_and_detail_follows_accept_language(client: TestClient) -> None:
    zh = {"Accept-Language": "zh-CN"}
    r = client.post("/api/attention", json={"text": "   "}, headers=zh)
    assert r.status_code == 422 and r.json() == {"error": "empty_text", "detail": "`text` 为空或只有空白。"}
    r = client.post("/api/attention", json={"text": "x", "layers": [9]}, headers=zh)
    assert r.json() == {"error": "layer_out_of_range", "detail": "第 9 层超出范围；该模型的层为 0..5。"}
    r = client.post("/api/attention", content=b"{", headers={**zh, "Content-Type": "application/json"})
    assert r.json() == {"error": "invalid_json", "detail": "请求体不是有效的 JSON。"}
    r = client.post("/api/attention", params={"lang": "zh-CN"}, json={"text": "x", "heads": [12]})  # ?lang= too
    assert r.json() == {"error": "head_out_of_range", "detail": "第 12 头超出范围；该模型的头为 0..11。"}
    r = client.post("/api/compare", json={"a": {"text": "x"}, "b": {"text": " "}}, headers=zh)  # names the side
    assert r.json() == {"error": "empty_text", "detail": "b：`text` 为空或只有空白。"}
    r = client.post("/api/attention", json={"text": "   "})  # no header: English as before
    assert r.json() == {"error": "empty_text", "detail": "`text` is empty or only whitespace."}
    r = client.post("/api/attention", json={"text": "x", "model": "nope"}, headers=zh)
    assert r.status_code == 404 and r.json()["error"] == "model_not_found"
    assert r.json()["detail"].startswith("未知模型 'nope'；可用：") and "minilm" in r.json()["detail"]
    r = client.post("/api/attention", json={"text": "x", "model": "nope"})
    assert r.json()["detail"].startswith("Unknown model 'nope'; available: ")


def test_not_ready_and_failed_model_details_follow_the_language() -> None:
    """The registry's own refusals carry catalogue messages; a load failure's reason stays as the loader said it."""
    from headmap.errors import APIError
    from headmap.models.registry import ModelRegistry
    from headmap.settings import Settings
    from headmap.web.errors import _message

    registry = ModelRegistry(Settings())
    try:
        registry.get("minilm")
    except APIError as exc:  # nothing loaded yet: not ready
        assert exc.status == 503 and exc.message is not None
        assert _message("zh-CN", exc.message) == "模型仍在加载，请稍后重试。"
    else:
        raise AssertionError("an unloaded registry answered")
    registry.ready = True
    registry.failed = {"zh": "OSError: no such folder"}
    try:
        registry.get("zh")
    except APIError as exc:
        assert exc.status == 404 and exc.message is not None
        assert _message("zh-CN", exc.message) == "未知模型 'zh'；可用：none。加载失败：OSError: no such folder"
        assert exc.detail == "Unknown model 'zh'; available: none. It failed to load: OSError: no such folder"
    else:
        raise AssertionError("a failed model answered")


def test_messages_endpoint(client: TestClient) -> None:
    body = client.get("/api/messages", params={"lang": "zh-CN"}).json()
    assert body["lang"] == "zh-CN" and body["languages"] == ["en", "zh-CN"]
    assert body["messages"] == i18n.messages("zh-CN") and body["glossary"]["token"] == "词元"
    assert client.get("/api/messages", headers={"Accept-Language": "de"}).json()["lang"] == "en"


def test_page_remembers_an_explicit_language(client: TestClient) -> None:
    r = client.get("/", params={"lang": "zh-CN"})
    assert r.status_code == 200 and r.cookies.get(i18n.COOKIE) == "zh-CN"
    assert "Accept-Language" in r.headers["Vary"]
    client.cookies.clear()


def test_explainer_steps_in_chinese(client: TestClient) -> None:
    en = client.post("/api/explain", json={"text": "The cat sat.", "head": 2}).json()
    zh = client.post("/api/explain", json={"text": "The cat sat.", "head": 2}, headers={"Accept-Language": "zh"}).json()
    assert [s["title"] for s in en["steps"]][:3] == ["Embeddings", "Queries, keys and values", "Scores"]
    assert [s["title"] for s in zh["steps"]] == [i18n.t("zh-CN", f"explain.{s['key']}.title") for s in zh["steps"]]
    assert zh["steps"][1]["matrices"][0]["label"] == "第 2 头的查询"
    # the numbers and formulas are the same
    assert [s["formula"] for s in zh["steps"]] == [s["formula"] for s in en["steps"]]
    assert zh["steps"][3]["matrices"][0]["values"] == en["steps"][3]["matrices"][0]["values"]


# -- [UNK] share, labels and words in the responses --------------------------------------------------------------


def test_unknown_share_minilm_chinese_and_english(client: TestClient) -> None:
    zh = client.post("/api/attention", json={"text": ZH, "layers": [0], "heads": [0]}).json()
    text_tokens = [t for t, s in zip(zh["tokens"], zh["special"], strict=True) if not s]
    unk = text_tokens.count("[UNK]")
    assert unk == 25 and len(text_tokens) == 36  # the count: 25 of 38 tokens, [CLS]/[SEP] included
    assert zh["unknown_count"] == unk and zh["unknown_share"] == pytest.approx(unk / 36) and zh["unknown_share"] > 0.1
    # an [UNK] is labelled with the character it replaced; 注意力 / 机制 group (jieba), ，and 。 in none
    assert "".join(zh["labels"][1:-1]) == ZH
    w = zh["word_ids"]
    assert w[1] == w[2] == w[3] != w[4] == w[5] and w[0] is None and w[-1] is None
    assert [w[i] for i, lab in enumerate(zh["labels"]) if lab in "，。"] == [None, None]
    en = client.post("/api/attention", json={"text": "The cat sat on the mat.", "layers": [0], "heads": [0]}).json()
    assert en["unknown_count"] == 0 and en["unknown_share"] == 0.0


def test_insight_responses_carry_labels_and_words(client: TestClient) -> None:
    body = {"text": "注意力 works.", "model": "minilm"}
    att = client.post("/api/attention", json={**body, "layers": [0], "heads": [0]}).json()
    for path in ("/api/stats", "/api/aggregate"):
        r = client.post(path, json=body).json()
        fields = ("labels", "word_ids", "unknown_count", "unknown_share")
        assert [r[f] for f in fields] == [att[f] for f in fields], path
    cmp = client.post("/api/compare", json={"a": {"text": "注意力"}, "b": {"text": "attention"}}).json()
    assert cmp["a"]["labels"] == ["[CLS]", "注", "意", "力", "[SEP]"] and cmp["b"]["unknown_count"] == 0


# -- the report ----------------------------------------------------------------------------------------------------


def test_report_in_chinese(tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    assert main(["render", ZH, "-o", str(out), "--lang", "zh-CN"]) == 0
    html = out.read_text(encoding="utf-8")
    zh = i18n.messages("zh-CN")
    assert '<html lang="zh-CN">' in html
    for key in ("report.head_view", "report.model_grid", "report.head_stats", "report.head_note", "report.statistic"):
        assert zh[key] in html, key
    for english in ("Head view", "Model grid", "Head statistics", "Made by Headmap"):
        assert english not in html
    data = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', html, re.S).group(1))
    assert data["stat_names"]["entropy"] == "熵" and data["msg"]["report.layer_option"] == "第 {layer} 层"
    assert data["labels"][1:4] == ["注", "意", "力"]
    assert 'id="unknown-notice"' in html and "minilm" in html and "69%" in html  # 25 / 36


def test_report_in_english_has_no_unknown_notice(tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    assert main(["render", "The cat sat.", "-o", str(out)]) == 0
    html = out.read_text(encoding="utf-8")
    assert '<html lang="en">' in html and "Head view" in html and 'id="unknown-notice"' not in html


def test_cli_json_carries_labels_words_and_unknown_share(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert main(["attention", "注意力 works.", "--model", "minilm"]) == 0
    body = json.loads(capsysbinary.readouterr().out)
    assert body["labels"] == ["[CLS]", "注", "意", "力", "works", ".", "[SEP]"]
    assert body["word_ids"] == [None, 0, 0, 0, 1, None, None]
    unk = body["tokens"].count("[UNK]")
    assert body["unknown_count"] == unk and body["unknown_share"] == pytest.approx(unk / 5)


@pytest.mark.browser
def test_chinese_report_draws_in_chromium(tmp_path: Path) -> None:
    """The zh-CN report runs its script without an error, with Chinese labels, options and column names."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from tests.harness import CHROMIUM, CHROMIUM_ARGS

    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    out = tmp_path / "报告.html"
    assert main(["render", "注意力机制是一种技术。Attention 😀", "-o", str(out), "--lang", "zh-CN"]) == 0
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(locale="zh-CN")
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(out.as_uri())
        page.wait_for_selector("#stat-view .main-svg")
        ticks = page.locator("#head-view .xtick text").all_text_contents()
        assert ticks[:4] == ["[CLS]", "注", "意", "力"] and "😀" in ticks
        assert page.locator("#layer option").first.text_content() == "第 0 层"
        headers = page.locator("#stat-table th").all_text_contents()
        assert headers[:3] == ["层", "头", "熵"]
        assert "第 0 层" in page.locator("#cell-0-0").get_attribute("title")
        Path("test-artifacts").mkdir(exist_ok=True)
        page.screenshot(path="test-artifacts/report-zh-CN.png", full_page=False)
        browser.close()
    assert problems == []
