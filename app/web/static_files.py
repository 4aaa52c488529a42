"""Static files sent gzip-compressed (when the client accepts gzip) and with ``Cache-Control``.

The app's global ``GzipMiddleware`` leaves streamed bodies alone, and ``FileResponse`` streams, so
static files would go out uncompressed (plotly.min.js is 4.8 MB, about 1.4 MB gzipped). Here each
compressible file is gzipped once, kept in memory keyed by path, size and mtime, and sent whole.

``asset_version()`` is a digest of the static tree. The page links its assets under
``/assets/<digest>/``, so they can be cached as immutable: any edit changes the digest and with it
every URL, including those of ES modules imported relatively from ``main.js``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import FileResponse, Response
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import Scope

COMPRESSIBLE = ("text/", "application/javascript", "application/json", "image/svg+xml")
#: Files smaller than this go out as they are: gzip's header costs more than it saves.
MIN_GZIP_BYTES = 512
#: Total compressed bytes kept in memory; least recently used files are dropped first.
CACHE_BYTES = 16 * 1024 * 1024
#: For URLs whose digest matches the current tree.
IMMUTABLE = "public, max-age=31536000, immutable"
#: Revalidate on every use (ETag / Last-Modified make that a cheap 304).
REVALIDATE = "no-cache"


class _GzipCache:
    """``(path, size, mtime_ns) -> gzip bytes``, bounded by total size, safe across threads."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
        self.size = 0
        self.lock = threading.Lock()

    def get(self, path: str, stat: os.stat_result) -> bytes:
        key = (path, stat.st_size, stat.st_mtime_ns)
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        packed = gzip.compress(Path(path).read_bytes(), compresslevel=6, mtime=0)
        with self.lock:
            if key not in self.items:
                self.items[key] = packed
                self.size += len(packed)
            while self.size > self.limit and len(self.items) > 1:
                _, old = self.items.popitem(last=False)
                self.size -= len(old)
        return packed


_CACHE = _GzipCache(CACHE_BYTES)
#: Only for its conditional-request logic (``is_not_modified``); serves no directory.
_CONDITIONAL = StaticFiles()


def accepts_gzip(scope: Scope) -> bool:
    return "gzip" in Headers(scope=scope).get("accept-encoding", "").lower()


async def compressed(response: Response, scope: Scope, cache_control: str) -> Response:
    """``response`` with ``cache_control``; a compressible ``FileResponse`` becomes its gzipped bytes.

    A 304 or any other response is returned as it is (plus the header). The gzipped variant keeps
    the file's ETag and Last-Modified and adds ``Vary: Accept-Encoding``.
    """
    response.headers["Cache-Control"] = cache_control
    if not isinstance(response, FileResponse) or response.status_code != 200:
        return response
    stat = response.stat_result
    media = response.media_type or ""
    if stat is None or stat.st_size < MIN_GZIP_BYTES or not media.startswith(COMPRESSIBLE):
        return response
    response.headers["Vary"] = "Accept-Encoding"
    if not accepts_gzip(scope):
        return response
    packed = await run_in_threadpool(_CACHE.get, str(response.path), stat)
    headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
    headers["Content-Encoding"] = "gzip"
    return Response(packed, media_type=response.media_type, headers=headers)


async def file_response(path: Path, media_type: str, scope: Scope, cache_control: str) -> Response:
    """One file, with ETag / Last-Modified (a matching conditional request gets 304), compressed."""
    stat = await run_in_threadpool(os.stat, path)
    response: Response = FileResponse(path, media_type=media_type, stat_result=stat)
    if _CONDITIONAL.is_not_modified(response.headers, Headers(scope=scope)):
        response = NotModifiedResponse(response.headers)
    return await compressed(response, scope, cache_control)


class CachedStaticFiles(StaticFiles):
    """``StaticFiles`` that gzips compressible files and sends ``Cache-Control: cache_control``."""

    def __init__(self, *, directory: str | os.PathLike[str], cache_control: str = REVALIDATE) -> None:
        super().__init__(directory=directory)
        self.cache_control = cache_control

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        return await compressed(response, scope, self.cache_control)


_VERSIONS: dict[Path, tuple[float, str]] = {}
_VERSION_TTL_S = 1.0


def asset_version(directory: Path) -> str:
    """A 12-hex digest of the names, sizes and mtimes of every file under ``directory``.

    Recomputed at most once a second, so an edited file shows up on the next page load in development.
    """
    now = time.monotonic()
    cached = _VERSIONS.get(directory)
    if cached and now - cached[0] < _VERSION_TTL_S:
        return cached[1]
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            st = os.stat(full)
            digest.update(f"{os.path.relpath(full, directory)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    version = digest.hexdigest()[:12]
    _VERSIONS[directory] = (now, version)
    return version
