"""Headmap in notebooks and scripts: ``attention``, ``show``, ``save`` on models in memory or tensors."""

from .api import attention, save, show, view
from .result import AttentionMap

__all__ = ["AttentionMap", "attention", "save", "show", "view"]
