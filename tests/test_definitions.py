"""The head statistics and attention rollout are defined once (``headmap.attention.definitions``):
the schema, the page, its help and the report take them from there, and no other copy remains."""

from __future__ import annotations

import html
import json
import re
from dataclasses import fields
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from headmap.attention.definitions import (
    DEFAULT_STATISTIC,
    ROLLOUT,
    STATISTIC,
    STATISTICS,
    page_definitions,
    subscripts_html,
)
from headmap.attention.stats import HeadStats
from headmap.main import create_app
from headmap.schemas.insight import HeadStatistics
from headmap.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "app" / "attention" / "definitions.py"


@pytest.fixture(scope="module")
def client() -> TestClient:
    with TestClient(create_app(Settings(builtin_models="", warmup=False))) as c:
        yield c  # type: ignore[misc]


def normal(text: str) -> str:
    """Spacing, minus signs and product signs made alike, so a retyped formula is still found."""
    text = text.replace("−", "-").replace("*", "·").replace("@", "·").replace("Â", "A^")
    return re.sub(r"\s+", "", text)


def texts() -> list[Path]:
    """Every file a definition could be copied into (tests, which compute independently, excepted)."""
    paths = [*ROOT.joinpath("app").rglob("*.py"), *ROOT.joinpath("static", "js").glob("*.js")]
    paths += [*ROOT.joinpath("templates").glob("*.html"), *ROOT.joinpath("docs").rglob("*.md")]
    return [p for p in paths if p != SOURCE]


# The distinctive part of each formula; the statistics' one-cell formulas (w[q,q]) are too short
# to tell a definition from code, so their sentences are searched instead.
FRAGMENTS = {
    **{s.id: [s.formula] for s in STATISTICS if len(normal(s.formula)) > 8},
    **{s.id: [s.explanation.split("{formula}")[0].strip()] for s in STATISTICS if len(normal(s.formula)) <= 8},
    "rollout": [ROLLOUT.step, ROLLOUT.product, "0.5·I", "0.5 * I", "Â_0", "Â<sub>0", "Â<sub>1"],
}


def test_no_other_copy_of_a_definition() -> None:
    copies = []
    for path in texts():
        body = normal(path.read_text(encoding="utf-8"))
        for name, fragments in FRAGMENTS.items():
            copies += [f"{path.relative_to(ROOT)}: {name} ({f})" for f in fragments if normal(f) in body]
    assert copies == []


def test_readme_states_the_rollout_formula_as_defined() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"`{ROLLOUT.step}`" in readme
    assert f"`{ROLLOUT.product}`" in readme


def test_one_list_of_statistics_everywhere() -> None:
    ids = [s.id for s in STATISTICS]
    assert ids == [f.name for f in fields(HeadStats)]
    assert ids == list(HeadStatistics.model_fields)
    assert DEFAULT_STATISTIC in STATISTIC
    for s in STATISTICS:
        assert s.explanation.count("{formula}") == 1, s.id


def test_schema_descriptions_are_the_definitions(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    props = schemas["HeadStatistics"]["properties"]
    for s in STATISTICS:
        assert props[s.id]["description"] == s.text(), s.id
        assert f"`{s.formula}`" in props[s.id]["description"]
    assert ROLLOUT.text() in schemas["AggregateResponse"]["properties"]["rollout"]["description"]


def test_page_embeds_the_definitions_and_its_help_ends_the_product_at_layer_0(client: TestClient) -> None:
    page = client.get("/").text
    embedded = re.search(r'data-definitions="([^"]*)"', page)
    assert embedded
    assert json.loads(html.unescape(embedded.group(1))) == page_definitions()
    assert [s["id"] for s in page_definitions()["stats"]] == [s.id for s in STATISTICS]
    help_item = re.search(r'<li id="help-rollout">(.*?)</li>', page, flags=re.S)
    assert help_item
    text = help_item.group(1)
    # Layers are numbered from 0, so the product runs down to Â_0, never stopping at Â_1.
    assert "Â<sub>l</sub> · Â<sub>l−1</sub> ··· Â<sub>0</sub>" in text
    assert "Â<sub>1</sub>" not in text
    assert "0.5·I" in text and "Abnar" in text


def test_plain_text_drops_the_markdown_only() -> None:
    entropy = STATISTIC["entropy"]
    assert entropy.text() == (
        "Entropy of each query row, `−Σ_k w[q,k]·ln w[q,k]` in nats (0·ln 0 = 0), averaged over query rows. "
        "0 = every query attends to one token; ln T = uniform."
    )
    assert entropy.text(markdown=False) == entropy.text().replace("`", "")
    assert "`" not in ROLLOUT.text(markdown=False)


def test_subscripts_are_rendered_and_everything_else_escaped() -> None:
    assert subscripts_html("Â_{l−1} · Â_0") == "Â<sub>l−1</sub> · Â<sub>0</sub>"
    assert subscripts_html("mean_h(A_l)") == "mean<sub>h</sub>(A<sub>l</sub>)"
    assert subscripts_html("a<b & c_<") == "a&lt;b &amp; c_&lt;"
