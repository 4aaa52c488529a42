"""Predictions, generation and perturbation in real Chromium, on tiny models built in the test.

A server with a tiny ``BertForMaskedLM`` and a tiny ``LlamaForCausalLM`` (grouped-query attention):
the model picker names family, size, heads and dtype from ``/api/models``; the prediction tooltip shows
the API's top-k; a perturbation sends the edited text as B, draws the API's A − B and the statistics'
changes (A and B from ``/api/stats``), keeps the edit in the link; a decoder's matrix shows the causal
triangle masked and generated tokens styled apart.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.browser.conftest import ARTIFACTS, renders, run_text, shown, wait_ready, wait_render, wait_until
from tests.harness import headmap_serve
from tests.tiny_models import make_bert, make_llama

pytestmark = pytest.mark.browser

TEXT = "the cat sat on the mat."
SCREENSHOT = Path("/work/wt/predict.png")
JSON_TOL = 2e-4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """This module's own server (overrides the package's minilm one): the two tiny LM models."""
    root = tmp_path_factory.mktemp("predict-page")
    models = f"bertlm={make_bert(root / 'bertlm', lm=True)},llamalm={make_llama(root / 'llamalm', lm=True)}"
    env = {"HEADMAP_MODELS": models, "HEADMAP_BUILTIN_MODELS": "", "HEADMAP_DEFAULT_MODEL": "bertlm"}
    ARTIFACTS.mkdir(exist_ok=True)
    with headmap_serve(env, log=ARTIFACTS / "predict-server.log") as srv:
        yield srv.url


def post(server: str, path: str, body: dict) -> dict:
    r = httpx.post(f"{server}{path}", json=body, timeout=120)
    r.raise_for_status()
    return r.json()


def chip(page, pos: int):  # type: ignore[no-untyped-def]
    return page.locator(f"#token-strip button[data-pos='{pos}']")


def test_picker_predictions_and_perturbation(page, server):  # type: ignore[no-untyped-def]
    compares: list[dict] = []
    page.set_default_timeout(180_000)  # a shared, loaded machine

    def on_request(r) -> None:  # type: ignore[no-untyped-def]
        if r.url.endswith("/api/compare"):
            compares.append(json.loads(r.post_data or "{}"))

    page.on("request", on_request)
    page.goto(server + "/")
    wait_ready(page)

    # The picker: family, parameter count, query / key-value heads and dtype, as /api/models says.
    info = {m["name"]: m for m in httpx.get(f"{server}/api/models").json()["models"]}
    options = dict(page.eval_on_selector_all("#model option", "os => os.map(o => [o.value, o.text])"))
    llama = info["llamalm"]
    assert (llama["num_heads"], llama["num_kv_heads"]) == (4, 2)
    assert "llama" in options["llamalm"] and "4 query / 2 key-value heads" in options["llamalm"]
    assert "float32" in options["llamalm"] and "bert" in options["bertlm"] and "4 heads" in options["bertlm"]
    assert f"{info['bertlm']['num_parameters'] / 1000:.1f}k" in options["bertlm"]

    # Masked LM: hovering the [MASK] token shows the API's top candidates with their probabilities.
    masked = "the [MASK] sat on the mat."
    run_text(page, masked)
    api = post(server, "/api/attention", {"text": masked, "predictions": {"top_k": 5}})
    (pred,) = api["predictions"]
    chip(page, pred["position"]).hover()
    wait_until(page, "!document.getElementById('tooltip').hidden", 10)
    tip = page.inner_text("#tooltip")
    for c in pred["candidates"]:
        assert f"{c['label']}: {c['probability'] * 100:.1f}%" in tip

    # Perturbation: mask "mat" of the text as run; B is sent to /api/compare and A − B is drawn.
    run_text(page, TEXT)
    a = post(server, "/api/attention", {"text": TEXT})
    pos = a["tokens"].index("mat")
    chip(page, pos).click()
    before = renders(page)
    page.click("#perturb-mask")
    wait_render(page, before)
    wait_until(page, "document.getElementById('compare-view').dataset.status === 'ready'")
    wait_until(page, "document.getElementById('perturb-result').dataset.status === 'ready'")
    edited = "the cat sat on the [MASK]."
    assert compares[-1]["a"]["text"] == TEXT and compares[-1]["b"]["text"] == edited
    cmp = post(server, "/api/compare", compares[-1])
    diff = page.evaluate("document.getElementById('cmp-plot-diff').data[0].z")
    np.testing.assert_allclose(np.array(diff), np.array(cmp["diff"][0][0]), atol=JSON_TOL)

    # Each statistic of layer 0, head 0: A, B and A − B from /api/stats of the two texts.
    sa = post(server, "/api/stats", {"text": TEXT, "model": "bertlm"})["stats"]
    sb = post(server, "/api/stats", {"text": edited, "model": "bertlm"})["stats"]
    rows = page.eval_on_selector_all(
        "#perturb-result tbody tr",
        "rs => rs.map(r => [r.dataset.stat, ...[...r.cells].slice(1).map(c => c.textContent)])",
    )
    assert {r[0] for r in rows} >= {"entropy", "to_first", "to_self"}
    for stat, va, vb, vd in rows:
        if sa[stat] is None:
            continue
        x, y = sa[stat][0][0], sb[stat][0][0]
        assert float(va) == pytest.approx(x, abs=1e-3) and float(vb) == pytest.approx(y, abs=1e-3)
        assert float(vd.replace("−", "-")) == pytest.approx(x - y, abs=2e-3)
    # The masked-LM's top predictions at the masked position of B.
    pb = post(server, "/api/attention", {"text": edited, "predictions": {"top_k": 5}})["predictions"]
    items = page.eval_on_selector_all("#perturb-result .perturb-predictions li", "ls => ls.map(l => l.textContent)")
    assert items == [f"{c['label']}: {c['probability'] * 100:.1f}%" for c in pb[0]["candidates"]]

    # The link keeps the edit: opened afresh, it shows the same perturbation.
    url = page.url
    assert f"edit=mask%3A{pos}" in url or f"edit=mask:{pos}" in url
    page.goto("about:blank")
    page.goto(url)
    wait_ready(page)
    wait_until(page, "document.getElementById('perturb-result').dataset.status === 'ready'")
    assert "[MASK]" in page.input_value("#cmp-b-text")

    # Replace and delete send their own B.
    page.click("#tab-head")
    chip(page, a["tokens"].index("cat")).click()
    page.fill("#perturb-word", "dog")
    before = renders(page)
    page.press("#perturb-word", "Enter")
    wait_render(page, before)
    wait_until(page, "['ready', 'misaligned'].includes(document.getElementById('compare-view').dataset.status)")
    assert compares[-1]["b"]["text"] == "the dog sat on the mat."
    page.click("#tab-head")
    chip(page, a["tokens"].index("sat")).click()
    before = renders(page)
    page.click("#perturb-delete")
    wait_render(page, before)
    # one token fewer: A and B are shown side by side, without a difference
    wait_until(page, "document.getElementById('compare-view').dataset.status === 'misaligned'")
    assert compares[-1]["b"]["text"] == "the cat on the mat."


def test_decoder_generation_causal_triangle_and_styles(page, server):  # type: ignore[no-untyped-def]
    page.set_default_timeout(180_000)
    page.goto(server + "/")
    wait_ready(page)
    page.select_option("#model", "llamalm")
    assert page.is_visible("#generate")
    page.fill("#generate", "4")
    run_text(page, TEXT)
    api = post(server, "/api/attention", {"text": TEXT, "model": "llamalm", "generate": {"max_new_tokens": 4}})
    n = len(api["tokens"])
    z = np.array(shown(page)["z"])
    np.testing.assert_allclose(z, np.array(api["attention"][0][0]), atol=2 / 255)  # compact levels
    # The upper triangle is drawn masked (a path over the keys after each query), not left as zeros.
    shapes = page.evaluate("document.getElementById('heatmap').layout.shapes.filter(s => s.name === 'causal-mask')")
    assert len(shapes) == 1 and shapes[0]["path"].startswith(f"M 0.5 -0.5 L {n - 0.5} -0.5")
    # Generated tokens: styled apart in the strip and on the axes, as the response's `generated` says.
    gen = page.eval_on_selector_all("#token-strip button.gen", "bs => bs.map(b => Number(b.dataset.pos))")
    assert gen == [i for i, g in enumerate(api["generated"]) if g] and len(gen) == 4
    ygen = page.eval_on_selector_all("#heatmap-labels .ytick.gen", "s => s.map(x => Number(x.dataset.pos))")
    assert ygen and set(ygen) <= set(gen)
    # Hovering a token shows its next-token predictions (the API's, same request).
    api_p = post(
        server,
        "/api/attention",
        {"text": TEXT, "model": "llamalm", "generate": {"max_new_tokens": 4}, "predictions": {"top_k": 5}},
    )
    chip(page, 1).hover()
    wait_until(page, "!document.getElementById('tooltip').hidden", 10)
    first = api_p["predictions"][1]["candidates"][0]
    assert f"{first['label']}: {first['probability'] * 100:.1f}%" in page.inner_text("#tooltip")
    page.mouse.move(5, 5)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
