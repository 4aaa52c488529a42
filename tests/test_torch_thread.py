"""Every forward pass, weight computation and response encoding of the server runs on its one torch thread
(``serving.threads.in_torch_thread``), so the process has one OpenMP team and libgomp keeps spin-waiting
between parallel regions instead of sleeping (issue 19)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient

from headmap.serving import attention as service
from headmap.serving.threads import torch_thread_ident


def test_forward_and_render_run_on_the_torch_thread(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, set[int]] = {"run": set(), "render": set()}
    engine: Any = client.app.state.registry.get("minilm")  # type: ignore[attr-defined]
    run, render = engine.run, service.render

    def spy_run(items: Any) -> Any:
        seen["run"].add(threading.get_ident())
        return run(items)

    def spy_render(*args: Any) -> Any:
        seen["render"].add(threading.get_ident())
        return render(*args)

    monkeypatch.setattr(engine, "run", spy_run)
    monkeypatch.setattr(service, "render", spy_render)
    for encoding in ("json", "compact"):
        r = client.post("/api/attention", json={"text": "The cat sat.", "encoding": encoding})
        assert r.status_code == 200
    r = client.post("/api/stats", json={"text": "The cat sat."})
    assert r.status_code == 200
    torch_thread = torch_thread_ident()
    assert seen == {"run": {torch_thread}, "render": {torch_thread}}
    assert torch_thread != threading.get_ident()
