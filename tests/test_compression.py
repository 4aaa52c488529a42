"""gzip: bounded by size, skipped for encoded or no-transform responses, and lossless."""

from __future__ import annotations

import gzip
import json

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import Response

import headmap.web.responses as responses_module
from headmap.web.compression import GzipMiddleware
from headmap.web.responses import LargeBodyResponse


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_app(maximum: int, loopback: bool = True) -> FastAPI:
    app = FastAPI()

    @app.get("/sliced/{n}")
    async def sliced(n: int) -> Response:
        return LargeBodyResponse(json.dumps({"x": "a" * n}).encode(), media_type="application/json")

    @app.get("/json/{n}")
    async def big(n: int) -> Response:
        return Response(json.dumps({"x": "a" * n}), media_type="application/json")

    @app.get("/raw")
    async def raw() -> Response:
        return Response(b"\x00" * 5000, media_type="application/octet-stream")

    @app.get("/nt")
    async def nt() -> Response:
        return Response("b" * 5000, media_type="text/plain", headers={"Cache-Control": "no-transform"})

    app.add_middleware(GzipMiddleware, level=1, minimum=1024, maximum=maximum, loopback=loopback)
    return app


async def fetch(app: FastAPI, path: str, accept: str = "gzip", client: str = "203.0.113.9") -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=(client, 4321))
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://t") as c,
        # stream so httpx does not decode: we check the bytes on the wire
        c.stream("GET", path, headers={"accept-encoding": accept}) as r,
    ):
        r.raw_body = b"".join([chunk async for chunk in r.aiter_raw()])  # type: ignore[attr-defined]
        return r


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "accept", "compressed"),
    [
        ("/json/5000", "gzip", True),
        ("/json/5000", "identity", False),
        ("/json/10", "gzip", False),  # below the minimum
        ("/json/300000", "gzip", False),  # above the maximum
        ("/raw", "gzip", False),  # not a compressible type
        ("/nt", "gzip", False),  # no-transform
    ],
)
async def test_gzip_rules(path: str, accept: str, compressed: bool) -> None:
    app = make_app(maximum=200_000)
    r = await fetch(app, path, accept)
    assert r.status_code == 200
    assert (r.headers.get("content-encoding") == "gzip") is compressed
    body = gzip.decompress(r.raw_body) if compressed else r.raw_body  # type: ignore[attr-defined]
    assert int(r.headers["content-length"]) == len(r.raw_body)  # type: ignore[attr-defined]
    if path.startswith("/json"):
        assert json.loads(body)["x"] == "a" * int(path.rsplit("/", 1)[1])


@pytest.mark.anyio
@pytest.mark.parametrize(("n", "compressed"), [(5000, True), (300_000, False)])
async def test_sliced_bodies(monkeypatch: pytest.MonkeyPatch, n: int, compressed: bool) -> None:
    """A body sent in many slices is gathered and compressed when small enough, else passed on intact."""
    monkeypatch.setattr(responses_module, "SLICE", 777)
    r = await fetch(make_app(maximum=200_000), f"/sliced/{n}")
    assert (r.headers.get("content-encoding") == "gzip") is compressed
    body = gzip.decompress(r.raw_body) if compressed else r.raw_body  # type: ignore[attr-defined]
    assert int(r.headers["content-length"]) == len(r.raw_body)  # type: ignore[attr-defined]
    assert json.loads(body)["x"] == "a" * n


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("client", "loopback", "compressed"),
    [
        ("127.0.0.1", False, False),
        ("::1", False, False),
        ("127.0.0.1", True, True),
        ("192.0.2.7", False, True),
    ],
)
async def test_loopback_clients(client: str, loopback: bool, compressed: bool) -> None:
    r = await fetch(make_app(maximum=200_000, loopback=loopback), "/json/5000", client=client)
    assert (r.headers.get("content-encoding") == "gzip") is compressed


def test_attention_response_is_gzipped_and_timed(client) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/api/attention", json={"text": "The cat sat on the mat."}, headers={"accept-encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip"
    assert r.headers["server-timing"].startswith("app;dur=")
    assert len(r.json()["attention"]) == 6  # httpx decoded it
