"""Timings of the reading views (issue 16) in headless Chromium against a running server.

    python benchmarks/reading_views.py http://127.0.0.1:8000 [--reps 5]

Measured inside the page with ``performance.now()``: the line view's layer switch at 128 tokens with
all 12 heads of a layer (from the slider's input event to the page's ``headmap:drawn`` event and the
next painted frame), the canvas draw alone (its ``data-draw-ms``), a hover that keeps one token's lines,
and the text view's pin move at 512 tokens (an arrow key to the next painted frame). Medians after one
warm-up. Numbers depend on the machine; run it on a quiet one.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.harness import CHROMIUM, CHROMIUM_ARGS

TEXT128 = " ".join(["the quick brown fox jumps over the lazy dog"] * 14)  # 128 tokens on minilm
TEXT512 = " ".join(["Attention is all you need, said the paper in 2017."] * 50)  # truncated to 512

_LAYER = """async (layer) => {
  const drawn = new Promise((resolve) => document.addEventListener('headmap:drawn', resolve, { once: true }));
  const el = document.getElementById('layer');
  const t0 = performance.now();
  el.value = String(layer);
  el.dispatchEvent(new Event('input', { bubbles: true }));
  await drawn;
  await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
  return [performance.now() - t0, Number(document.getElementById('lv-canvas').dataset.drawMs)];
}"""

_HOVER = """async (row) => {
  const c = document.getElementById('lv-canvas');
  const r = c.getBoundingClientRect();
  const t0 = performance.now();
  const at = { clientX: r.left + 10, clientY: r.top + 28 + (row + 0.5) * 15, bubbles: true };
  c.dispatchEvent(new MouseEvent('mousemove', at));
  await new Promise((res) => requestAnimationFrame(() => setTimeout(res, 0)));
  return performance.now() - t0;
}"""

_PIN = """async () => {
  const el = document.getElementById('tv-text');
  const t0 = performance.now();
  el.dispatchEvent(new KeyboardEvent('keydown', { key: 'ArrowRight', bubbles: true }));
  await new Promise((res) => requestAnimationFrame(() => setTimeout(res, 0)));
  return performance.now() - t0;
}"""


def wait(page, expr: str, timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not page.evaluate(expr):
        if time.monotonic() > deadline:
            raise TimeoutError(expr)
        time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    ready = "document.getElementById('app').dataset.state === 'ready'"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.goto(f"{args.url}/#text={quote(TEXT128)}&model=minilm&view=lines")
        wait(page, ready)
        page.click("#lv-all")
        wait(page, "document.getElementById('lv-canvas').dataset.heads.split(',').length === 12")
        lines = page.get_attribute("#lv-canvas", "data-line-count")
        layer = [page.evaluate(_LAYER, (i % 5) + 1) for i in range(args.reps + 1)][1:]
        hover = [page.evaluate(_HOVER, i % 128) for i in range(args.reps + 1)][1:]
        print(f"line view, 128 tokens x 12 heads ({lines} lines at layer 5):")
        print(f"  layer switch to painted: median {statistics.median(x[0] for x in layer):.1f} ms")
        print(f"  canvas draw alone:       median {statistics.median(x[1] for x in layer):.1f} ms")
        print(f"  hover one token:         median {statistics.median(hover):.1f} ms")

        page.goto(f"{args.url}/#view=text")
        wait(page, ready)
        page.check("#truncate")
        page.fill("#text", TEXT512)
        page.press("#text", "Control+Enter")
        wait(page, "document.querySelectorAll('#tv-text .tv-tok').length === 512")
        pin = [page.evaluate(_PIN) for _ in range(args.reps + 1)][1:]
        print(f"text view, 512 tokens: pin move to painted: median {statistics.median(pin):.1f} ms")
        browser.close()


if __name__ == "__main__":
    main()
