"""The README documents every setting and keeps the two commands CI runs."""

from __future__ import annotations

from pathlib import Path

from headmap.settings import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_readme() -> None:
    missing = [f"HEADMAP_{name.upper()}" for name in Settings.model_fields if f"`HEADMAP_{name.upper()}`" not in README]
    assert not missing, f"README's environment table lacks {missing}"


def test_readme_has_the_two_marked_commands() -> None:
    for marker in ("serve-command", "test-command"):
        block = README.split(f"<!-- {marker} -->")[1].split(f"<!-- /{marker} -->")[0]
        lines = [line for line in block.strip().splitlines() if not line.startswith("```")]
        assert len(lines) == 1 and lines[0].strip(), f"{marker}: {lines}"
    assert '"torch==2.13.0"' in README  # the CPU wheel, never a multi-GB CUDA build
