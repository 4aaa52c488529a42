"""Pure ASGI middleware: request body limit, security headers, and JSON errors for the host and CORS checks.

Pure ASGI rather than ``BaseHTTPMiddleware`` because that one buffers streamed bodies and runs the
app in a separate task; these only wrap ``receive`` and ``send``.

Order, outermost first (Starlette's ``ServerErrorMiddleware`` always sits outside all of them and
turns any uncaught exception into the JSON 500 of ``app.errors``; ``main.py`` adds gzip outside these):
``SecurityHeaders -> TrustedHost -> CORS (only with an allow-list) -> BodySizeLimit -> app``.
Security headers are outermost so that every answer, the middleware's own errors included, carries
them; CORS is outside the body limit so a cross-origin client can read its 413.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence

from fastapi import FastAPI
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..settings import Settings
from .errors import error_response


def csp(script_src: Sequence[str] = ()) -> str:
    """The Content-Security-Policy; ``script_src`` adds sources (hashes) to ``script-src 'self'``.

    No inline or eval'd script anywhere. ``style-src`` allows ``'unsafe-inline'`` because plotly.js
    cannot draw without it: it injects ``<style>`` elements at runtime (``Lib.addStyleRule``) and
    writes ``style=`` attributes on SVG nodes; under ``style-src 'self'`` Chromium blocks both and
    hover labels never appear (checked with plotly.js 4.1). Inline style cannot run code.
    ``img-src data: blob:`` is for Plotly's PNG export and Swagger UI's icons.
    """
    return "; ".join(
        [
            "default-src 'self'",
            " ".join(["script-src 'self'", *script_src]),
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data: blob:",
            "font-src 'self'",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


CONTENT_SECURITY_POLICY = csp()

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}

_INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc\s*=)[^>]*>(.*?)</script\s*>", re.IGNORECASE | re.DOTALL)


def inline_script_hashes(html: bytes) -> list[str]:
    """CSP source expressions (``'sha256-...'``) for each inline ``<script>`` in ``html``."""
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii") + "'"
        for body in _INLINE_SCRIPT.findall(html)
    ]


class SecurityHeaders:
    """Add ``SECURITY_HEADERS`` to every HTTP response (a header the route set itself is kept).

    Pages in ``hashed_paths`` (Swagger UI at ``/docs``, whose HTML from FastAPI carries one inline
    ``<script>``) are buffered, and their CSP allows exactly the inline scripts they hold, by hash.
    """

    def __init__(self, app: ASGIApp, hashed_paths: Sequence[str] = ("/docs",)) -> None:
        self.app = app
        self.hashed_paths = frozenset(hashed_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] in self.hashed_paths:
            await self._hashed(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                _add_headers(message, SECURITY_HEADERS)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _hashed(self, scope: Scope, receive: Receive, send: Send) -> None:
        start: Message | None = None
        chunks: list[bytes] = []

        async def buffer(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            headers = dict(SECURITY_HEADERS)
            if Headers(raw=start["headers"]).get("content-type", "").startswith("text/html"):
                headers["Content-Security-Policy"] = csp(inline_script_hashes(body))
            _add_headers(start, headers)
            await send(start)
            await send({"type": "http.response.body", "body": body, "more_body": False})

        await self.app(scope, receive, buffer)


def _add_headers(start: Message, headers: dict[str, str]) -> None:
    current = MutableHeaders(scope=start)
    for name, value in headers.items():
        if name not in current:
            current.append(name, value)


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body passes the limit; the app's handler renders it as 413 JSON."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is larger than the limit of {limit} bytes.")


def _too_large(limit: int) -> Response:
    return error_response(413, "payload_too_large", f"The request body is larger than the limit of {limit} bytes.")


class BodySizeLimit:
    """413 for bodies over ``max_bytes``, without reading more than ``max_bytes`` + one chunk.

    A larger ``Content-Length`` is refused before the body is touched. A chunked body (no
    ``Content-Length``) is counted as the app reads it, and reading stops with ``BodyTooLarge`` on the
    chunk that crosses the limit; FastAPI re-raises ``HTTPException`` from body parsing, so the app's
    own handler answers 413, and this middleware answers it itself if the exception gets out.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, per_path: dict[str, int] | None = None) -> None:
        self.app = app
        self.default_bytes = max_bytes
        self.per_path = per_path or {}  # exact paths with their own limit (the corpus upload)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await _Limited(self.app, self.per_path.get(scope["path"], self.default_bytes))(scope, receive, send)


class _Limited:
    """One request under one byte limit (``BodySizeLimit`` picks the limit by path)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await error_response(400, "bad_request", "Content-Length is not a number.")(scope, receive, send)
                return
            if int(declared) > self.max_bytes:
                await _too_large(self.max_bytes)(scope, receive, send)
                return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await _too_large(self.max_bytes)(scope, receive, send)


def _host_name(value: str | None) -> str | None:
    """``example.com:8000`` -> ``example.com``; ``[::1]:8000`` -> ``[::1]``; None if empty or malformed."""
    if not value:
        return None
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[: end + 1] if end > 0 else None
    return value.split(":", 1)[0] or None


class TrustedHost(TrustedHostMiddleware):
    """Starlette's Host check (same patterns, e.g. ``*.example.com``), answering 400 in the JSON error shape."""

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str]) -> None:
        super().__init__(app, allowed_hosts=list(allowed_hosts), www_redirect=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.allow_any or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = _host_name(Headers(scope=scope).get("host"))
        if host is not None and any(
            host == p or (p.startswith("*") and host.endswith(p[1:])) for p in self.allowed_hosts
        ):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await error_response(400, "invalid_host", "The Host header names a host this server does not serve.")(
            scope, receive, send
        )


class CORS(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered in the JSON error shape."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        keep = {k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")}
        return error_response(response.status_code, "cors_rejected", bytes(response.body).decode(), keep)


def install_middleware(app: FastAPI, settings: Settings) -> None:
    """Register the middleware above on ``app`` (the last added runs first)."""
    corpus = {path: settings.corpus_max_bytes for path in ("/api/corpus", "/api/corpus/upload")}
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes, per_path=corpus)
    origins = Settings.split(settings.cors_origins)
    if origins:
        app.add_middleware(
            CORS,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type"],
            max_age=600,
        )
    app.add_middleware(TrustedHost, allowed_hosts=Settings.split(settings.trusted_hosts) or ["*"])
    app.add_middleware(SecurityHeaders)
