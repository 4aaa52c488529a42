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
from typing import TYPE_CHECKING, Any

import jinja2
import orjson
import plotly
from markupsafe import Markup

from .. import __version__, i18n
from ..models.registry import ModelRegistry
from ..models.tokentext import UNKNOWN_WARNING
from ..paths import STATIC_DIR, TEMPLATES_DIR
from ..schemas.insight import HeadStatistics
from ..serving.encoding import compact_tensor

if TYPE_CHECKING:
    from ..models.registry import ModelRegistry
    from ..schemas.attention import AttentionRequest

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


#: Messages the report's script uses (the rest are filled into the template).
_SCRIPT_MESSAGES = ("report.layer_option", "report.head_option", "report.key_axis", "report.query_axis",
                    "report.grid_cell", "report.stat_hover", "report.col_layer", "report.col_head")  # fmt: skip


def report_data(registry: ModelRegistry, req: AttentionRequest, lang: str = i18n.DEFAULT) -> dict[str, Any]:
    """Everything the report's script draws, as one JSON-able dict.

    ``attention`` is the ``CompactTensor`` of all layers and heads, shape (L, H, T, T), weight = byte / 255:
    a fifth of the size of 4-decimal JSON, and exact to 0.002, which no heatmap colour shows.
    """
    # The services import the web stack's thread pool helper: imported here, not with the module, so the
    # notebook API can use this module's helpers without loading a web framework.
    from ..serving import attention as service
    from ..serving import insight as insight_service

    result = service.compute_sync(registry, req)
    stats = insight_service.stats_payload(result)
    attn = service.select(result.attention, result.layers, result.heads)  # (L, H, T, T)
    return {
        "tokens": result.enc.tokens,
        **service.token_text(result.enc),
        "special": result.enc.special,
        "unknown": result.enc.unknown,
        "truncated": result.enc.truncated,
        "attention": compact_tensor(attn),
        "stats": stats["stats"],
        **report_messages(stats["stats"], lang),
    }


def report_messages(stats: dict[str, Any], lang: str) -> dict[str, Any]:
    """The report script's texts in ``lang``: statistic names and help for the statistics present, and ``msg``."""
    names = [name for name in HeadStatistics.model_fields if stats.get(name) is not None]
    messages = {key: i18n.t(lang, key) for key in _SCRIPT_MESSAGES}
    # Plotly fills %{…} in the hover text; the catalogue's {…} are ours.
    messages["report.hover"] = i18n.t(lang, "report.hover", query="%{customdata[0]}", key="%{customdata[1]}",
                                      weight="%{z:.3f}")  # fmt: skip
    return {
        "stat_info": {name: i18n.t(lang, f"stat.{name}.help") for name in names},
        "stat_names": {name: i18n.t(lang, f"stat.{name}.name") for name in names},
        "msg": messages,
    }


def render_report(registry: ModelRegistry, req: AttentionRequest, lang: str = i18n.DEFAULT) -> str:
    """One self-contained HTML page (Plotly inlined) with the head view, model grid and head statistics."""
    engine = registry.get(req.model)
    data = report_data(registry, req, lang)
    return report_page(
        data, lang=lang, model=engine.name, description=engine.description, text=req.text, text_pair=req.text_pair
    )


def report_page(
    data: dict[str, Any], *, lang: str, model: str, description: str, text: str, text_pair: str | None
) -> str:
    """The report page over ``data`` (what ``report_data`` returns, or the notebook API's equivalent)."""
    template = _environment().get_template("report.html")
    unknown = None
    if data.get("unknown_share", 0.0) > UNKNOWN_WARNING:
        total = sum(1 for s in data["special"] if not s)
        unknown = i18n.t(lang, "report.unknown", percent=f"{data['unknown_share']:.0%}", count=data["unknown_count"],
                         total=total, model=model)  # fmt: skip
    return template.render(
        lang=lang,
        t=i18n.messages(lang),
        unknown_notice=unknown,
        title=i18n.t(lang, "report.title", model=model),
        text=text,
        text_pair=text_pair,
        model=model,
        description=description,
        version=__version__,
        truncated=data["truncated"],
        plotly_js=plotly_js(),
        colors_js=colors_js(),
        data_json=script_json(data),
    )
