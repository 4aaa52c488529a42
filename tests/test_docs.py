"""The README documents every setting and keeps the two commands CI runs."""

from __future__ import annotations

from pathlib import Path

from headmap.settings import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _default(value: object) -> str:
    if value is None:
        return "unset"
    if value == "":
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def settings_table() -> str:
    """The README's settings table, generated from ``Settings``: name, default and description of each field."""
    rows = ["| variable | default | what |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        rows.append(f"| `HEADMAP_{name.upper()}` | {_default(field.default)} | {field.description} |")
    return "\n".join(rows)


def test_readme_settings_table_is_generated_from_settings() -> None:
    """Every setting, its default and its description, word for word from app/settings.py (the one source)."""
    block = README.split("<!-- settings -->")[1].split("<!-- /settings -->")[0].strip()
    assert block == settings_table(), "README's settings table drifted from app/settings.py; replace it with:\n" + (
        settings_table()
    )


def test_readme_has_the_two_marked_commands() -> None:
    for marker in ("serve-command", "test-command"):
        block = README.split(f"<!-- {marker} -->")[1].split(f"<!-- /{marker} -->")[0]
        lines = [line for line in block.strip().splitlines() if not line.startswith("```")]
        assert len(lines) == 1 and lines[0].strip(), f"{marker}: {lines}"
    assert '"torch==2.13.0"' in README  # the CPU wheel, never a multi-GB CUDA build
