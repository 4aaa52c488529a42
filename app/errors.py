"""The one error a client sees, as a plain exception: no web framework here, so every layer may raise it.

``web/errors.py`` renders it as ``{"error": code, "detail": message}`` with ``status``; the CLI prints it.
"""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """An error a client caused or should see; rendered as JSON with ``status``."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: str,
        headers: dict[str, str] | None = None,
        message: tuple[str, dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers
        #: ``(catalogue key, params)`` of ``detail``, so it can be given in the reader's language (see ``i18n``).
        self.message = message
