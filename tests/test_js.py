"""The page's pure JavaScript modules (token grouping, aggregates and rollout, URL state and store,
tensor decoding, request cache, CSV) under node's built-in test runner: ``tests/js/*.test.mjs``, each
against hand-worked values. Needs node >= 18 (Debian: ``apt-get install nodejs``)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
JS_TESTS = ROOT / "tests" / "js"
NODE = shutil.which("node") or shutil.which("nodejs")


def node_major() -> int:
    if NODE is None:
        return 0
    out = subprocess.run([NODE, "--version"], capture_output=True, text=True, timeout=30).stdout
    match = re.match(r"v(\d+)\.", out.strip())
    return int(match.group(1)) if match else 0


@pytest.mark.skipif(NODE is None, reason="node is not installed (Debian: apt-get install nodejs)")
def test_page_modules_pass_their_node_tests() -> None:
    if node_major() < 18:
        pytest.skip(f"{NODE} is older than node 18, which brought `node --test`")
    files = sorted(JS_TESTS.glob("*.test.mjs"))
    assert len(files) >= 5
    run = subprocess.run([NODE, "--test", *map(str, files)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-6000:]
    passed = re.search(r"^# pass (\d+)$", report, flags=re.M)
    assert passed and int(passed.group(1)) >= 20, report[-3000:]
    assert re.search(r"^# fail 0$", report, flags=re.M), report[-3000:]
