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
from typing import Any, TypedDict


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
    Statistic(
        id="to_first",
        name="To first",
        short="First",
        unit="",
        formula="w[q,0]",
        explanation="Share of attention to the first position, {formula}, "
        + ROWS
        + ". In decoders this is the 'attention sink' (Xiao et al. 2024): heads park attention on token 0 when "
        "nothing else is relevant. In BERT-style encoders position 0 is [CLS], so it equals to_cls there.",
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
    """What the page's scripts get (embedded in ``index.html``): the statistics with their plain-text help,
    the measures of the "Show" selector, the head detectors and head similarity (title, formula, reference)."""
    return {
        "default_stat": DEFAULT_STATISTIC,
        "stats": [
            {**{k: v for k, v in asdict(s).items() if k != "explanation"}, "help": s.text(markdown=False)}
            for s in STATISTICS
        ],
        "rollout": {**asdict(ROLLOUT), "help": ROLLOUT.text(markdown=False)},
        # Issue 15: the "Show" selector's measures, the head detectors and head similarity (defined below).
        "measures": MEASURES,
        "detectors": DETECTORS,
        "similarity": SIMILARITY,
    }


# -- measures beyond raw weights, head detectors, head similarity (issue 15) ----------------------------
# Notation: layer l, head h, query token i, key token j; α^h_ij the attention weight; x_j the layer's input
# vector of token j; W_V^h, b_V^h the head's slice of the value projection; W_O^h the head's rows of the
# output projection; I the identity; T the number of tokens.


class Definition(TypedDict):
    """One measure: what it is called, its formula in words and symbols, and where it comes from."""

    title: str
    formula: str
    reference: str


MEASURES: dict[str, Definition] = {
    "weights": {
        "title": "Attention weights",
        "formula": "α^h_ij = softmax_j(q_i · k_j / √d_k): the share of query i's attention on key j in head h.",
        "reference": "Vaswani et al. 2017, Attention Is All You Need.",
    },
    "norms": {
        "title": "Norm-based attention (per head)",
        "formula": "‖α^h_ij · f_h(x_j)‖ with f_h(x) = (x W_V^h + b_V^h) W_O^h: the length of the vector head h "
        "actually moves from key j to query i (the output bias b_O belongs to no token).",
        "reference": "Kobayashi, Kuribayashi, Yokoi & Inui 2020, Attention is Not Only a Weight: Analyzing "
        "Transformers with Vector Norms (EMNLP).",
    },
    "layer_norms": {
        "title": "Norm-based attention (per layer)",
        "formula": "‖Σ_h α^h_ij · f_h(x_j)‖: the length of what all heads of the layer together move from j to i.",
        "reference": "Kobayashi et al. 2020 (EMNLP), §4, the multi-head norm.",
    },
    "flow": {
        "title": "Attention flow",
        "formula": "Layered graph: node (l, i) is token i after layer l (l = 0 the input); the edge (l+1, i) → (l, j) "
        "has capacity Â_l[i, j], Â_l = 0.5·mean_h(A_l) + 0.5·I with rows renormalised (the rollout's matrix). "
        "flow_l[i, j] = maximum flow from (l+1, i) to input node (0, j), each row then divided by its sum. "
        "Computed with SciPy's maximum_flow on capacities scaled to integers (error ≲ 1e-5).",
        "reference": "Abnar & Zuidema 2020, Quantifying Attention Flow in Transformers (ACL); "
        "compute_flows in github.com/samiraabnar/attention_flow.",
    },
    "rollout": {
        "title": "Attention rollout",
        "formula": "Â_l = 0.5·mean_h(A_l) + 0.5·I, rows renormalised; rollout_l = Â_l · Â_{l−1} ··· Â_0.",
        "reference": "Abnar & Zuidema 2020 (ACL); compute_joint_attention in github.com/samiraabnar/attention_flow.",
    },
    "alti": {
        "title": "ALTI contributions (per layer)",
        "formula": "The attention block (all heads, residual, LayerNorm) decomposed per source token: "
        "z_ij = Σ_h α^h_ij f_h(x_j) + [i = j]·x_i, T_i(x_j) = γ ⊙ (z_ij − mean(z_ij)) / σ_i with σ_i the "
        "LayerNorm's standard deviation of token i, so the block output y_i = Σ_j T_i(x_j) + (bias terms). "
        "c_ij = max(0, ‖y_i‖₁ − ‖y_i − T_i(x_j)‖₁), each row divided by its sum. The feed-forward part is not "
        "decomposed (as in the paper). Always over all heads of the layer.",
        "reference": "Ferrando, Gállego & Costa-jussà 2022, Measuring the Mixing of Contextual Information in the "
        "Transformer (EMNLP); github.com/mt-upc/transformer-contributions.",
    },
    "alti_rollout": {
        "title": "ALTI, rolled out across layers",
        "formula": "R_0 = C_0, R_l = C_l · R_{l−1} with C_l the per-layer ALTI matrix (its residual is already "
        "inside C_l, so no 0.5·I is added). Row i of R_l: how much of token i after layer l comes from each input "
        "token.",
        "reference": "Ferrando et al. 2022 (EMNLP), §4; compute_joint_attention in "
        "github.com/mt-upc/transformer-contributions.",
    },
}

DETECTORS: dict[str, Definition] = {
    "previous_token": {
        "title": "Previous-token head",
        "formula": "mean over queries i ≥ 1 of α_{i, i−1}.",
        "reference": "TransformerLens head detector (previous_token_head); Elhage et al. 2021.",
    },
    "next_token": {
        "title": "Next-token head",
        "formula": "mean over queries i ≤ T−2 of α_{i, i+1}.",
        "reference": "Clark et al. 2019, What Does BERT Look At? (§3).",
    },
    "self": {
        "title": "Self head",
        "formula": "mean over queries i of α_{i, i}.",
        "reference": "Clark et al. 2019 (§3).",
    },
    "first_token": {
        "title": "First-token (sink) head",
        "formula": "mean over queries i of α_{i, 0}: attention parked on the first position.",
        "reference": "Xiao et al. 2024, Efficient Streaming Language Models with Attention Sinks (ICLR).",
    },
    "cls_sep": {
        "title": "[CLS]/[SEP] head",
        "formula": "mean over queries i of Σ_{j ∈ S} α_ij, S the positions of the tokenizer's cls_token and "
        "sep_token; null when the input has neither.",
        "reference": "Clark et al. 2019 (§3, attention to [CLS] and [SEP]).",
    },
    "duplicate_token": {
        "title": "Duplicate-token head",
        "formula": "On a seeded random token sequence r repeated twice: mean over queries i that have an earlier "
        "copy of their token of Σ_{j < i, t_j = t_i} α_ij.",
        "reference": "TransformerLens head detector (duplicate_token_head); Wang et al. 2023, Interpretability in "
        "the Wild (ICLR).",
    },
    "induction": {
        "title": "Induction head",
        "formula": "On the same repeated random sequence: mean over queries i that have an earlier copy of their "
        "token of Σ_{j ≤ i, t_{j−1} = t_i, j−1 < i} α_ij (the token right after the earlier copy).",
        "reference": "TransformerLens head detector (induction_head); Olsson et al. 2022, In-context Learning and "
        "Induction Heads.",
    },
}

SIMILARITY: Definition = {
    "title": "Head similarity",
    "formula": "d(a, b) = mean over query rows i of JS(A_a[i], A_b[i]), the Jensen–Shannon distance "
    "√(½ KL(p‖m) + ½ KL(q‖m)), m = ½(p + q), in bits (0 = same distribution, 1 = disjoint). The 2-D map is "
    "classical (Torgerson) MDS of d: the top two eigenvectors of −½ J d² J, J = I − 11ᵀ/n, scaled by √eigenvalue.",
    "reference": "Clark, Khandelwal, Levy & Manning 2019, What Does BERT Look At? An Analysis of BERT's Attention "
    "(BlackboxNLP), §6; Torgerson 1952.",
}
