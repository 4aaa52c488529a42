"""gzip for responses whose size makes it pay, compressed off the event loop.

Starlette's ``GZipMiddleware`` compresses every body at level 9 with no upper size bound; on a
25 MB attention response that costs more than the model's forward pass. This one compresses
bodies between ``minimum`` and ``maximum`` bytes at a chosen level, in a worker thread, and leaves
alone responses that are already encoded, streamed, or marked ``Cache-Control: no-transform``.
"""

from __future__ import annotations

import gzip

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COMPRESSIBLE = ("application/json", "text/", "application/javascript", "image/svg+xml")


class GzipMiddleware:
    def __init__(self, app: ASGIApp, level: int, minimum: int = 1024, maximum: int = 8 * 1024 * 1024) -> None:
        self.app, self.level, self.minimum, self.maximum = app, level, minimum, maximum

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.level <= 0 or "gzip" not in Headers(scope=scope).get("accept-encoding", ""):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        passthrough = False

        async def wrapped(message: Message) -> None:
            nonlocal start, passthrough
            if message["type"] == "http.response.start":
                headers = Headers(raw=message.get("headers", []))
                media = headers.get("content-type", "")
                passthrough = (
                    "content-encoding" in headers
                    or "no-transform" in headers.get("cache-control", "")
                    or not media.startswith(COMPRESSIBLE)
                )
                if passthrough:
                    await send(message)
                else:
                    start = message  # held until the body shows whether it is worth compressing
                return
            if passthrough or start is None or message["type"] != "http.response.body":
                await send(message)
                return
            body: bytes = message.get("body", b"")
            if message.get("more_body", False) or not self.minimum <= len(body) <= self.maximum:
                await send(start)  # streamed, tiny or huge: as it is
                start = None
                await send(message)
                return
            packed = (
                gzip.compress(body, self.level, mtime=0)
                if len(body) < 256 * 1024
                else await run_in_threadpool(gzip.compress, body, self.level, mtime=0)
            )
            headers = MutableHeaders(raw=start["headers"])
            headers["Content-Encoding"] = "gzip"
            headers["Content-Length"] = str(len(packed))
            headers.add_vary_header("Accept-Encoding")
            await send(start)
            start = None
            await send({"type": "http.response.body", "body": packed, "more_body": False})

        await self.app(scope, receive, wrapped)
