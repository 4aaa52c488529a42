"""Run ``examples/attention_in_a_notebook.ipynb`` with nbclient once per test session (shared by the
notebook test and the browser test of its outputs)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "attention_in_a_notebook.ipynb"


@lru_cache(maxsize=1)
def executed_example() -> Any:
    """The executed notebook (nbformat node); raises if a cell fails."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(EXAMPLE, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(EXAMPLE.parent)}}
    ).execute()
    return nb


def html_outputs(nb: Any) -> list[str]:
    """Every ``text/html`` output, in notebook order."""
    return [
        out["data"]["text/html"]
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if "text/html" in out.get("data", {})
    ]


def text_outputs(nb: Any) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif "text/plain" in out.get("data", {}):
                parts.append(out["data"]["text/plain"])
    return "\n".join(parts)
