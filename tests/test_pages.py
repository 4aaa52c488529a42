"""The page, its assets and plotly.js through TestClient: templates, caching, compression, safety."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from headmap.main import create_app
from headmap.paths import STATIC_DIR
from headmap.settings import Settings
from headmap.web.routes import pages

JS_DIR = STATIC_DIR / "js"


@pytest.fixture(scope="module")
def web() -> Iterator[TestClient]:
    """The app with no models loaded: pages and assets need none."""
    with TestClient(create_app(Settings(builtin_models="", warmup=False))) as c:
        yield c


@pytest.fixture(scope="module")
def index_html(web: TestClient) -> str:
    r = web.get("/")
    assert r.status_code == 200
    return r.text


def asset_urls(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/assets/[^"]+)"', html)


def test_index_is_a_page_without_inline_script_or_style(index_html: str) -> None:
    assert index_html.startswith("<!doctype html>")
    assert "<title>Headmap</title>" in index_html
    # Every <script> has a src; no inline handlers or style attributes (CSP: script-src 'self').
    for tag in re.findall(r"<script\b[^>]*>", index_html):
        assert "src=" in tag, tag
    assert all(not body.strip() for body in re.findall(r"<script\b[^>]*>(.*?)</script>", index_html, re.S))
    assert not re.search(r"\son[a-z]+\s*=", index_html)
    assert not re.search(r"\sstyle\s*=", index_html)
    assert 'type="module"' in index_html
    assert "/vendor/plotly.min.js?v=" in index_html


# Every way a module looks an element up by id: the shared $() (dom.js), getElementById, and a
# querySelector(All) whose selector starts with #id.
LOOKUP = re.compile(
    r"""(?:\$|getElementById)\(\s*(?P<arg>[^)]*?)\s*\)|querySelector(?:All)?\(\s*(?P<sel>[^)]*?)\s*\)"""
)
LITERAL = re.compile(r"""^(["'`])([^"'`$]*)\1$""")


def looked_up_ids() -> dict[str, set[str]]:
    """{module: ids it looks up} over every static/js module; a lookup that is not a literal fails."""
    found: dict[str, set[str]] = {}
    for module in sorted(JS_DIR.glob("*.js")):
        source = module.read_text(encoding="utf-8")
        for match in LOOKUP.finditer(source):
            arg, sel = match.group("arg"), match.group("sel")
            if arg is not None:
                if module.name == "dom.js" and arg == "id":
                    continue  # the definition of $ itself
                literal = LITERAL.match(arg)
                assert literal, f"{module.name} looks up a computed id {arg!r}: the page check cannot see it"
                found.setdefault(module.name, set()).add(literal.group(2))
            else:
                literal = LITERAL.match(sel)
                assert literal, f"{module.name} queries a computed selector {sel!r}"
                found.setdefault(module.name, set()).update(re.findall(r"#([A-Za-z][\w-]*)", literal.group(2)))
    return found


def test_index_holds_the_controls_the_script_needs(index_html: str) -> None:
    by_module = looked_up_ids()
    # Every module that looks an element up is covered (the views, controls, toolbar, main, ...).
    for name in ["main.js", "controls.js", "stats.js", "compare.js", "explain.js", "toolbar.js", "definitions.js"]:
        assert by_module.get(name), f"no id lookups found in {name}"
    wanted = set().union(*by_module.values())
    present = set(re.findall(r'\bid="([A-Za-z][\w-]*)"', index_html))
    missing = {name: sorted(ids - present) for name, ids in by_module.items() if ids - present}
    assert missing == {}, f"ids the scripts look up but the page lacks: {missing}"
    assert wanted - present == set()
    assert "The cat sat on the mat" in index_html  # prefilled example text
    assert "Abnar" in index_html and "0.5·I" in index_html  # rollout formula in the help


def test_templates_autoescape() -> None:
    html = pages.templates.get_template("index.html").render(
        version="1", root="", assets="x", plotly_version="1", example_text="<script>alert(1)</script>&"
    )
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;" in html


def test_assets_are_versioned_cached_and_compressed(web: TestClient, index_html: str) -> None:
    urls = asset_urls(index_html)
    main = next(u for u in urls if u.endswith("/js/main.js"))
    plain = web.get(main, headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200
    assert plain.headers["content-type"].startswith("text/javascript")
    assert plain.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert "content-encoding" not in plain.headers
    assert plain.content == (JS_DIR / "main.js").read_bytes()

    packed = web.get(main, headers={"Accept-Encoding": "gzip"})
    assert packed.headers["content-encoding"] == "gzip"
    assert packed.headers["vary"] == "Accept-Encoding"
    assert packed.content == plain.content  # httpx decodes gzip
    assert int(packed.headers["content-length"]) < len(plain.content)

    again = web.get(main, headers={"If-None-Match": plain.headers["etag"]})
    assert again.status_code == 304
    assert again.headers["cache-control"].endswith("immutable")

    for url in urls:
        assert web.get(url).status_code == 200, url


def test_a_stale_digest_still_serves_but_revalidates(web: TestClient) -> None:
    r = web.get("/assets/000000000000/css/headmap.css")
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize(
    "path", ["/assets/x/../app/main.py", "/assets/x/%2e%2e/pyproject.toml", "/assets/x/js/nope.js", "/assets/x/"]
)
def test_assets_outside_static_are_404(web: TestClient, path: str) -> None:
    r = web.get(path)
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"


def test_every_module_import_resolves() -> None:
    modules = sorted(JS_DIR.glob("*.js"))
    assert len(modules) >= 8
    for module in modules:
        source = module.read_text(encoding="utf-8")
        for target in re.findall(r'from\s+"(\.[^"]+)"', source) + re.findall(r'new URL\("(\.[^"]+)"', source):
            assert (module.parent / target).resolve().is_file(), f"{module.name} imports missing {target}"
        # Plain ES modules, no build step, no outside URL.
        assert "http://" not in source and "https://" not in source, module.name


def test_plotly_is_served_locally_compressed_and_cached(web: TestClient, index_html: str) -> None:
    url = re.search(r'src="(/vendor/plotly\.min\.js\?v=[^"]+)"', index_html)
    assert url
    r = web.get(url.group(1), headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200
    assert r.headers["content-encoding"] == "gzip"
    assert r.headers["cache-control"].endswith("immutable")
    assert len(r.content) == pages.PLOTLY_JS.stat().st_size
    assert int(r.headers["content-length"]) < len(r.content) // 2
    unversioned = web.get("/vendor/plotly.min.js", headers={"If-None-Match": r.headers["etag"]})
    assert unversioned.status_code == 304
    assert unversioned.headers["cache-control"] == "public, max-age=86400"


def test_page_is_revalidated_and_carries_the_csp(web: TestClient) -> None:
    r = web.get("/")
    assert r.headers["cache-control"] == "no-cache"
    assert "script-src 'self'" in r.headers.get("content-security-policy", "")


def test_static_tree_is_packaged_with_the_app() -> None:
    # The wheel force-includes static/ and templates/ (pyproject); the page needs these files.
    for name in ["js/main.js", "css/headmap.css", "img/favicon.svg"]:
        assert (STATIC_DIR / name).is_file(), name
    assert Path(pages.TEMPLATES_DIR, "base.html").is_file()


def test_page_follows_the_language_and_embeds_its_catalogue(web: TestClient) -> None:
    """``?lang=zh-CN``: <html lang>, the toggle, the catalogue for the scripts, the statistics' Chinese
    names, the example texts; every message the template shows is the zh-CN one, never the en one."""
    import html as html_lib
    import json

    from headmap import i18n

    zh, en = i18n.messages("zh-CN"), i18n.messages("en")
    page = web.get("/", params={"lang": "zh-CN"}, headers={"Accept-Language": "en"}).text
    assert '<html lang="zh-CN">' in page
    assert re.search(r'<a href="\?lang=en"[^>]*data-lang="en"', page)
    assert re.search(r'data-lang="zh-CN"\s+aria-current="true"', page)
    embedded = re.search(r'data-messages="([^"]*)"', page)
    assert embedded and json.loads(html_lib.unescape(embedded.group(1))) == zh
    defs = json.loads(html_lib.unescape(re.search(r'data-definitions="([^"]*)"', page).group(1)))  # type: ignore[union-attr]
    entropy = next(s for s in defs["stats"] if s["id"] == "entropy")
    assert (entropy["name"], entropy["unit"]) == (zh["stat.entropy.name"], zh["stat.entropy.unit"])
    for key in ("tab.head", "form.run", "display.merge_words", "help.summary", "unknown.link", "form.examples"):
        assert html_lib.escape(zh[key], quote=False) in page, key
        assert f">{en[key]}<" not in page, key
    assert f'data-text="{zh["example.zh"]}"' in page and f'data-text="{en["example.en"]}"' in page
    # Remembered (the cookie beats Accept-Language) until forgotten; then the browser's language.
    assert '<html lang="zh-CN">' in web.get("/", headers={"Accept-Language": "en"}).text
    web.cookies.clear()
    plain = web.get("/", headers={"Accept-Language": "en"}).text
    assert '<html lang="en">' in plain and f">{en['tab.head']}<" in plain


def test_unknown_notice_links_to_a_help_page_in_the_readers_language(web: TestClient) -> None:
    """The [UNK] notice's link works offline: a page of this server, in the page's language."""
    import html as html_lib

    from headmap import i18n

    page = web.get("/", params={"lang": "zh-CN"}).text
    assert re.search(r'<a id="unknown-link" href="/help/languages">', page)
    for lang in ("zh-CN", "en"):
        msgs = i18n.messages(lang)
        r = web.get("/help/languages", params={"lang": lang})
        assert r.status_code == 200 and f'<html lang="{lang}">' in r.text
        for key in ("help.languages.title", "help.languages.bert", "help.languages.qwen"):
            assert msgs[key] in html_lib.unescape(r.text), key
        assert "HEADMAP_MODELS=" in r.text and "headmap models pull" in r.text
