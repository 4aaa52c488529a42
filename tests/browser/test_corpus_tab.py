"""The "Corpus" tab (issue 17) in real Chromium: pasted texts run as a corpus job, the progress bar follows
the server-sent events to the end, and the drawn map is the API's corpus mean of the chosen statistic
(the same texts submitted to POST /api/corpus directly; the means themselves are checked against per-text
/api/stats in tests/test_corpus.py)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.browser.conftest import wait_ready, wait_until

pytestmark = pytest.mark.browser

TEXTS = ["The cat sat on the mat.", "Where is it? It is here.", "A dog ran to the market on Monday."]
SCREENSHOT = Path("/work/wt/corpus-tab.png")


def api_summary(server: str, texts: list[str]) -> dict:
    r = httpx.post(f"{server}/api/corpus", json={"texts": texts}, timeout=60)
    while r.status_code == 429:  # the page's job may still be finishing
        time.sleep(0.2)
        r = httpx.post(f"{server}/api/corpus", json={"texts": texts}, timeout=60)
    job = r.json()["id"]
    for _ in range(600):
        r = httpx.get(f"{server}/api/corpus/{job}", timeout=60)
        if r.status_code == 200:
            return r.json()
        time.sleep(0.2)
    raise AssertionError("corpus job did not finish")


def test_corpus_tab_runs_and_draws_the_api_means(page, server: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(server)
    wait_ready(page)
    page.click("#tab-corpus")
    page.fill("#corpus-texts", "\n".join(TEXTS) + "\n\n")  # blank lines are not texts
    page.click("#corpus-run")
    wait_until(page, "!document.getElementById('corpus-measure').disabled", 180)
    wait_until(page, "document.getElementById('corpus-map').data !== undefined", 60)
    assert page.eval_on_selector("#corpus-progress", "p => [p.value, p.max]") == [3, 3]
    assert "3" in page.inner_text("#corpus-status")
    page.select_option("#corpus-measure", "to_sep")
    wait_until(page, "(document.getElementById('corpus-map').layout.title.text || '').includes('to_sep')", 60)
    drawn = np.array(page.evaluate("document.getElementById('corpus-map').data[0].z"), dtype=float)
    summary = api_summary(server, TEXTS)
    np.testing.assert_allclose(drawn, np.array(summary["measures"]["to_sep"]["mean"], dtype=float), atol=1e-9)
    sim = page.evaluate("document.getElementById('corpus-sim').data[0].z")
    np.testing.assert_allclose(np.array(sim), np.array(summary["similarity"]["js_distance"]), atol=1e-9)
    page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_corpus_tab_says_an_empty_corpus_in_place(page, server: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(server)
    wait_ready(page)
    page.click("#tab-corpus")
    page.click("#corpus-run")
    wait_until(page, "!document.getElementById('corpus-status').hidden", 30)
    assert page.get_attribute("#corpus-status", "class").split().count("error") == 1
