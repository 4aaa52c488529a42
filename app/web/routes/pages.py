"""HTML pages, their static assets (plotly.js from the plotly package) and offline API docs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
import plotly
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from ... import __version__, i18n
from ...attention.definitions import ROLLOUT, page_definitions, subscripts_html
from ...paths import STATIC_DIR, TEMPLATES_DIR
from ...schemas.attention import EXAMPLE_TEXT
from ..i18n import language_of
from ..static_files import (
    IMMUTABLE,
    REVALIDATE,
    CachedStaticFiles,
    asset_version,
    file_response,
)

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=TEMPLATES_DIR)
# The definitions of the head statistics and rollout (one source): the help renders them, the scripts
# read them from the page (#app data-definitions).
templates.env.globals["rollout"] = ROLLOUT
_DEFINITIONS = page_definitions()
# Defaults for a template rendered without them (the routes pass the reader's language).
templates.env.globals["definitions"] = _DEFINITIONS
templates.env.globals["lang"] = i18n.DEFAULT
templates.env.globals["t"] = i18n.messages(i18n.DEFAULT)
templates.env.filters["subscripts"] = lambda text: Markup(subscripts_html(str(text)))

PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
SWAGGER_DIR = Path(fastapi_offline.__file__).parent / "static"
PLOTLY_VERSION = plotly.__version__
_CACHE = {"Cache-Control": "public, max-age=86400"}
_ASSETS = CachedStaticFiles(directory=STATIC_DIR)


def localized_definitions(lang: str) -> dict[str, Any]:
    """The statistics' definitions with their names, units and help in ``lang`` (the catalogue's
    ``stat.<id>.*``); ids and formulas stay. English is the definitions as they are."""
    if lang == i18n.DEFAULT:
        return _DEFINITIONS
    msgs = i18n.messages(lang)
    stats = []
    for stat in _DEFINITIONS["stats"]:
        local = {field: msgs.get(f"stat.{stat['id']}.{field}") for field in ("name", "short", "unit", "help")}
        stats.append({**stat, **{k: v for k, v in local.items() if v is not None}})
    return {**_DEFINITIONS, "stats": stats}


def _remember_language(request: Request, response: Response, lang: str) -> None:
    if i18n.match(request.query_params.get("lang")) == lang:  # an explicit choice: remember it for a year
        response.set_cookie(i18n.COOKIE, lang, max_age=365 * 24 * 3600, samesite="lax")
    response.headers["Vary"] = "Accept-Language, Cookie"


@router.get("/help/languages", response_class=HTMLResponse)
async def help_languages(request: Request) -> HTMLResponse:
    """Which models to add for Chinese and other scripts (the page's unknown-token notice links here)."""
    lang = language_of(request)
    context = {
        "lang": lang,
        "languages": i18n.LANGUAGES,
        "t": i18n.messages(lang),
        "version": __version__,
        "root": request.scope.get("root_path", "").rstrip("/"),
        "assets": asset_version(STATIC_DIR),
    }
    headers = {"Cache-Control": REVALIDATE}
    response = templates.TemplateResponse(request, "help_languages.html", context, headers=headers)
    _remember_language(request, response, lang)
    return response


@router.get("/", response_class=HTMLResponse)
async def index(request: Request) -> HTMLResponse:
    """The interactive heatmap page, in the reader's language (``?lang=`` is remembered in a cookie)."""
    lang = language_of(request)
    context = {
        "lang": lang,
        "languages": i18n.LANGUAGES,
        "t": i18n.messages(lang),
        "definitions": localized_definitions(lang),
        "version": __version__,
        "root": request.scope.get("root_path", "").rstrip("/"),
        "assets": asset_version(STATIC_DIR),
        "plotly_version": PLOTLY_VERSION,
        "example_text": EXAMPLE_TEXT if lang == i18n.DEFAULT else i18n.t(lang, "example.default"),
    }
    # The page itself is tiny and names the current asset digest: always revalidate it.
    response = templates.TemplateResponse(request, "index.html", context, headers={"Cache-Control": REVALIDATE})
    _remember_language(request, response, lang)
    return response


@router.get("/assets/{version}/{path:path}")
async def asset(version: str, path: str, request: Request) -> Response:
    """A file of ``static/`` under a digest of the tree: immutable while the digest is current."""
    response = await _ASSETS.get_response(path, request.scope)
    response.headers["Cache-Control"] = IMMUTABLE if version == asset_version(STATIC_DIR) else REVALIDATE
    return response


@router.get("/vendor/plotly.min.js")
async def plotly_js(request: Request) -> Response:
    """plotly.js from the installed plotly package; immutable when asked for with its version (``?v=``)."""
    cache = IMMUTABLE if request.query_params.get("v") == PLOTLY_VERSION else _CACHE["Cache-Control"]
    return await file_response(PLOTLY_JS, "text/javascript", request.scope, cache)


@router.get("/vendor/swagger/{name}")
async def swagger_asset(name: str) -> FileResponse:
    allowed = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css", "favicon.png": "image/png"}
    if name not in allowed:
        from ...errors import APIError

        raise APIError(404, "not_found", f"No such asset {name[:80]!r}.")
    return FileResponse(SWAGGER_DIR / name, media_type=allowed[name], headers=_CACHE)


@router.get("/docs", response_class=HTMLResponse)
async def docs() -> HTMLResponse:
    """Swagger UI with its assets served from this server (no CDN)."""
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="Headmap API",
        swagger_js_url="/vendor/swagger/swagger-ui-bundle.js",
        swagger_css_url="/vendor/swagger/swagger-ui.css",
        swagger_favicon_url="/vendor/swagger/favicon.png",
    )
