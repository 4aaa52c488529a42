"""The ``headmap`` console script and the packaged wheel."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from headmap.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent


def test_attention_command_prints_the_api_json(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert main(["attention", "Hello world", "--model", "custom"]) == 0
    body = json.loads(capsysbinary.readouterr().out)
    assert body["model"] == "custom" and body["tokens"] == ["[CLS]", "hello", "world", "[SEP]"]
    assert len(body["attention"]) == 1 and len(body["attention"][0]) == 12


def test_attention_command_reports_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["attention", "x", "--model", "nope"]) == 2
    assert "model_not_found" in capsys.readouterr().err


def test_serve_defaults_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOST", raising=False)
    monkeypatch.delenv("PORT", raising=False)
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port) == ("127.0.0.1", 8000)
    monkeypatch.setenv("HOST", "0.0.0.0")
    monkeypatch.setenv("PORT", "9123")
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port) == ("0.0.0.0", 9123)
    args = build_parser().parse_args(["serve", "--host", "::1", "--port", "1"])
    assert (args.host, args.port) == ("::1", 1)


@pytest.mark.slow
def test_wheel_installs_headmap_with_its_resources(tmp_path: Path) -> None:
    """The wheel holds one top-level package, `headmap` (no `app`), with every subpackage, static and templates."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
    )
    wheel = next(tmp_path.glob("headmap-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {n.split("/")[0] for n in names} == {"headmap", wheel.name.split("-py3")[0] + ".dist-info"}
    # Every package folder in the checkout is in the wheel (pyproject lists them by hand).
    for init in (ROOT / "app").rglob("__init__.py"):
        assert "headmap/" + init.relative_to(ROOT / "app").as_posix() in names
    for folder in ("static", "templates"):
        for f in (ROOT / folder).rglob("*"):
            if f.is_file():
                assert f"headmap/{folder}/" + f.relative_to(ROOT / folder).as_posix() in names
    # Unpacked on its own (no checkout beside it), the package resolves its resource dirs inside itself.
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    out = subprocess.run(
        [sys.executable, "-c", "import headmap.paths as p; print(p.TEMPLATES_DIR); print(p.STATIC_DIR)"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == [str(target / "headmap" / "templates"), str(target / "headmap" / "static")]
