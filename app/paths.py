"""Where templates and static files are: inside the package for a wheel, beside it in a checkout."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """``app/<name>`` in an installed wheel (packaged there), else ``<repo>/<name>`` in a checkout."""
    inside = PACKAGE_DIR / name
    return inside if inside.is_dir() else PACKAGE_DIR.parent / name


STATIC_DIR = resource_dir("static")
TEMPLATES_DIR = resource_dir("templates")
