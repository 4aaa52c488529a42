"""Self-contained HTML reports: one file with plotly.js, the data and a small script, for sharing without a server.

The numbers come from the same service functions as the API (``service.compute_sync`` and
``insight_service.stats_payload``). The file holds a head view, the layers × heads grid and the
head statistics; see ``templates/report.html``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import orjson
import plotly
from markupsafe import Markup

from .. import __version__
from ..attention.definitions import STATISTICS
from ..models.registry import ModelRegistry
from ..paths import STATIC_DIR, TEMPLATES_DIR
from ..schemas.attention import AttentionRequest
from ..serving import attention as service
from ..serving import insight as insight_service
from ..serving.encoding import compact_tensor

PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def csp_hash(script: str) -> Markup:
    """The CSP source (``'sha256-…'``) that allows exactly this inline script's text."""
    digest = hashlib.sha256(str(script).encode("utf-8")).digest()
    return Markup(f"'sha256-{base64.b64encode(digest).decode('ascii')}'")  # base64 only: nothing to escape


def script_json(value: Any) -> Markup:
    """JSON for a ``<script type="application/json">`` element: ``<``, ``>`` and ``&`` become ``\\u003c`` etc.,
    so no string in it can close the element or open a comment (what Jinja's ``tojson`` does, for NumPy too)."""
    text = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode("utf-8")
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


@lru_cache(maxsize=1)
def plotly_js() -> Markup:
    """plotly.min.js as shipped in the plotly package, checked to be safe to inline in a ``<script>``."""
    text = PLOTLY_JS.read_text(encoding="utf-8")
    lowered = text.lower()
    if "</script" in lowered or "<!--" in lowered:
        raise RuntimeError(f"{PLOTLY_JS} contains '</script' or '<!--' and cannot be inlined safely")
    return Markup(text)


@lru_cache(maxsize=1)
def colors_js() -> Markup:
    """The page's colour maps (``static/js/colors.js``) as plain script for the report's inline script.

    The module has no imports; dropping ``export`` makes its declarations local to the report's function.
    """
    text = (STATIC_DIR / "js" / "colors.js").read_text(encoding="utf-8")
    if re.search(r"^\s*import\b", text, flags=re.M) or "</" in text:
        raise RuntimeError("colors.js must import nothing and hold no '</' to be inlined in the report")
    return Markup(re.sub(r"^export ", "", text, flags=re.M))


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR), autoescape=True, undefined=jinja2.StrictUndefined
    )
    env.filters["csp_hash"] = csp_hash
    return env


def report_data(registry: ModelRegistry, req: AttentionRequest) -> dict[str, Any]:
    """Everything the report's script draws, as one JSON-able dict.

    ``attention`` is the ``CompactTensor`` of all layers and heads, shape (L, H, T, T), weight = byte / 255:
    a fifth of the size of 4-decimal JSON, and exact to 0.002, which no heatmap colour shows.
    """
    result = service.compute_sync(registry, req)
    stats = insight_service.stats_payload(result)
    attn = service.select(result.attention, result.layers, result.heads)  # (L, H, T, T)
    return {
        "tokens": result.enc.tokens,
        "special": result.enc.special,
        "truncated": result.enc.truncated,
        "attention": compact_tensor(attn),
        "stats": stats["stats"],
        "stat_info": {s.id: s.text(markdown=False) for s in STATISTICS if stats["stats"][s.id] is not None},
    }


def render_report(registry: ModelRegistry, req: AttentionRequest) -> str:
    """The report HTML for ``req`` (all layers and heads). Raises ``APIError`` on bad input."""
    engine = registry.get(req.model)
    data = report_data(registry, req)
    template = _environment().get_template("report.html")
    return template.render(
        title=f"Headmap: {engine.name} attention",
        text=req.text,
        text_pair=req.text_pair,
        model=engine.name,
        description=engine.description,
        version=__version__,
        truncated=data["truncated"],
        plotly_js=plotly_js(),
        colors_js=colors_js(),
        data_json=script_json(data),
    )
