"""The package's layering, read from the source's import statements (nothing is imported).

- ``models/`` and ``attention/`` hold text -> attention and pure tensor math: no web framework.
- ``attention/`` does no I/O either: it imports nothing from the rest of the package but itself.
- Importing ``headmap`` (the notebook entry point) starts nothing and pulls in no web framework.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parent.parent / "app"
WEB = {"fastapi", "starlette", "uvicorn", "fastapi_offline", "jinja2"}


def imports(path: Path) -> set[str]:
    """Absolute names a module imports; relative imports resolved against its place in the package."""
    rel = path.relative_to(APP).with_suffix("")
    package = ["headmap", *rel.parts[:-1]]  # the package a relative import starts from
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                parent = package[: len(package) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def modules(room: str) -> list[Path]:
    return sorted((APP / room).rglob("*.py"))


@pytest.mark.parametrize("room", ["models", "attention"])
def test_no_web_framework_below_the_http_layer(room: str) -> None:
    assert modules(room), f"app/{room}/ has no modules"
    for path in modules(room):
        web = {name for name in imports(path) if name.split(".")[0] in WEB}
        assert not web, f"{path.relative_to(APP)} imports {sorted(web)}"


def test_attention_math_stands_alone() -> None:
    for path in modules("attention"):
        inner = {n for n in imports(path) if n.startswith("headmap") and not n.startswith("headmap.attention")}
        assert not inner, f"{path.relative_to(APP)} imports {sorted(inner)}"


def test_errors_module_is_plain() -> None:
    assert not {n for n in imports(APP / "errors.py") if n.split(".")[0] in WEB}


def test_the_parser_sees_relative_imports() -> None:
    """Guard for the checks above: the resolver finds a known relative import of the web layer."""
    assert "headmap.errors.APIError" in imports(APP / "web" / "errors.py")
    assert "fastapi" in imports(APP / "web" / "errors.py")


def test_importing_headmap_pulls_no_web_framework() -> None:
    code = f"import sys, headmap; print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(WEB)!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
