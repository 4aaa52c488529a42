"""gzip for responses whose size makes it pay, compressed off the event loop.

Starlette's ``GZipMiddleware`` compresses every body at level 9 with no upper size bound; on a
25 MB attention response that costs more than the model's forward pass. This one compresses
bodies between ``minimum`` and ``maximum`` bytes at a chosen level, in a worker thread, and leaves
alone responses that are already encoded or marked ``Cache-Control: no-transform``, and (unless
``loopback`` is set) responses to clients on this machine: over loopback, bytes cost nothing and
compressing them only adds time. A reverse proxy on the same host should compress for its clients.
"""

from __future__ import annotations

import gzip

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COMPRESSIBLE = ("application/json", "text/", "application/javascript", "image/svg+xml")
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def is_loopback(scope: Scope) -> bool:
    client = scope.get("client")
    if not client:
        return False
    host = str(client[0])
    return host in LOOPBACK or host.startswith("127.")


class GzipMiddleware:
    def __init__(
        self, app: ASGIApp, level: int, minimum: int = 1024, maximum: int = 8 * 1024 * 1024, loopback: bool = True
    ) -> None:
        self.app, self.level, self.minimum, self.maximum, self.loopback = app, level, minimum, maximum, loopback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or self.level <= 0
            or "gzip" not in Headers(scope=scope).get("accept-encoding", "")
            or (not self.loopback and is_loopback(scope))
        ):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        held: list[bytes] = []  # body parts kept until the size is known
        size = 0
        passthrough = False

        async def flush_uncompressed() -> None:
            nonlocal start, passthrough
            assert start is not None
            await send(start)
            for part in held:
                await send({"type": "http.response.body", "body": part, "more_body": True})
            held.clear()
            start, passthrough = None, True

        async def wrapped(message: Message) -> None:
            nonlocal start, size, passthrough
            if passthrough:
                await send(message)
                return
            if message["type"] == "http.response.start":
                headers = Headers(raw=message.get("headers", []))
                passthrough = (
                    "content-encoding" in headers
                    or "no-transform" in headers.get("cache-control", "")
                    or not headers.get("content-type", "").startswith(COMPRESSIBLE)
                )
                if passthrough:
                    await send(message)
                else:
                    start = message  # held until the body shows whether it is worth compressing
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            more = message.get("more_body", False)
            size += len(message.get("body", b""))
            if size > self.maximum:  # too big to be worth it: send what was held, then the rest as is
                await flush_uncompressed()
                await send(message)
                return
            held.append(bytes(message.get("body", b"")))
            if more:
                return
            body = b"".join(held) if len(held) > 1 else held[0]
            held.clear()
            if len(body) < self.minimum:
                packed, encoded = body, False
            elif len(body) < 256 * 1024:
                packed, encoded = gzip.compress(body, self.level, mtime=0), True
            else:
                packed, encoded = await run_in_threadpool(gzip.compress, body, self.level, mtime=0), True
            headers = MutableHeaders(raw=start["headers"])
            if encoded:
                headers["Content-Encoding"] = "gzip"
                headers.add_vary_header("Accept-Encoding")
            headers["Content-Length"] = str(len(packed))
            await send(start)
            start = None
            await send({"type": "http.response.body", "body": packed, "more_body": False})

        await self.app(scope, receive, wrapped)
