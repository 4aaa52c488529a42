"""Browser timings of the page in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

    python benchmarks/bench.py --browser          # as part of the full benchmark
    python benchmarks/browser_timing.py URL       # against a running server, e.g. http://127.0.0.1:8000

Every number is measured inside the page with ``performance.now()``: the clock starts just before
the real control is operated (``click()`` on Run, an ``input`` event on a slider, a click on the
Model view tab) and stops when the page has announced the finished draw (its ``headmap:drawn``
event, dispatched after Plotly or the canvases are done) and the browser has painted the next frame.
Medians over a few repetitions, after one warm-up.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the harness in `tests` importable
from tests.harness import CHROMIUM, CHROMIUM_ARGS

TOKENS = 128
REPS = 5

# The page's drawn event, then one painted frame (rAF runs before paint; the timeout after it).
_HELPERS = """
  const drawn = (view) => new Promise((resolve) => {
    const on = (e) => {
      if (view && e.detail.view !== view) return;
      document.removeEventListener('headmap:drawn', on);
      resolve(e.detail);
    };
    document.addEventListener('headmap:drawn', on);
  });
  const painted = () => new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
"""

_RUN = (
    "async (text) => {"
    + _HELPERS
    + """
  const app = document.getElementById('app');
  const runs = app.dataset.runs;
  document.getElementById('text').value = text;
  const done = drawn('head');
  const t0 = performance.now();
  document.getElementById('run').click();
  await done;
  await painted();
  const ms = performance.now() - t0;
  if (app.dataset.runs === runs || app.dataset.state !== 'ready') throw new Error('run failed: ' + app.dataset.state);
  return ms;
}"""
)

_SLIDER = (
    "async ([id, value]) => {"
    + _HELPERS
    + """
  const el = document.getElementById(id);
  const done = drawn('head');
  const t0 = performance.now();
  el.value = String(value);
  el.dispatchEvent(new Event('input', { bubbles: true }));
  await done;
  await painted();
  return performance.now() - t0;
}"""
)

_TAB = (
    "async ([id, view]) => {"
    + _HELPERS
    + """
  const done = drawn(view);
  const t0 = performance.now();
  document.getElementById(id).click();
  await done;
  await painted();
  return performance.now() - t0;
}"""
)


def text_of(tokens: int) -> str:
    """A text that minilm tokenizes into exactly ``tokens`` tokens ([CLS] + words + [SEP])."""
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "looked", "at", "every", "bird", "in", "the", "garden"]
    return " ".join(words[i % len(words)] for i in range(tokens - 2))


def _median(values: list[float]) -> float:
    return statistics.median(values[1:] if len(values) > 2 else values)  # the first is a warm-up


def _fmt(ms: float) -> str:
    return f"{ms:.0f} ms"


def measure(base_url: str, reps: int = REPS) -> list[list[str]]:
    """Time the page at ``base_url`` (a running Headmap server with minilm) in headless Chromium.

    Returns rows ``[what, measured, target]`` (strings, medians of ``reps`` repetitions after a warm-up):
    Run to first painted heatmap, a layer switch, a head switch, and the model grid of every layer x head,
    all at 128 tokens.
    """
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"no Chromium at {CHROMIUM} (set HEADMAP_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    text = text_of(TOKENS)
    first: list[float] = []
    layer: list[float] = []
    head: list[float] = []
    grid: list[float] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1440, "height": 1000})
            page = context.new_page()
            page.goto(base_url.rstrip("/") + "/#model=minilm&view=head&agg=head&layer=0&head=0")
            page.wait_for_selector("#app[data-state='ready']", timeout=120_000)
            shape = page.evaluate("document.getElementById('layer').max + 'x' + document.getElementById('head').max")
            layers, heads = (int(x) + 1 for x in shape.split("x"))
            for rep in range(reps + 1):
                first.append(page.evaluate(_RUN, text))
                tokens = page.evaluate("document.getElementById('status').textContent")
                if f"{TOKENS} tokens" not in tokens:
                    raise RuntimeError(f"expected {TOKENS} tokens, the page says: {tokens}")
                # Slider moves as a user makes them: one step at a time, to a layer/head not yet drawn.
                for step in range(1, 4):
                    layer.append(page.evaluate(_SLIDER, ["layer", (rep + step) % layers]))
                    head.append(page.evaluate(_SLIDER, ["head", (rep * 3 + step) % heads]))
                grid.append(page.evaluate(_TAB, ["tab-model", "model"]))
                page.evaluate(_TAB, ["tab-head", "head"])
            context.close()
        finally:
            browser.close()
    cells = f"{layers} x {heads} = {layers * heads}"
    return [
        [f"click Run to first heatmap painted ({TOKENS} tokens)", _fmt(_median(first)), "<= 1000 ms"],
        [f"layer switch ({TOKENS} tokens)", _fmt(_median(layer)), "<= 100 ms"],
        [f"head switch ({TOKENS} tokens)", _fmt(_median(head)), "<= 100 ms"],
        [f"model grid, {cells} plots ({TOKENS} tokens)", _fmt(_median(grid)), "<= 2000 ms"],
    ]


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit(f"usage: {argv[0]} BASE_URL")
    for row in measure(argv[1]):
        print(" | ".join(row))


if __name__ == "__main__":
    main(sys.argv)
