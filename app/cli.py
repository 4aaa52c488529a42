"""The ``headmap`` command: ``serve`` the app, print one ``attention`` response, ``render`` an HTML report,
or analyse a ``corpus``."""

from __future__ import annotations

import argparse
import os
import sys

from .i18n import LANGUAGES
from .settings import Settings


def _serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from .main import create_app
    from .serving.memory import configure_allocator

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    logging.getLogger("headmap").info("allocator: %s", configure_allocator())
    if args.workers > 1:  # each worker sizes its torch threads to its share of the CPUs
        os.environ["WEB_CONCURRENCY"] = str(args.workers)
    if args.model:  # added to HEADMAP_MODELS (a --model wins over an entry of the same name); workers read the env
        os.environ["HEADMAP_MODELS"] = ",".join([os.environ.get("HEADMAP_MODELS", ""), *args.model]).strip(",")

    uvicorn.run(
        "headmap.main:create_app" if args.workers > 1 else create_app(Settings()),  # read now, with --model
        factory=args.workers > 1,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        timeout_graceful_shutdown=30,
    )
    return 0


def _attention(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from .errors import APIError
    from .models.registry import ModelRegistry
    from .schemas.attention import AttentionRequest
    from .schemas.fields import request_error
    from .serving import attention as service

    settings = Settings(warmup=False)
    registry = ModelRegistry(settings)
    registry.load_all()
    try:
        req = AttentionRequest(
            text=args.text,
            model=args.model,
            text_pair=args.pair,
            target=args.target,
            truncate=args.truncate,
            encoding=args.encoding,
        )
        body = service.render(service.compute_sync(registry, req), req.encoding)
    except ValidationError as exc:
        err = request_error(exc.errors())
        print(f"headmap: {err.error}: {err.detail}", file=sys.stderr)
        return 2
    except APIError as exc:
        print(f"headmap: {exc.error}: {exc.detail}", file=sys.stderr)
        return 2
    sys.stdout.buffer.write(body)
    sys.stdout.buffer.write(b"\n")
    return 0


def _render(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from .errors import APIError
    from .models.registry import ModelRegistry
    from .report.render import render_report
    from .schemas.attention import AttentionRequest
    from .schemas.fields import request_error

    registry = ModelRegistry(Settings(warmup=False))
    registry.load_all()
    try:
        req = AttentionRequest(text=args.text, model=args.model, text_pair=args.pair, truncate=args.truncate)
        html = render_report(registry, req, args.lang)
    except ValidationError as exc:
        err = request_error(exc.errors())
        print(f"headmap: {err.error}: {err.detail}", file=sys.stderr)
        return 2
    except APIError as exc:
        print(f"headmap: {exc.error}: {exc.detail}", file=sys.stderr)
        return 2
    try:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(html)
    except OSError as exc:
        print(f"headmap: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


def _model_entry(text: str) -> str:
    """argparse type of ``--model NAME=SPEC``: checked now, so a typo fails before any model loads (exit 2)."""
    from .models.resolve import SpecError, parse_entry

    if "," in text:
        raise argparse.ArgumentTypeError(f"{text!r}: one model per --model (repeat the flag)")
    try:
        parse_entry(text)
    except SpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text.strip()


def _pull(args: argparse.Namespace) -> int:
    from .models.resolve import ModelUnavailable, SpecError, parse_hub_id, pull

    try:
        for hub_id in args.ids:  # check every id before downloading any
            parse_hub_id(hub_id)
    except SpecError as exc:
        print(f"headmap: {exc}", file=sys.stderr)
        return 2
    for hub_id in args.ids:
        try:
            folder = pull(hub_id)
        except ModelUnavailable as exc:
            print(f"headmap: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:  # disk full, permissions, connection dropped mid-download
            print(f"headmap: pulling {hub_id} failed: {exc}", file=sys.stderr)
            return 1
        print(f"{hub_id}: {folder}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from huggingface_hub import CacheNotFound, scan_cache_dir

    from .models.resolve import cache_dir

    try:
        info = scan_cache_dir(cache_dir())
    except CacheNotFound:
        print(f"headmap: no Hugging Face cache at {cache_dir()}", file=sys.stderr)
        return 0
    rows = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for rev in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True):
            refs = ",".join(sorted(rev.refs)) or "-"
            rows.append((repo.repo_id, rev.commit_hash[:12], refs, rev.size_on_disk_str))
    print(f"# {cache_dir()}")
    if not rows:
        print("(no models)")
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive")
    return number


def _corpus(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .corpus.compute import Options
    from .corpus.reader import CorpusInputError
    from .corpus.run import Config, Interrupted, run

    config = Config(
        input=args.input,
        out=Path(args.out),
        model=args.model,
        format=args.format,
        field=args.field,
        column=args.column,
        limit=args.limit,
        options=Options(
            max_tokens=args.max_tokens,
            batch_tokens=args.batch_tokens,
            shard_size=args.shard_size,
            bins=args.bins,
            similarity=not args.no_similarity,
            similarity_texts=args.similarity_texts or None,
        ),
        workers=args.workers,
        ray=args.ray,
        ray_actors=args.ray_actors,
        progress=not args.quiet,
    )
    try:
        summary = run(config)
    except CorpusInputError as exc:
        print(f"headmap corpus: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(
            f"headmap corpus: interrupted; {exc.shards_done} of {exc.shards} shards are saved in {args.out}. "
            "Run the same command again to resume.",
            file=sys.stderr,
        )
        return 130
    except OSError as exc:
        print(f"headmap corpus: {getattr(exc, 'filename', None) or args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(
            f"{summary['texts']} texts, {summary['tokens']['total']} tokens -> {args.out}/summary.json, "
            f"{summary['table']}, report.html",
            file=sys.stderr,
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headmap", description="Transformer attention, per layer and head.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the web app and API")
    serve.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"), help="bind address (env HOST)")
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")), help="port (env PORT)")
    serve.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("WEB_CONCURRENCY", "1")),
        help="worker processes, each with its own models (env WEB_CONCURRENCY)",
    )
    serve.add_argument("--log-level", default="info")
    serve.add_argument(
        "--model",
        action="append",
        type=_model_entry,
        default=[],
        metavar="NAME=SPEC",
        help="serve another model (repeatable): a folder or hub id, e.g. qwen=Qwen/Qwen2.5-0.5B@main?dtype=bfloat16",
    )
    serve.set_defaults(func=_serve)

    models = sub.add_parser("models", help="fetch Hugging Face models ahead of time, or list the cached ones")
    msub = models.add_subparsers(dest="models_command", required=True)
    pull = msub.add_parser(
        "pull", help="download hub models into the Hugging Face cache (HF_HOME), e.g. for an air-gapped server"
    )
    pull.add_argument("ids", nargs="+", metavar="ID", help="hub id, optionally @revision: Qwen/Qwen2.5-0.5B@main")
    pull.set_defaults(func=_pull)
    lst = msub.add_parser("list", help="list the models in the Hugging Face cache, with revisions and sizes")
    lst.set_defaults(func=_list)

    att = sub.add_parser("attention", help="print the /api/attention JSON for a text")
    att.add_argument("text")
    att.add_argument("--model", default=None, help="model name (default: minilm)")
    att.add_argument("--pair", default=None, help="optional second segment")
    att.add_argument("--target", default=None, help="encoder-decoder models: the target text (teacher-forced)")
    att.add_argument("--truncate", action="store_true", help="cut to the model's max_tokens instead of failing")
    att.add_argument("--encoding", choices=["json", "compact"], default="json")
    att.set_defaults(func=_attention)

    ren = sub.add_parser("render", help="write a self-contained HTML report (head view, model grid, statistics)")
    ren.add_argument("text")
    ren.add_argument("-o", "--output", required=True, help="HTML file to write")
    ren.add_argument("--model", default=None, help="model name (default: minilm)")
    ren.add_argument("--pair", default=None, help="optional second segment")
    ren.add_argument("--truncate", action="store_true", help="cut to the model's max_tokens instead of failing")
    ren.add_argument("--lang", choices=LANGUAGES, default="en", help="language of the report's text (default: en)")
    ren.set_defaults(func=_render)

    cor = sub.add_parser(
        "corpus",
        help="head statistics and head similarity over a corpus (summary.json, per-text table, HTML report)",
        description="Run every text of INPUT through the model and summarise each head over the corpus. "
        "Interrupted runs resume from the shards already in --out.",
    )
    cor.add_argument("input", help="a .txt (one text per line), .jsonl, .csv or .parquet file, or - for stdin")
    cor.add_argument("--out", required=True, help="output folder (created; reused to resume)")
    cor.add_argument("--model", default=None, help="model name (default: minilm)")
    cor.add_argument(
        "--format",
        choices=["txt", "jsonl", "csv", "parquet"],
        default=None,
        help="input format (default: from the suffix; txt for stdin)",
    )
    cor.add_argument("--field", default="text", help="JSON lines: the field holding the text (default: text)")
    cor.add_argument("--column", default=None, help="CSV/Parquet: the column holding the text (default: text)")
    cor.add_argument("--limit", type=_positive, default=None, help="use only the first N texts")
    cor.add_argument(
        "--max-tokens",
        type=_positive,
        default=None,
        help="truncate texts to N tokens (default: a longer text than the model takes is an error)",
    )
    cor.add_argument(
        "--batch-tokens",
        type=_positive,
        default=4096,
        help="padded tokens per forward pass, batch size x longest text (default: 4096)",
    )
    cor.add_argument("--shard-size", type=_positive, default=1024, help="texts per resumable shard (default: 1024)")
    cor.add_argument("--bins", type=_positive, default=20, help="histogram bins per head (default: 20)")
    cor.add_argument("--no-similarity", action="store_true", help="skip the head-to-head JS distances")
    cor.add_argument(
        "--similarity-texts",
        type=int,
        default=1000,
        help="JS distances over the first N texts only, as they cost ~2x the forward pass (0: all; default 1000)",
    )
    cor.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="processes on this machine, each loading the model once and taking its share of CPUs",
    )
    cor.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run on Ray (pip install 'headmap[ray]'): a running cluster's ADDRESS (auto, "
        "ray://host:10001), or none to use RAY_ADDRESS or start a local one",
    )
    cor.add_argument("--ray-actors", type=_positive, default=None, help="Ray actors (default: one per CPU)")
    cor.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    cor.set_defaults(func=_corpus)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
