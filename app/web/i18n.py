"""The reader's language for a request: ``?lang=``, then the ``headmap_lang`` cookie, then ``Accept-Language``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from .. import i18n


def request_language(request: Request) -> str:
    """One of ``i18n.LANGUAGES``; see ``i18n.negotiate``."""
    return i18n.negotiate(
        request.query_params.get("lang"), request.cookies.get(i18n.COOKIE), request.headers.get("accept-language")
    )


LangDep = Annotated[str, Depends(request_language)]
