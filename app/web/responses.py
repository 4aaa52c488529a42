"""Responses for bodies of tens of MB, sent in slices the server can apply back-pressure to.

``Server-Timing: app;dur=<ms>``: for a body built whole (``timed_json``), the time from the request's
arrival at the route to a complete body (tokenizing, queueing, the forward pass, encoding). For a body
written as it is sent (``streamed_json``), the time until the body starts (tokenizing, queueing, the
forward pass), marked ``desc="to first byte; body streamed"``: the encoding then overlaps the transfer
and is part of the client's download time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..serving.threads import in_torch_thread

SLICE = 1 << 20


class LargeBodyResponse(Response):
    """Sends ``body`` in 1 MiB slices of one memoryview.

    Handed to uvicorn in one piece, a 100 MB body that the socket cannot take at once is copied
    whole into the transport's write buffer; in slices, uvicorn waits for the socket to drain
    between them, so no second copy of the body ever exists. ``Content-Length`` is still exact.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        view = memoryview(self.body)
        if not view:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        for start in range(0, len(view), SLICE):
            end = start + SLICE
            await send({"type": "http.response.body", "body": view[start:end], "more_body": end < len(view)})


class StreamedBody(Response):
    """A body of known ``length`` written piece by piece by a blocking iterator (each piece made in a worker
    thread just before it is sent), in 1 MiB slices: a slow reader holds the server at one piece, not the body.
    ``Content-Length`` is exact, so clients and the gzip middleware see the same response as a built one."""

    def __init__(self, length: int, pieces: Iterator[bytes | memoryview], headers: dict[str, str]) -> None:
        super().__init__(None, media_type="application/json", headers=headers)
        self.headers["content-length"] = str(length)
        self.length = length
        self.pieces = pieces

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        sent = 0
        while (piece := await in_torch_thread(lambda: next(self.pieces, None))) is not None:
            view = memoryview(piece)
            for start in range(0, len(view), SLICE):
                await send({"type": "http.response.body", "body": view[start : start + SLICE], "more_body": True})
            sent += len(view)
        if sent != self.length:
            raise RuntimeError(f"streamed {sent} bytes of a {self.length}-byte body")
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def streamed_json(length: int, pieces: Iterator[bytes | memoryview], start: float) -> StreamedBody:
    """A JSON body written as it is sent; ``Server-Timing`` covers the time until it starts (module doc)."""
    elapsed_ms = (time.perf_counter() - start) * 1000
    timing = f'app;dur={elapsed_ms:.1f};desc="to first byte; body streamed"'
    return StreamedBody(length, pieces, {"Server-Timing": timing})


def timed_json(body: bytes | memoryview, start: float) -> LargeBodyResponse:
    """A JSON body written by ``encoding.dumps``, with ``Server-Timing: app;dur=<ms since start>``.

    The bytes are sent as they are: FastAPI's encoder would take seconds on a million floats.
    """
    elapsed_ms = (time.perf_counter() - start) * 1000
    return LargeBodyResponse(
        body, media_type="application/json", headers={"Server-Timing": f"app;dur={elapsed_ms:.1f}"}
    )
