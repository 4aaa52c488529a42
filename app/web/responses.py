"""A response for bodies of tens of MB, sent in slices the server can apply back-pressure to."""

from __future__ import annotations

import time

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

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


def timed_json(body: bytes | memoryview, start: float) -> LargeBodyResponse:
    """A JSON body written by ``encoding.dumps``, with ``Server-Timing: app;dur=<ms since start>``.

    The bytes are sent as they are: FastAPI's encoder would take seconds on a million floats.
    """
    elapsed_ms = (time.perf_counter() - start) * 1000
    return LargeBodyResponse(
        body, media_type="application/json", headers={"Server-Timing": f"app;dur={elapsed_ms:.1f}"}
    )
