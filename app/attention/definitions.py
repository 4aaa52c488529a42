"""The one written definition of every head statistic and of attention rollout.

Everything else is generated from here: the API schema's descriptions (``schemas/insight.py``), the
page's statistic picker, table and help (``templates/index.html`` embeds ``page_definitions()`` as
JSON; ``static/js/definitions.js`` reads it), the report's notes, and the rollout formula in the
page's help. ``tests/test_definitions.py`` checks that no other copy of a formula remains.

Notation: ``w`` is one head's T×T weight matrix, ``q`` a query row, ``k`` a key column, layers are
numbered from 0. A statistic's ``explanation`` holds ``{formula}`` where its formula goes; ``text()``
renders it as Markdown (formula in backticks, for the OpenAPI schema) or as plain text (the page).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class Statistic:
    """One per-head statistic: a number per (layer, head) computed over the head's T×T matrix ``w``."""

    id: str  # field name in the API and the URL (`stat=`)
    name: str  # picker and plot title
    short: str  # table column
    unit: str  # "" for shares and weights
    formula: str  # plain text, Unicode maths
    explanation: str  # contains "{formula}" once

    def text(self, *, markdown: bool = True) -> str:
        """The full definition: the explanation with the formula in place (in backticks for Markdown)."""
        text = self.explanation.format(formula=f"`{self.formula}`")
        return text if markdown else text.replace("`", "")


ROWS = "averaged over query rows"

STATISTICS: tuple[Statistic, ...] = (
    Statistic(
        id="entropy",
        name="Entropy",
        short="Entropy",
        unit="nats",
        formula="−Σ_k w[q,k]·ln w[q,k]",
        explanation="Entropy of each query row, {formula} in nats (0·ln 0 = 0), "
        + ROWS
        + ". 0 = every query attends to one token; ln T = uniform.",
    ),
    Statistic(
        id="distance",
        name="Mean distance",
        short="Dist.",
        unit="tokens",
        formula="Σ_k w[q,k]·|q − k|",
        explanation="Mean attention distance {formula} in token positions, " + ROWS + ": how far a head looks.",
    ),
    Statistic(
        id="max_weight",
        name="Max weight",
        short="Max",
        unit="",
        formula="max_{q,k} w[q,k]",
        explanation="The largest single weight {formula} in the head's matrix.",
    ),
    Statistic(
        id="row_max",
        name="Row max",
        short="Row max",
        unit="",
        formula="max_k w[q,k]",
        explanation="The largest weight of each query row, {formula}, "
        + ROWS
        + ": how peaked a typical row is ('confidence', Voita et al. 2019).",
    ),
    Statistic(
        id="to_cls",
        name="To [CLS]",
        short="[CLS]",
        unit="",
        formula="Σ_{k∈C} w[q,k]",
        explanation="Share of attention to [CLS], {formula} over the [CLS] positions C (`cls_positions`), "
        + ROWS
        + ". Null when the input has no [CLS] token (e.g. GPT-2).",
    ),
    Statistic(
        id="to_sep",
        name="To [SEP]",
        short="[SEP]",
        unit="",
        formula="Σ_{k∈S} w[q,k]",
        explanation="Share of attention to [SEP], {formula} over every [SEP] position S (`sep_positions`, one per "
        "segment), " + ROWS + ". Null when the input has no [SEP] token.",
    ),
    Statistic(
        id="to_self",
        name="To self",
        short="Self",
        unit="",
        formula="w[q,q]",
        explanation="Share of attention a token gives itself, {formula}, " + ROWS + ".",
    ),
    Statistic(
        id="to_previous",
        name="To previous",
        short="Prev",
        unit="",
        formula="w[q,q−1]",
        explanation="Share of attention to the token just before, {formula}, averaged over the T−1 rows "
        "q = 1..T−1. Null when T = 1.",
    ),
    Statistic(
        id="to_next",
        name="To next",
        short="Next",
        unit="",
        formula="w[q,q+1]",
        explanation="Share of attention to the token just after, {formula}, averaged over the T−1 rows "
        "q = 0..T−2. Null when T = 1.",
    ),
)

STATISTIC = {s.id: s for s in STATISTICS}
DEFAULT_STATISTIC = "entropy"


@dataclass(frozen=True, kw_only=True)
class Rollout:
    """Attention rollout: the residual-corrected layer matrix and the product over layers."""

    source: str
    step: str  # per layer
    product: str  # after layer l, down to layer 0
    explanation: str

    def text(self, *, markdown: bool = True) -> str:
        """One paragraph: source, both formulas (in backticks for Markdown) and what a row means."""
        text = (
            f"Attention rollout ({self.source}): per layer `{self.step}`, each row divided by its sum, "
            f"and `{self.product}`. {self.explanation}"
        )
        return text if markdown else text.replace("`", "")


ROLLOUT = Rollout(
    source="Abnar & Zuidema 2020",
    step="Â_l = 0.5·mean_h(A_l) + 0.5·I",
    product="rollout_l = Â_l · Â_{l−1} ··· Â_0",
    explanation="Row q of rollout_l is how much of token q's representation after layer l traces back to each "
    "input token, counting the residual connection (the identity I) as half of every layer; rows sum to 1.",
)


def subscripts_html(formula: str) -> str:
    """``formula`` as HTML with ``x_i`` / ``x_{ij}`` as subscripts, everything else escaped.

    ``"Â_{l−1}"`` -> ``"Â<sub>l−1</sub>"``. Used by the page's help (``templates/index.html``).
    """
    escaped = formula.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    return re.sub(r"_(\{([^}]*)\}|(\w))", lambda m: f"<sub>{m.group(2) or m.group(3)}</sub>", escaped)


def page_definitions() -> dict[str, Any]:
    """What the page's scripts get (embedded in ``index.html``): the statistics with their plain-text help."""
    return {
        "default_stat": DEFAULT_STATISTIC,
        "stats": [
            {**{k: v for k, v in asdict(s).items() if k != "explanation"}, "help": s.text(markdown=False)}
            for s in STATISTICS
        ],
        "rollout": {**asdict(ROLLOUT), "help": ROLLOUT.text(markdown=False)},
    }
