"""The corpus report: one self-contained HTML file (plotly.js and the summary inside) that opens offline.

It draws what ``summary.json`` holds: per measure, the layers × heads map of the corpus mean with the
spread (standard deviation) beside it, a head's histogram on click, and the head-similarity view (the
JS distance matrix in clustering order and a 2-D map of the heads coloured by cluster).
"""

from __future__ import annotations

from typing import Any

from .. import __version__
from .render import _environment, plotly_js, script_json


def render_corpus_report(summary: dict[str, Any]) -> str:
    """The report HTML for a corpus summary (``schemas.corpus.CorpusSummary`` as a dict)."""
    model = summary["model"]
    template = _environment().get_template("corpus_report.html")
    return template.render(
        title=f"Headmap corpus: {model['name']}, {summary['texts']} texts",
        model=model["name"],
        description=model["description"],
        texts=summary["texts"],
        tokens=summary["tokens"],
        source=summary.get("input", {}).get("path") or "",
        version=__version__,
        plotly_js=plotly_js(),
        data_json=script_json(summary),
    )
