"""Headmap: per-layer, per-head transformer attention as JSON and interactive heatmaps."""

__version__ = "0.1.0"
