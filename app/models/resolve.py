"""Model specs: what ``HEADMAP_MODELS`` and ``headmap serve --model`` name, and where its files are.

A spec is a local folder or a Hugging Face hub id, with an optional ``@revision`` (hub ids only) and
per-model options in URL query form::

    /models/bert-base-chinese
    Qwen/Qwen2.5-0.5B@main?dtype=bfloat16&max_tokens=1024

Hub ids resolve through the standard Hugging Face cache (``HF_HOME`` / ``HF_HUB_CACHE``), with
huggingface_hub's own ``snapshot_download``: from the cache alone when ``HF_HUB_OFFLINE`` is set, else
downloading what is missing. Remote code (``trust_remote_code``) is never run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import parse_qsl

Dtype = Literal["float32", "bfloat16"]
DTYPES: tuple[str, ...] = get_args(Dtype)
OPTIONS = ("dtype", "max_tokens")

# The files a model needs: config, tokenizer and safetensors weights at the repository's top level.
# The same patterns serve `pull` and loading, so a pulled snapshot is complete for loading offline.
# (Sub-folders hold ONNX/OpenVINO exports or sentence-transformers modules, never the AutoModel weights.)
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]
IGNORE_PATTERNS = ["*/*"]
# Older repositories without safetensors: their PyTorch weights, fetched only then (transformers loads
# them with torch.load(weights_only=True)).
BIN_PATTERNS = ["pytorch_model*.bin"]


class SpecError(ValueError):
    """A spec that cannot be parsed: a bad hub id, an unknown option or a bad option value."""


class ModelUnavailable(RuntimeError):
    """A spec that parses but whose files cannot be had (not cached while offline, not on the hub, remote code)."""


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """One named model: a local ``folder`` or a hub ``repo_id`` (at ``revision``), plus its options."""

    name: str
    text: str  # as written, for messages and /api/models
    folder: Path | None = None
    repo_id: str | None = None
    revision: str | None = None
    dtype: Dtype = "float32"
    max_tokens: int | None = None

    @property
    def hub_id(self) -> str | None:
        """``org/name@revision`` (or without ``@``) for a hub model, None for a folder."""
        if self.repo_id is None:
            return None
        return self.repo_id if self.revision is None else f"{self.repo_id}@{self.revision}"


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~", "\\")) or text in {".", ".."} or (len(text) > 1 and text[1] == ":")


def parse_hub_id(text: str) -> tuple[str, str | None]:
    """``org/name[@revision]`` -> (repo id, revision); SpecError if it is not a valid hub id."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id  # type: ignore[attr-defined]  # public, re-exported implicitly

    repo_id, at, revision = text.partition("@")
    if at and not revision.strip():
        raise SpecError(f"{text!r}: nothing after '@' (expected a branch, tag or commit)")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise SpecError(f"{text!r} is neither an existing folder nor a Hugging Face hub id: {exc}") from None
    return repo_id, (revision.strip() or None)


def parse_spec(name: str, text: str) -> ModelSpec:
    """Parse one ``SPEC`` (folder or hub id, ``@revision``, ``?options``) for the model called ``name``."""
    text = text.strip()
    where, question, query = text.partition("?")
    where = where.strip()
    if not where:
        raise SpecError(f"model {name!r}: empty spec")
    options: dict[str, str] = {}
    if question:
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise SpecError(f"model {name!r}: options {query!r} are not of the form key=value&key=value") from None
        for key, value in pairs:
            if key not in OPTIONS:
                raise SpecError(f"model {name!r}: unknown option {key!r}; known: {', '.join(OPTIONS)}")
            if key in options:
                raise SpecError(f"model {name!r}: option {key!r} given twice")
            options[key] = value
    dtype = options.get("dtype", "float32")
    if dtype not in DTYPES:
        raise SpecError(f"model {name!r}: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    max_tokens: int | None = None
    if "max_tokens" in options:
        try:
            max_tokens = int(options["max_tokens"])
        except ValueError:
            max_tokens = 0
        if max_tokens < 2:
            raise SpecError(f"model {name!r}: max_tokens {options['max_tokens']!r} is not a whole number >= 2")
    common: dict[str, Any] = {"name": name, "text": text, "dtype": dtype, "max_tokens": max_tokens}
    # An existing folder wins (as in transformers' from_pretrained); then anything path-like is a folder
    # (reported missing at load time); the rest must be a hub id.
    if _looks_like_path(where) or Path(where).is_dir():
        return ModelSpec(folder=Path(where).expanduser(), **common)
    repo_id, revision = parse_hub_id(where)
    return ModelSpec(repo_id=repo_id, revision=revision, **common)


def parse_entry(entry: str) -> ModelSpec:
    """``NAME=SPEC`` -> ModelSpec; SpecError if malformed."""
    name, sep, spec = entry.partition("=")
    name = name.strip()
    if not sep or not name or not spec.strip():
        raise SpecError(f"model entry {entry!r} is not of the form name=folder or name=org/model")
    if any(c in name for c in "?@/ "):
        raise SpecError(f"model name {name!r} may not contain '?', '@', '/' or spaces")
    return parse_spec(name, spec)


def parse_entries(text: str) -> tuple[dict[str, ModelSpec], dict[str, str]]:
    """Parse comma-separated ``NAME=SPEC`` entries: (specs by name, errors by name or entry)."""
    specs: dict[str, ModelSpec] = {}
    errors: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            spec = parse_entry(item)
        except SpecError as exc:
            name = item.partition("=")[0].strip() if "=" in item else ""
            errors[name or item] = str(exc)
            continue
        specs[spec.name] = spec
    return specs, errors


# -- the Hugging Face cache ---------------------------------------------------------------------------


def offline() -> bool:
    """Whether downloads are off (``HF_HUB_OFFLINE``, as huggingface_hub read it)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def cache_dir() -> Path:
    """The hub cache folder huggingface_hub uses (``HF_HUB_CACHE``, else ``$HF_HOME/hub``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def snapshot(repo_id: str, revision: str | None, *, download: bool, progress: bool = False) -> Path:
    """The local snapshot folder of ``repo_id`` at ``revision``, downloading missing files if ``download``.

    Raises ModelUnavailable with a reason a user can act on.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils.tqdm import enable_progress_bars

    shown = repo_id if revision is None else f"{repo_id}@{revision}"
    if progress:
        enable_progress_bars()  # transformers' loader may have turned them off in this process
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=ALLOW_PATTERNS,
            ignore_patterns=IGNORE_PATTERNS,
            local_files_only=not download,
        )
        if download and not any(Path(str(folder)).glob("*.safetensors")):
            folder = snapshot_download(
                repo_id,
                revision=Path(str(folder)).name,  # the commit just fetched, even if the branch moves meanwhile
                allow_patterns=BIN_PATTERNS,
                ignore_patterns=IGNORE_PATTERNS,
            )
    except RevisionNotFoundError:
        raise ModelUnavailable(f"{shown}: the hub has no revision {revision!r}") from None
    except GatedRepoError:
        raise ModelUnavailable(f"{shown} is gated: accept its licence on the hub and log in (HF_TOKEN)") from None
    except RepositoryNotFoundError:
        raise ModelUnavailable(f"{shown} is not on the Hugging Face hub (or is private: set HF_TOKEN)") from None
    except LocalEntryNotFoundError as exc:
        if download:  # the hub could not be reached and the cache has nothing
            raise ModelUnavailable(
                f"{shown} is not in the Hugging Face cache ({cache_dir()}) and the hub cannot be reached: "
                f"{exc.__cause__ or exc}"
            ) from None
        raise ModelUnavailable(
            f"{shown} is not in the Hugging Face cache ({cache_dir()}) and downloads are off (HF_HUB_OFFLINE): "
            f"run `headmap models pull {shown}` where the network is allowed and mount that cache"
        ) from None
    return Path(str(folder))


def check_no_remote_code(folder: Path) -> None:
    """ModelUnavailable if the model in ``folder`` can only be built by code from its repository."""
    from transformers import CONFIG_MAPPING

    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # transformers reports a missing or broken config.json itself
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in CONFIG_MAPPING and isinstance(config, dict) and "auto_map" in config:
        raise ModelUnavailable(
            f"model type {model_type!r} needs code from its repository (trust_remote_code), "
            "which Headmap never runs; use a model that transformers supports natively"
        )


def local_folder(spec: ModelSpec) -> Path:
    """The folder holding ``spec``'s files: the folder itself, or its hub snapshot (downloaded if allowed)."""
    if spec.folder is not None:
        if not spec.folder.is_dir():
            raise FileNotFoundError(f"model folder {spec.folder} does not exist")
        folder = spec.folder
    else:
        assert spec.repo_id is not None  # a spec is a folder or a hub id (parse_spec)
        folder = snapshot(spec.repo_id, spec.revision, download=not offline())
    check_no_remote_code(folder)
    return folder


def pull(hub_id: str) -> Path:
    """Download ``org/name[@revision]`` into the cache with huggingface_hub's progress bars (``models pull``)."""
    repo_id, revision = parse_hub_id(hub_id)
    if offline():
        raise ModelUnavailable(f"cannot pull {hub_id}: downloads are off (HF_HUB_OFFLINE is set)")
    return snapshot(repo_id, revision, download=True, progress=True)  # loading checks for remote code
