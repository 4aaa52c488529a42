"""Headmap: per-layer, per-head transformer attention as JSON and interactive heatmaps.

``headmap.attention``, ``headmap.show``, ``headmap.view``, ``headmap.save`` and ``headmap.AttentionMap`` come
from ``headmap.notebook``, imported on first use: ``import headmap`` loads neither torch nor a web framework.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_NOTEBOOK_API = ("AttentionMap", "attention", "save", "show", "view")
__all__ = ["__version__", *_NOTEBOOK_API]

if TYPE_CHECKING:
    from .notebook import AttentionMap as AttentionMap
    from .notebook import attention as attention
    from .notebook import save as save
    from .notebook import show as show
    from .notebook import view as view


def __getattr__(name: str) -> Any:
    if name in _NOTEBOOK_API:
        from . import notebook

        return getattr(notebook, name)
    raise AttributeError(f"module 'headmap' has no attribute {name!r}")


class _Headmap(types.ModuleType):
    """``headmap.attention`` is the function, though ``headmap/attention/`` (the math) is a subpackage too.

    Importing a subpackage sets it as an attribute of its parent, which would shadow the function; the
    setter keeps it aside instead. ``from headmap.attention import stats`` goes through ``sys.modules`` and
    still works.
    """

    @property
    def attention(self) -> Any:
        from .notebook import attention

        return attention

    @attention.setter
    def attention(self, package: Any) -> None:
        self.__dict__["_attention_package"] = package


sys.modules[__name__].__class__ = _Headmap
