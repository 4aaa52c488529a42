"""`headmap render`: one self-contained HTML file, with the API's numbers, inert against hostile text."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from headmap.cli import main
from headmap.report.render import PLOTLY_JS
from headmap.serving.encoding import dequantise
from tests.harness import CHROMIUM, CHROMIUM_ARGS

HOSTILE = "The cat <img src=x onerror=alert(1)> sat </script><script>alert(2)</script> on the mat."


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "report.html"
    assert main(["render", HOSTILE, "-o", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def html(report: Path) -> str:
    return report.read_text(encoding="utf-8")


def scripts(html: str) -> list[tuple[str, str]]:
    """(attributes, body) of every <script> element."""
    return re.findall(r"<script([^>]*)>(.*?)</script>", html, flags=re.S | re.I)


def data_of(html: str) -> dict:  # type: ignore[type-arg]
    body = next(b for attrs, b in scripts(html) if 'id="data"' in attrs)
    return json.loads(body)


def test_plotly_is_inlined_and_nothing_is_fetched(html: str) -> None:
    plotly = PLOTLY_JS.read_text(encoding="utf-8")
    assert plotly in html  # verbatim, one copy
    assert html.count(plotly[:200]) == 1
    assert not re.search(r"<script[^>]*\ssrc\s*=", html, flags=re.I)
    assert not re.search(r"<link\b", html, flags=re.I)
    # plotly.js's own code names URLs (licences, SVG namespaces, map tiles it never loads for heatmaps);
    # everything Headmap wrote must name none.
    ours = html.replace(plotly, "")
    assert "http://" not in ours and "https://" not in ours and "//cdn" not in ours


def test_csp_allows_exactly_the_two_inline_scripts(html: str) -> None:
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', html)
    assert csp is not None
    policy = csp.group(1).replace("&#39;", "'")
    assert "default-src 'none'" in policy and "connect-src" not in policy  # nothing may be fetched
    runnable = [body for attrs, body in scripts(html) if "application/json" not in attrs]
    assert len(runnable) == 2  # plotly.js and the render script
    for body in runnable:
        digest = base64.b64encode(hashlib.sha256(body.encode("utf-8")).digest()).decode()
        assert f"'sha256-{digest}'" in policy
    assert policy.count("'sha256-") == 2


def test_hostile_text_stays_inert(html: str) -> None:
    # The raw tags appear nowhere: escaped in the page text, \u003c-escaped in the JSON block.
    assert "<img" not in html.lower()
    assert html.lower().count("<script") == 3  # data, plotly.js, render script: nothing injected
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;/script&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in html
    body = next(b for attrs, b in scripts(html) if 'id="data"' in attrs)
    assert "<" not in body and ">" not in body
    tokens = data_of(html)["tokens"]
    assert "<" in tokens and ">" in tokens  # the tokens are there, as data


def test_report_holds_the_api_numbers(html: str, client: TestClient) -> None:
    data = data_of(html)
    api = client.post("/api/attention", json={"text": HOSTILE}).json()
    assert data["tokens"] == api["tokens"]
    attn = dequantise(data["attention"])  # (L, H, T, T) bytes / 255
    assert attn.shape == (6, 12, len(api["tokens"]), len(api["tokens"]))
    np.testing.assert_allclose(attn, np.array(api["attention"]), atol=1 / 510 + 1e-4)
    stats = client.post("/api/stats", json={"text": HOSTILE}).json()["stats"]
    for name, values in data["stats"].items():
        np.testing.assert_allclose(np.array(values), np.array(stats[name]), atol=1.1e-4, err_msg=name)
    assert set(data["stat_info"]) == set(stats)
    assert "nats" in data["stat_info"]["entropy"]


def test_render_custom_and_pair(tmp_path: Path) -> None:
    path = tmp_path / "custom.html"
    assert main(["render", "A cat.", "--pair", "A dog.", "--model", "custom", "-o", str(path)]) == 0
    html = path.read_text(encoding="utf-8")
    data = data_of(html)
    assert data["attention"]["shape"][:2] == [1, 12]
    assert data["tokens"].count("[SEP]") == 2
    assert "A dog." in html


def test_render_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "never.html"
    assert main(["render", "text", "--model", "nope", "-o", str(path)]) == 2
    assert "model_not_found" in capsys.readouterr().err
    assert main(["render", "  ", "-o", str(path)]) == 2
    assert "empty_text" in capsys.readouterr().err
    assert not path.exists()
    assert main(["render", "text", "-o", str(tmp_path / "no" / "such" / "dir.html")]) == 1
    assert "cannot write" in capsys.readouterr().err


@pytest.mark.browser
def test_report_draws_offline_in_chromium(report: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("dialog", lambda d: (problems.append(f"dialog {d.message}"), d.dismiss()))
        page.on("request", lambda r: problems.append(f"fetch {r.url}") if not r.url.startswith("file:") else None)
        page.goto(report.as_uri())
        page.wait_for_selector("#stat-view .main-svg")
        assert page.locator("#head-view .main-svg").count() > 0
        assert page.locator("canvas.cell").count() == 6 * 12
        assert page.locator("#stat-table tbody tr").count() == 6 * 12
        assert page.locator("img").count() == 0
        ticks = page.locator("#head-view .xtick text").all_text_contents()
        assert "<" in ticks and ">" in ticks  # shown as text, not parsed
        page.locator("#cell-4-9").click()
        assert (page.locator("#layer").input_value(), page.locator("#head").input_value()) == ("4", "9")
        browser.close()
    assert problems == []
