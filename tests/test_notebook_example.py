"""``examples/attention_in_a_notebook.ipynb`` runs top to bottom in a real kernel (nbclient + ipykernel)."""

from __future__ import annotations

import pytest

pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from tests.notebook_run import executed_example, html_outputs, text_outputs

PLOTLY_MARKER = "window.dispatchEvent(new Event('headmap:plotly'))"


@pytest.mark.slow
def test_example_notebook_runs() -> None:
    nb = executed_example()
    errors = [out for cell in nb.cells for out in cell.get("outputs", []) if out.output_type == "error"]
    assert errors == []
    text = text_outputs(nb)
    # the notebook's own checks: its by-hand computation equals the block and Headmap's captured weights
    assert "same as block(x): True" in text
    assert "same as by hand: True" in text
    pages = html_outputs(nb)
    assert len(pages) == 4  # English block, Chinese block, minilm, bertviz-style
    assert [PLOTLY_MARKER in page for page in pages] == [True, False, False, False]  # plotly.js once
    assert all('class="headmap-output"' in page for page in pages)
