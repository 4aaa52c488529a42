"""The Python API: ``headmap.attention``, ``headmap.show``, ``headmap.save``.

Three kinds of input, told apart by what is passed:

- a ``transformers`` model, its fast tokenizer and a text: ``attention(model, tokenizer, text, text_pair)``,
  run through the same ``HFEngine`` the server uses (so the numbers are the REST API's);
- a plain torch module with ``nn.MultiheadAttention`` inside, its inputs and the token strings:
  ``attention(block, inputs, tokens=[...])``; one layer per attention call;
- attention tensors already computed: ``attention(attention=outputs.attentions, tokens=tokens)``, as
  bertviz's ``head_view(attention, tokens, sentence_b_start)`` takes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .result import AttentionMap, from_engine, from_tensors


def _is_hf_model(model: Any) -> bool:
    config = getattr(model, "config", None)
    return config is not None and hasattr(config, "num_hidden_layers") and hasattr(config, "model_type")


def attention(
    model: Any = None,
    tokenizer: Any = None,
    text: str | None = None,
    text_pair: str | None = None,
    *,
    inputs: Any = None,
    tokens: list[str] | None = None,
    attention: Any = None,
    sentence_b_start: int | None = None,
    special: list[bool] | None = None,
    layers: list[int] | None = None,
    heads: list[int] | None = None,
    truncate: bool = False,
    batch_index: int = 0,
    name: str | None = None,
) -> AttentionMap:
    """Attention of one input as an ``AttentionMap`` (NumPy arrays ``[layer][head][query][key]``, token
    strings and labels, word ids, head statistics, aggregates, ``to_json()``).

    ``attention(model, tokenizer, text)`` for a transformers model; ``attention(module, inputs,
    tokens=...)`` for a torch module with ``nn.MultiheadAttention`` (the second positional argument is the
    inputs then); ``attention(attention=..., tokens=...)`` for tensors. ``layers``/``heads`` select as the
    REST API does; ``sentence_b_start`` marks where the second segment starts (tensor and module inputs).
    """
    if isinstance(model, AttentionMap):
        return model
    if attention is not None:
        if model is not None:
            raise TypeError("pass either a model or attention=..., not both")
        if tokens is None:
            raise TypeError("attention=... needs tokens=[...] (one string per position)")
        return from_tensors(
            attention, tokens, sentence_b_start=sentence_b_start, special=special, layers=layers, heads=heads,
            batch_index=batch_index, model=name or "attention",
        )  # fmt: skip
    if model is None:
        raise TypeError("pass a model (with a tokenizer and text, or with inputs and tokens) or attention=...")
    if _is_hf_model(model):
        if tokenizer is None or text is None:
            raise TypeError("a transformers model needs a tokenizer and a text: attention(model, tokenizer, text)")
        from ..models.memory import engine_from_model

        engine = engine_from_model(model, tokenizer, name)
        return from_engine(engine, text, text_pair, layers=layers, heads=heads, truncate=truncate)

    from torch import nn

    if isinstance(model, nn.Module):
        if inputs is None:
            inputs, tokenizer = tokenizer, None
        if inputs is None:
            raise TypeError("a torch module needs its inputs: attention(module, inputs, tokens=[...])")
        if tokens is None:
            raise TypeError("a torch module needs tokens=[...], one string per position of its input")
        from .capture import capture_mha

        weights = capture_mha(model, inputs, batch_index)  # (calls, nh, T, T)
        return from_tensors(
            weights, tokens, sentence_b_start=sentence_b_start, special=special, layers=layers, heads=heads,
            model=name or type(model).__name__, kind="custom",
            description=f"{weights.shape[0]} nn.MultiheadAttention call(s) x {weights.shape[1]} heads",
        )  # fmt: skip
    raise TypeError(f"cannot read attention from a {type(model).__name__}")


def show(
    model: Any = None,
    tokenizer: Any = None,
    text: str | None = None,
    text_pair: str | None = None,
    *,
    plotly: str = "auto",
    **kwargs: Any,
) -> None:
    """Display the Headmap views (head view, model grid, statistics, aggregates) in the notebook output.

    Takes what ``attention`` takes, or an ``AttentionMap``. ``plotly``: ``"auto"`` embeds plotly.js with
    the first Headmap output of the notebook only (every output in Colab, where each output is its own
    page), ``"inline"`` in this output whatever came before.
    """
    from .html import View

    result = attention(model, tokenizer, text, text_pair, **kwargs)
    view = View(result, plotly=plotly)
    try:
        from IPython.display import display
    except ImportError:  # not in IPython: nothing to display into
        raise RuntimeError("headmap.show needs IPython (a notebook); use headmap.save(...) for a file") from None
    display(view)  # type: ignore[no-untyped-call]


def view(model: Any = None, tokenizer: Any = None, text: str | None = None, text_pair: str | None = None,
         *, plotly: str = "auto", **kwargs: Any) -> Any:  # fmt: skip
    """The object ``show`` displays (``_repr_html_``), for placing it yourself (``display``, ipywidgets.Output)."""
    from .html import View

    return View(attention(model, tokenizer, text, text_pair, **kwargs), plotly=plotly)


def save(result: Any, path: str | Path, **kwargs: Any) -> Path:
    """Write the self-contained HTML report (plotly.js and data inside, nothing fetched) of ``result``.

    ``result`` is an ``AttentionMap`` or anything ``attention`` takes (pass its arguments as keywords).
    """
    from .html import report_html

    result = result if isinstance(result, AttentionMap) else attention(result, **kwargs)
    target = Path(path)
    target.write_text(report_html(result), encoding="utf-8")
    return target
