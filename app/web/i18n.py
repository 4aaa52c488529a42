"""The reader's language for a request: ``?lang=``, then the ``headmap_lang`` cookie, then ``Accept-Language``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from .. import i18n


def language_of(request: Request) -> str:
    """One of ``i18n.LANGUAGES`` for ``request``; see ``i18n.negotiate``."""
    return i18n.negotiate(
        request.query_params.get("lang"), request.cookies.get(i18n.COOKIE), request.headers.get("accept-language")
    )


def request_language(
    request: Request,
    lang: Annotated[
        str | None,
        Query(
            description="Language of the texts in the response: `en` or `zh-CN` (any `zh-*` means zh-CN). "
            "Without it: the `headmap_lang` cookie, then `Accept-Language`, then en. Unknown values are ignored.",
        ),
    ] = None,
) -> str:
    """``language_of`` as a dependency, so ``lang`` shows in the OpenAPI schema."""
    return i18n.negotiate(lang, request.cookies.get(i18n.COOKIE), request.headers.get("accept-language"))


LangDep = Annotated[str, Depends(request_language)]
