"""Notebook output HTML (``templates/notebook.html``) and the file report (``templates/report.html``).

plotly.js (4.8 MB) goes into the output of the first Headmap view of a notebook only. Later outputs
wait for ``window.Plotly`` (a ``headmap:plotly`` event), which works where all outputs share one page:
JupyterLab, Notebook 7, VS Code, and an nbconvert HTML export. The carrier is remembered per cell when the
frontend says which cell runs (JupyterLab, Notebook 7 and VS Code send ``cellId`` with each execution), so
re-running that cell embeds it again instead of leaving the notebook without one. Colab gives every
output its own iframe, so there every output embeds it. See README "Notebooks" for the reasoning.
"""

from __future__ import annotations

import base64
import secrets
import sys
from functools import lru_cache
from typing import Any

from .result import AGGREGATES, AttentionMap

#: Where plotly.js went in this kernel: the cell id that carries it ("" when the frontend sends none).
_carrier: dict[str, str | None] = {"cell": None}

AGGREGATE_INFO = {
    "mean": "mean over heads",
    "max": "max over heads",
    "rollout": "rollout (Abnar & Zuidema 2020)",
}
assert tuple(AGGREGATE_INFO) == AGGREGATES


def _execution_metadata() -> dict[str, Any] | None:
    """The metadata of the execute request being run (cellId, deletedCells); None outside a kernel."""
    ip_mod = sys.modules.get("IPython")
    ip = ip_mod.get_ipython() if ip_mod is not None else None
    kernel = getattr(ip, "kernel", None)
    if kernel is None:  # a script, or a terminal IPython: no notebook page to share plotly.js with
        return None
    parent: Any = None
    if hasattr(kernel, "get_parent"):
        try:
            parent = kernel.get_parent("shell")
        except TypeError:  # older ipykernel: get_parent() takes no channel
            parent = kernel.get_parent()
    if not parent:
        parent = getattr(ip, "parent_header", None)
    meta = parent.get("metadata") if isinstance(parent, dict) else None
    return meta if isinstance(meta, dict) else {}


def in_colab() -> bool:
    return "google.colab" in sys.modules


def wants_plotly(mode: str) -> bool:
    """Whether this output embeds plotly.js (``mode``: "auto" or "inline")."""
    if mode == "inline" or in_colab():
        return True
    if mode != "auto":
        raise ValueError(f'plotly must be "auto" or "inline", not {mode!r}')
    meta = _execution_metadata()
    if meta is None:  # not in a notebook kernel: the HTML is used on its own, so it carries plotly.js
        return True
    cell = meta.get("cellId") or meta.get("cell_id") or ""
    carrier = _carrier["cell"]
    if carrier is not None and carrier in (meta.get("deletedCells") or []):
        carrier = None  # the cell that had it is gone
    if carrier is None or (cell and cell == carrier):
        _carrier["cell"] = str(cell)
        return True
    return False


def reset_plotly_carrier() -> None:
    """Forget which output carried plotly.js: the next view embeds it again."""
    _carrier["cell"] = None


@lru_cache(maxsize=1)
def plotly_loader() -> str:
    """plotly.min.js wrapped so it sets ``window.Plotly`` even where ``module``/``define`` exist (require.js,
    bundlers), then announces itself to the outputs waiting for it."""
    from ..report.render import plotly_js

    return (
        "if (!window.Plotly) { (function (module, exports, define) {\n"
        + str(plotly_js())
        + "\n}).call(window); }\nwindow.dispatchEvent(new Event('headmap:plotly'));"
    )


def _data(result: AttentionMap) -> dict[str, Any]:
    from ..schemas.insight import HeadStatistics
    from ..serving.encoding import compact_tensor, round_for_json

    stats = {name: None if v is None else round_for_json(v) for name, v in vars(result._stats).items()}
    return {
        "tokens": result.tokens,
        "labels": result.labels,
        "special": result.special,
        "segments": result.segments,
        "layers": result.layers,
        "heads": result.heads,
        "truncated": result.truncated,
        "attention": compact_tensor(result._selected),  # (l, h, T, T) uint8 levels, weight = byte / 255
        "aggregates": {name: compact_tensor(v.unsqueeze(1)) for name, v in result._aggregates.items()},
        "aggregate_info": AGGREGATE_INFO,
        "stats": stats,
        "stat_info": {
            name: (field.description or name).replace("`", "")
            for name, field in HeadStatistics.model_fields.items()
            if stats.get(name) is not None
        },
    }


def render_view(result: AttentionMap, plotly: str = "auto") -> str:
    """The HTML fragment of one notebook output."""
    from ..report.render import _environment, script_json

    with_plotly = wants_plotly(plotly)
    layers, heads, t, _ = result.shape
    preview = " ".join(result.tokens[:40]) + (" …" if t > 40 else "")
    template = _environment().get_template("notebook.html")
    from markupsafe import Markup

    return template.render(
        uid=f"headmap-{secrets.token_hex(6)}",
        model=result.model,
        description=result.description,
        shape=(layers, heads, t),
        tokens_preview=preview,
        data_json=script_json(_data(result)),
        plotly_js=Markup(plotly_loader()) if with_plotly else None,
        grid_png=base64.b64encode(static_png(result)).decode("ascii"),
    )


def static_png(result: AttentionMap) -> bytes:
    """The model grid as a PNG (``png.grid_png``) of the selected layers and heads."""
    from .png import grid_png

    return grid_png(result._selected.float().numpy())


class View:
    """What ``headmap.show`` displays: rendered when the frontend asks (so the plotly.js decision is made
    for the output that is actually being produced)."""

    def __init__(self, result: AttentionMap, plotly: str = "auto") -> None:
        if plotly not in {"auto", "inline"}:
            raise ValueError(f'plotly must be "auto" or "inline", not {plotly!r}')
        self.result = result
        self.plotly = plotly

    def _repr_html_(self) -> str:
        return render_view(self.result, self.plotly)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """The live HTML, plus the static grid as ``image/png`` for viewers that show no HTML output."""
        return {"text/html": render_view(self.result, self.plotly), "image/png": static_png(self.result)}

    def __repr__(self) -> str:
        return f"<headmap view of {self.result!r}>"


def report_html(result: AttentionMap, lang: str = "en") -> str:
    """The self-contained report page (``templates/report.html``, as ``headmap render`` writes it)."""
    from ..report.render import report_messages, report_page

    data = _data(result)
    data.update(report_messages(data["stats"], lang))
    return report_page(
        data,
        lang=lang,
        model=result.model,
        description=result.description or result.model,
        text=result.text if result.text is not None else " ".join(result.tokens),
        text_pair=result.text_pair,
    )
