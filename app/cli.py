"""The ``headmap`` command: ``serve`` the app, print one ``attention`` response, or ``render`` an HTML report."""

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

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    if args.workers > 1:  # each worker sizes its torch threads to its share of the CPUs
        os.environ["WEB_CONCURRENCY"] = str(args.workers)

    uvicorn.run(
        "app.main:create_app" if args.workers > 1 else create_app(),
        factory=args.workers > 1,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        timeout_graceful_shutdown=30,
    )
    return 0


def _attention(args: argparse.Namespace) -> int:
    from .errors import APIError
    from .models.registry import ModelRegistry
    from .schemas.attention import AttentionRequest
    from .serving import attention as service

    settings = Settings(warmup=False)
    registry = ModelRegistry(settings)
    registry.load_all()
    try:
        req = AttentionRequest(
            text=args.text, model=args.model, text_pair=args.pair, truncate=args.truncate, encoding=args.encoding
        )
        body = service.render(service.compute_sync(registry, req), req.encoding)
    except APIError as exc:
        print(f"headmap: {exc.error}: {exc.detail}", file=sys.stderr)
        return 2
    sys.stdout.buffer.write(body)
    sys.stdout.buffer.write(b"\n")
    return 0


def _render(args: argparse.Namespace) -> int:
    from .errors import APIError
    from .models.registry import ModelRegistry
    from .report.render import render_report
    from .schemas.attention import AttentionRequest

    registry = ModelRegistry(Settings(warmup=False))
    registry.load_all()
    try:
        req = AttentionRequest(text=args.text, model=args.model, text_pair=args.pair, truncate=args.truncate)
        html = render_report(registry, req, args.lang)
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
    serve.set_defaults(func=_serve)

    att = sub.add_parser("attention", help="print the /api/attention JSON for a text")
    att.add_argument("text")
    att.add_argument("--model", default=None, help="model name (default: minilm)")
    att.add_argument("--pair", default=None, help="optional second segment")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
