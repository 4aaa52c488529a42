"""The text view of a long input (issue 16) in Chromium: a 2,000-token text on a tiny random Llama (4 query
heads on 2 key/value heads, causal) served by ``headmap serve`` is a run on the server; the text view shows it,
shading the pinned token's row (or, switched, its column) from ``GET /api/runs/{id}/vector``, only in the chunks
in view; pinning and switching ask again; the link keeps the pin and direction; a run the server forgot is made
again; no request leaves the server.

Every number is checked against transformers' eager attention of the same text (and the runs API, asked by
this test for its own run), never against what the page computed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pytest

from tests.browser.conftest import ARTIFACTS, Recorder, wait_ready, wait_until
from tests.browser.test_long_page import MODEL, make_long_llama, text_of
from tests.harness import headmap_serve

pytestmark = pytest.mark.browser

TOKENS = 2000
LAYER, HEAD = 1, 2
#: The page keeps each weight as toFixed(6) of the API's 6 decimals; eager is float64 of float32 arithmetic.
API_TOL = 2e-6
EAGER_TOL = 2e-5
#: Most tokens shaded for one selection: the chunks in view (and 100 px around), far fewer than the text.
SHADED_MAX = 700
SHOTS = ARTIFACTS  # screenshots of the text view of a run, light and dark
TV = "document.getElementById('tv-text').dataset"


@pytest.fixture(scope="module")
def text_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, np.ndarray]]:
    """(base URL, a 2,000-token text, eager attention of its layer LAYER: (H, T, T) float64)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = make_long_llama(tmp_path_factory.mktemp("text-long-llama"))
    text = text_of(folder, TOKENS)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    enc = tok(text, return_tensors="pt")
    enc.pop("token_type_ids", None)
    with torch.inference_mode():
        layer = model(**enc, output_attentions=True).attentions[LAYER][0].double().numpy()  # (H, T, T)
    del model
    env = {"HEADMAP_BUILTIN_MODELS": "", "HEADMAP_MODELS": f"{MODEL}={folder}", "HEADMAP_DEFAULT_MODEL": MODEL}
    ARTIFACTS.mkdir(exist_ok=True)
    with headmap_serve(env, log=ARTIFACTS / "text-long-server.log") as srv:
        yield srv.url, text, layer


@pytest.fixture
def tpage(browser, text_server) -> Iterator[tuple[Any, Recorder]]:  # type: ignore[no-untyped-def]
    """A fresh page; afterwards: nothing asked of another origin, no page error."""
    url = text_server[0]
    rec = Recorder()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.on("request", lambda r: rec.requests.append(f"{r.method} {r.url}"))
    pg.on("pageerror", lambda e: rec.errors.append(str(e)))
    yield pg, rec
    context.close()
    outside = [u for u in rec.requests if not u.split(" ", 1)[1].startswith((url + "/", "data:", "blob:"))]
    assert outside == [], f"requests outside the server: {outside}"
    assert rec.errors == [], f"uncaught page errors: {rec.errors}"


def open_text(page, url: str, text: str, extra: str = "") -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{url}/#text={quote(text)}&model={MODEL}&view=text&layer={LAYER}&head={HEAD}{extra}")
    wait_ready(page)


def wait_shaded(page, pinned: int, direction: str, selected: int | None = None) -> None:  # type: ignore[no-untyped-def]
    sel = pinned if selected is None else selected
    wait_until(
        page,
        f"{TV}.pinned === '{pinned}' && {TV}.direction === '{direction}' && "
        f"({TV}.ready || '').endsWith(':{direction}:{sel}')",
    )


def shaded(page) -> dict[int, float]:  # type: ignore[no-untyped-def]
    """Token index -> weight of the tokens shaded for the selection shown (the chunks in view)."""
    pairs = page.evaluate(
        f"""(() => {{ const key = {TV}.ready;
             return [...document.querySelectorAll('#tv-text .tv-chunk')].filter(c => c.dataset.shaded === key)
               .flatMap(c => [...c.querySelectorAll('.tv-tok')].map(s => [Number(s.dataset.i), Number(s.dataset.w)]));
           }})()"""
    )
    return {int(i): float(w) for i, w in pairs}


def painted(page) -> int:  # type: ignore[no-untyped-def]
    """Token spans that carry a shade at all (any selection's)."""
    spans = "[...document.querySelectorAll('#tv-text .tv-tok')]"
    return int(page.evaluate(f"{spans}.filter(s => s.style.backgroundColor).length"))


def api_vector(url: str, text: str, index: int, axis: str) -> np.ndarray:
    with httpx.Client(base_url=url, timeout=120) as api:
        run = api.post("/api/runs", json={"text": text, "model": MODEL}).json()["run_id"]
        r = api.get(f"/api/runs/{run}/vector", params={"layer": LAYER, "head": HEAD, "index": index, "axis": axis})
        r.raise_for_status()
        return np.array(r.json()["weights"])


def check(page, want_api: np.ndarray, want_eager: np.ndarray) -> dict[int, float]:  # type: ignore[no-untyped-def]
    got = shaded(page)
    assert 0 < len(got) <= SHADED_MAX, len(got)
    idx = np.array(sorted(got))
    w = np.array([got[i] for i in idx])
    np.testing.assert_allclose(w, want_api[idx], atol=API_TOL, rtol=0)
    np.testing.assert_allclose(w, want_eager[idx], atol=EAGER_TOL, rtol=0)
    assert abs(float(page.evaluate(f"Number({TV}.zmax)")) - want_api.max()) <= API_TOL  # darkest = the largest
    return got


def vector_requests(rec: Recorder, index: int, axis: str) -> int:
    return sum(1 for u in rec.requests if re.search(rf"/vector\?.*index={index}&axis={axis}\b", u))


def test_text_view_of_a_2000_token_run(tpage, text_server) -> None:  # type: ignore[no-untyped-def]
    page, rec = tpage
    url, text, att = text_server
    open_text(page, url, text)
    assert page.is_hidden("#error") or not page.inner_text("#error").strip()
    assert page.evaluate("document.getElementById('app').dataset.view") == "text"
    assert any(r.startswith("POST") and r.endswith("/api/runs") for r in rec.requests)  # a run, not /api/attention
    assert page.evaluate("document.querySelectorAll('#tv-text .tv-tok').length") == TOKENS
    wait_shaded(page, 0, "from")  # the first token (this tokenizer adds no special ones)
    check(page, api_vector(url, text, 0, "query"), att[HEAD, 0])
    assert painted(page) <= SHADED_MAX

    # pin token 1000 (it scrolls into view): its row, only the chunks around it shaded
    page.evaluate("document.getElementById('tv-t1000').scrollIntoView({block: 'center'})")
    page.click("#tv-t1000")
    page.mouse.move(0, 0)
    wait_shaded(page, 1000, "from")
    got = check(page, api_vector(url, text, 1000, "query"), att[HEAD, 1000])
    assert 1000 in got and all(got[i] == 0 for i in got if i > 1000)  # causal: nothing after the query
    assert painted(page) <= 2 * SHADED_MAX < TOKENS
    assert vector_requests(rec, 1000, "query") == 1
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / "text-long-light.png"))

    # switched to "to": the column of token 1000, asked for now
    page.check("input[name=tv-dir][value=to]")
    wait_shaded(page, 1000, "to")
    got = check(page, api_vector(url, text, 1000, "key"), att[HEAD, :, 1000])
    assert all(got[i] == 0 for i in got if i < 1000)  # causal: no query before the key
    assert vector_requests(rec, 1000, "key") == 1

    # the arrow key pins the next token; hovering previews another; leaving comes back (cached: no new request)
    page.focus("#tv-text")
    page.keyboard.press("ArrowRight")
    wait_shaded(page, 1001, "to")
    check(page, api_vector(url, text, 1001, "key"), att[HEAD, :, 1001])
    page.hover("#tv-t1005")
    wait_shaded(page, 1001, "to", selected=1005)
    check(page, api_vector(url, text, 1005, "key"), att[HEAD, :, 1005])
    page.mouse.move(0, 0)
    wait_shaded(page, 1001, "to")
    assert vector_requests(rec, 1001, "key") == 1 and vector_requests(rec, 1005, "key") == 1

    # dark mode: the same weights, another scale background
    page.click("#theme-toggle")
    wait_until(page, "document.documentElement.dataset.theme === 'dark'")
    page.screenshot(path=str(SHOTS / "text-long-dark.png"))
    page.click("#theme-toggle")

    # the link keeps the pin and the direction; opening it restores them
    link = page.evaluate("location.hash")
    assert "pin=1001" in link and "dir=to" in link
    page.goto("about:blank")
    page.goto(f"{url}/{link}")
    wait_ready(page)
    wait_shaded(page, 1001, "to")
    assert page.is_checked("input[name=tv-dir][value=to]")
    check(page, api_vector(url, text, 1001, "key"), att[HEAD, :, 1001])

    # the server forgets the run: the next token's column makes it again (one POST) and is still right
    stale = page.evaluate("document.getElementById('app').dataset.runId")
    posts = sum(1 for r in rec.requests if r.startswith("POST") and r.endswith("/api/runs"))
    assert httpx.delete(f"{url}/api/runs/{stale}").status_code == 204
    page.focus("#tv-text")
    page.keyboard.press("ArrowLeft")
    wait_shaded(page, 1000, "to")
    check(page, api_vector(url, text, 1000, "key"), att[HEAD, :, 1000])
    assert page.evaluate("document.getElementById('app').dataset.runId") != stale
    assert sum(1 for r in rec.requests if r.startswith("POST") and r.endswith("/api/runs")) == posts + 1

    # the text alternative of a run: the shown token's three largest weights (eager's, ranked here)
    page.click("#tv-alt summary")
    rows = "[...document.querySelectorAll('#tv-alt tbody tr')]"
    wait_until(page, f"{rows}.length > 0")  # filled on the toggle event
    cells = page.evaluate(f"{rows}.map(r => [...r.cells].map(c => c.textContent))")
    assert len(cells) == 1 and cells[0][0].startswith("1000 ")
    top = np.argsort(-att[HEAD, :, 1000], kind="stable")[:3]
    assert [int(c.split("(#")[1].split(")")[0]) for c in cells[0][1:]] == top.tolist()


def test_merged_words_on_a_run(tpage, text_server) -> None:  # type: ignore[no-untyped-def]
    """Words merged: a group's weights from a run's rows are the short view's grouping (key pieces summed,
    query pieces averaged), computed here from eager and the run's word ids."""
    page, _ = tpage
    url, text, att = text_server
    info = httpx.post(f"{url}/api/runs", json={"text": text, "model": MODEL}, timeout=120).json()
    groups: list[list[int]] = []
    for i, word in enumerate(info["word_ids"]):  # a token continues the word of the one before it
        same = i > 0 and word is not None and word == info["word_ids"][i - 1] and not info["special"][i]
        if same and not info["special"][i - 1]:
            groups[-1].append(i)
        else:
            groups.append([i])
    assert len(groups) < TOKENS  # some words are several tokens
    g = next(j for j, members in enumerate(groups) if len(members) > 1 and members[0] >= 600)
    open_text(page, url, text, f"&merge=1&pin={groups[g][-1]}")
    wait_until(page, f"document.querySelectorAll('#tv-text .tv-tok').length === {len(groups)}")
    wait_shaded(page, g, "from")
    rows = att[HEAD, groups[g]]  # (pieces, T)
    want = np.array([rows[:, members].sum(axis=1).mean() for members in groups])
    got = shaded(page)
    idx = np.array(sorted(got))
    np.testing.assert_allclose([got[i] for i in idx], want[idx], atol=EAGER_TOL, rtol=0)
    assert len(idx) <= SHADED_MAX


def test_short_text_pin_and_direction_in_the_link(tpage, text_server) -> None:  # type: ignore[no-untyped-def]
    """A short input (one /api/attention response): the link's pin and direction are restored and kept."""
    page, _ = tpage
    url = text_server[0]
    sentence = "The cat sat on the mat because it was tired."
    resp = httpx.post(f"{url}/api/attention", json={"text": sentence, "model": MODEL}, timeout=120).json()
    att = np.array(resp["attention"])[LAYER, HEAD]  # (T, T)
    open_text(page, url, sentence, "&pin=4&dir=to")
    wait_until(page, f"{TV}.pinned === '4' && {TV}.direction === 'to' && ({TV}.ready || '').endsWith(':to:4')")
    assert page.is_checked("input[name=tv-dir][value=to]")
    w = page.evaluate("[...document.querySelectorAll('#tv-text .tv-tok')].map(s => Number(s.dataset.w))")
    np.testing.assert_allclose(w, att[:, 4], atol=1 / 255 + 1e-4)  # the page holds uint8 levels (compact)
    page.click("#tv-t6")
    page.check("input[name=tv-dir][value=from]")
    wait_until(page, "location.hash.includes('pin=6') && !location.hash.includes('dir=')")
