"""End-to-end fixtures: one real uvicorn server and one headless Chromium for the whole session.

Chromium is Debian's (/usr/bin/chromium) driven by Playwright; nothing is downloaded. The page runs
under the app's real Content-Security-Policy, so ``page.wait_for_function`` (which evaluates a
string in the page) is refused: waits poll ``page.evaluate`` from Python instead.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.harness import CHROMIUM, CHROMIUM_ARGS, headmap_serve

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="package")
def server() -> Iterator[str]:
    """Base URL of the real app (minilm + custom) in a ``headmap serve`` subprocess on a free loopback port."""
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "timings.json").unlink(missing_ok=True)
    with headmap_serve(log=ARTIFACTS / "browser-server.log") as srv:
        yield srv.url


# Package scope: Playwright's sync API keeps an event loop running in this thread until it stops,
# which would break every later test that runs its own loop (anyio, asyncio.run).
@pytest.fixture(scope="package")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@dataclass
class Recorder:
    """What a page did: every request URL, uncaught errors, dialogs, console errors."""

    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def page(browser, server: str, recorder: Recorder) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """A fresh page; afterwards asserts it asked nothing of any other origin and raised no error."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
    pg = context.new_page()
    pg.on("request", lambda r: recorder.requests.append(r.url))
    pg.on("pageerror", lambda e: recorder.errors.append(str(e)))
    pg.on("console", lambda m: recorder.console.append(m.text) if m.type == "error" else None)

    def on_dialog(d):  # type: ignore[no-untyped-def]
        recorder.dialogs.append(d.message)
        d.dismiss()

    pg.on("dialog", on_dialog)
    yield pg
    context.close()
    outside = [u for u in recorder.requests if not u.startswith((server + "/", "data:", "blob:"))]
    assert outside == [], f"requests outside the server: {outside}"
    assert recorder.dialogs == [], f"dialogs opened: {recorder.dialogs}"
    assert recorder.errors == [], f"uncaught page errors: {recorder.errors}"


# -- helpers used by the tests ---------------------------------------------------------------------


def wait_until(page, expression: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    """Poll a JS expression until truthy (CSP forbids Playwright's eval-based wait_for_function)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if page.evaluate(expression):
            return
        time.sleep(0.03)
    raise AssertionError(f"timed out after {timeout} s waiting for: {expression}")


def renders(page) -> int:  # type: ignore[no-untyped-def]
    return int(page.get_attribute("#app", "data-renders") or 0)


def wait_render(page, before: int, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    wait_until(page, f"Number(document.getElementById('app').dataset.renders || 0) > {before}", timeout)


def wait_ready(page, timeout: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    wait_until(page, "['ready', 'error'].includes(document.getElementById('app').dataset.state)", timeout)
    state = page.get_attribute("#app", "data-state")
    assert state == "ready", f"page state {state}: {page.inner_text('#error')}"


def run_text(page, text: str, *, timeout: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    """Type `text` and press Ctrl+Enter; wait until the new response is drawn."""
    runs = page.evaluate("document.getElementById('app').dataset.runs || '0'")
    page.fill("#text", text)
    page.press("#text", "Control+Enter")
    wait_until(
        page,
        f"(document.getElementById('app').dataset.runs || '0') !== '{runs}' || "
        "document.getElementById('app').dataset.state === 'error'",
        timeout,
    )
    wait_ready(page, timeout)


def ticks(page, axis: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Displayed text of the head view's token labels on `axis` ("x" or "y"), ordered by position.

    The head view draws them as HTML text over the figure (``#heatmap-labels``), not as Plotly ticks.
    """
    return page.evaluate(
        f"""[...document.querySelectorAll('#heatmap-labels .{axis}tick')]
              .map(s => [Number(s.dataset.pos), s.textContent]).sort((a, b) => a[0] - b[0]).map(p => p[1])"""
    )


def shown(page) -> dict:  # type: ignore[no-untyped-def]
    """The head view's matrix (as Plotly holds it) and its title."""
    return page.evaluate(
        """(() => { const gd = document.getElementById('heatmap');
                    return {z: gd.data[0].z, title: gd.layout.title.text,
                            titleText: gd.querySelector('.gtitle')?.textContent ?? ''}; })()"""
    )


def hover_cell(page, q: int, k: int) -> str:  # type: ignore[no-untyped-def]
    """Move the mouse over cell (query q, key k) and return the tooltip's text."""
    x, y = page.evaluate(
        f"""(() => {{ const gd = document.getElementById('heatmap'); const fl = gd._fullLayout;
                     const r = gd.getBoundingClientRect();
                     return [r.left + fl.xaxis._offset + fl.xaxis.l2p({k}),
                             r.top + fl.yaxis._offset + fl.yaxis.l2p({q})]; }})()"""
    )
    page.mouse.move(x, y)
    wait_until(page, "!document.getElementById('tooltip').hidden", 10)
    return page.inner_text("#tooltip")


def shot(page, name: str) -> Path:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
