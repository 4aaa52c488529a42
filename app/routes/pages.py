"""HTML pages, their static assets (plotly.js from the plotly package) and offline API docs."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
import plotly
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.templating import Jinja2Templates

from app import __version__
from app.paths import TEMPLATES_DIR

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=TEMPLATES_DIR)

PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
SWAGGER_DIR = Path(fastapi_offline.__file__).parent / "static"
_CACHE = {"Cache-Control": "public, max-age=86400"}


@router.get("/", response_class=HTMLResponse)
async def index(request: Request) -> HTMLResponse:
    """The interactive heatmap page."""
    return templates.TemplateResponse(request, "index.html", {"version": __version__})


@router.get("/vendor/plotly.min.js")
async def plotly_js() -> FileResponse:
    return FileResponse(PLOTLY_JS, media_type="text/javascript", headers=_CACHE)


@router.get("/vendor/swagger/{name}")
async def swagger_asset(name: str) -> FileResponse:
    allowed = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css", "favicon.png": "image/png"}
    if name not in allowed:
        from app.errors import APIError

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
