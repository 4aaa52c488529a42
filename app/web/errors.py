"""One error shape for the whole API: ``{"error": code, "detail": message}``; the FastAPI handlers."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import i18n
from ..errors import APIError
from ..schemas.attention import ErrorResponse
from ..schemas.fields import request_error
from .i18n import language_of

log = logging.getLogger("headmap")


def error_response(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    503: "unavailable",
}


def _localised(request: Request, detail: str, message: tuple[str, dict[str, Any]] | None) -> str:
    """``detail`` in the reader's language when the error says which catalogue message it is (codes never change)."""
    if message is None:
        return detail
    lang = language_of(request)
    if lang == i18n.DEFAULT:
        return detail
    try:
        return _message(lang, message)
    except (KeyError, IndexError, ValueError):  # a catalogue slip must not turn a 4xx into a 500
        log.exception("message %s in %s", message[0], lang)
        return detail


def _message(lang: str, message: tuple[str, dict[str, Any]]) -> str:
    """A catalogue message; a parameter that is itself a ``(key, params)`` message is filled in first."""
    key, params = message
    return i18n.t(lang, key, **{k: _message(lang, v) if isinstance(v, tuple) else v for k, v in params.items()})


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception to the one JSON error shape; nothing else leaks to clients."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.error, _localised(request, exc.detail, exc.message), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            detail = _localised(request, "The request body is not valid JSON.", ("error.detail.invalid_json", {}))
            return error_response(400, "invalid_json", detail)
        err = request_error(errors)
        return error_response(err.status, err.error, _localised(request, err.detail, err.message))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        detail = "The server failed to handle this request; it has been logged."
        return error_response(500, "internal_error", _localised(request, detail, ("error.detail.internal_error", {})))


#: OpenAPI ``responses=`` entries for the error codes a route can return.
def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "Malformed JSON.",
        404: "Unknown model.",
        413: "Text longer than the model's max_tokens (without truncate), or body too large.",
        422: "Invalid field: empty text, wrong type, layer or head out of range.",
        503: "Server busy or not ready; retry after the Retry-After seconds.",
        504: "The request exceeded the time limit.",
    }
    return {c: {"model": ErrorResponse, "description": text.get(c, "Error.")} for c in codes}
