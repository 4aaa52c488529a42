"""Message catalogues (``en``, ``zh-CN``) and language negotiation. No web framework here.

Each catalogue is ``<language>.json`` beside this file: ``messages`` (key -> text with ``{name}``
placeholders, the syntax of ``str.format``, which the page's script replaces the same way) and a
``glossary`` of the field's terms, so translations stay consistent (token = 词元, query/key/value =
查询/键/值, ...). Every key exists in every catalogue (tests/test_i18n.py checks it).

The language of a request: ``?lang=``, then the remembered choice (cookie ``headmap_lang``), then
``Accept-Language``, then English.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

LANGUAGES = ("en", "zh-CN")
DEFAULT = "en"
#: The cookie that remembers the reader's choice.
COOKIE = "headmap_lang"
_DIR = Path(__file__).parent


@lru_cache(maxsize=len(LANGUAGES))
def catalogue(lang: str) -> dict[str, Any]:
    """The whole catalogue of ``lang`` (one of ``LANGUAGES``): ``{"_meta", "glossary", "messages"}``."""
    if lang not in LANGUAGES:
        raise KeyError(f"no catalogue for language {lang!r}; have {', '.join(LANGUAGES)}")
    data: dict[str, Any] = json.loads((_DIR / f"{lang}.json").read_text(encoding="utf-8"))
    return data


def messages(lang: str) -> dict[str, str]:
    """``{key: text}`` of ``lang``."""
    out: dict[str, str] = catalogue(lang)["messages"]
    return out


def t(lang: str, key: str, /, **params: Any) -> str:
    """The message ``key`` in ``lang`` with ``{name}`` placeholders filled from ``params``."""
    text = messages(lang)[key]
    return text.format(**params) if params else text


def match(tag: str | None) -> str | None:
    """The supported language a tag asks for: any ``zh`` (zh, zh-CN, zh-Hans, zh-TW …) -> ``zh-CN``
    (Simplified is the catalogue there is), ``en-*`` -> ``en``; None for anything else."""
    if not tag:
        return None
    primary = tag.strip().replace("_", "-").split("-")[0].lower()
    if primary == "zh":
        return "zh-CN"
    if primary == "en":
        return "en"
    return None


def from_accept_language(header: str | None) -> str | None:
    """The most preferred supported language of an ``Accept-Language`` header (RFC 9110 q-values)."""
    if not header:
        return None
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate(header.split(",")[:32]):  # bounded: a header is client-controlled
        tag, _, params = part.strip().partition(";")
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        lang = match(tag)
        if lang is not None and q > 0:
            ranked.append((-q, i, lang))
    return min(ranked)[2] if ranked else None


def negotiate(query: str | None = None, cookie: str | None = None, accept_language: str | None = None) -> str:
    """``?lang=``, then the remembered choice, then ``Accept-Language``, then English."""
    return match(query) or match(cookie) or from_accept_language(accept_language) or DEFAULT
