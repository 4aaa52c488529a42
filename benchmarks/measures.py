"""Server time of each measure beside minilm's bare forward pass, at a few input lengths.

    python benchmarks/measures.py                       # 32, 128, 512 tokens; flow at 16 and 32
    python benchmarks/measures.py --tokens 32 --repeat 1

"Forward" is the engine's own forward pass (``output_attentions``) on one input; every other column is
the route's ``Server-Timing`` (tokenizing, the extra forward pass with hooks where one is needed, the
math and writing the JSON), the median of ``--repeat`` runs, in-process through Starlette's test client.
Attention flow runs only up to ``HEADMAP_FLOW_MAX_TOKENS`` (413 above), so it has its own lengths;
ALTI and head similarity are skipped past their bounds (``HEADMAP_ALTI_MAX_TOKENS``,
``HEADMAP_SIMILARITY_MAX_TOKENS``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from headmap.main import create_app
from headmap.settings import Settings

#: column -> (route, extra body fields)
MEASURES: dict[str, tuple[str, dict[str, Any]]] = {
    "weights": ("/api/attention", {}),
    "norms": ("/api/attention", {"measure": "norms"}),
    "rollout": ("/api/aggregate", {"methods": ["rollout"]}),
    "alti": ("/api/aggregate", {"methods": ["alti", "alti_rollout"]}),
    "stats": ("/api/stats", {}),
    "stats+similarity": ("/api/stats", {"similarity": True}),
    "heads": ("/api/heads", {}),
}


def text_of(tokens: int) -> str:
    """A text minilm splits into exactly ``tokens`` tokens ([CLS] and [SEP] included)."""
    return " ".join(["word"] * (tokens - 2))


def median_ms(run: Callable[[], float], repeat: int) -> float:
    return statistics.median(run() for _ in range(repeat))


def server_ms(client: TestClient, path: str, body: dict[str, Any]) -> float:
    r = client.post(path, json=body)
    if r.status_code != 200:
        raise SystemExit(f"{path} {body.get('methods', '')}: {r.status_code} {r.text[:200]}")
    return float(r.headers["server-timing"].split("dur=")[1].split(";")[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", default="32,128,512", help="comma-separated input lengths")
    parser.add_argument("--flow-tokens", default="16,32", help="lengths for attention flow (at most the bound)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    lengths = [int(n) for n in args.tokens.split(",") if n]
    flow_lengths = [int(n) for n in args.flow_tokens.split(",") if n]
    settings = Settings(builtin_models="minilm", flow_max_tokens=max([2, *flow_lengths]))
    bounds = {"alti": settings.alti_max_tokens, "stats+similarity": settings.similarity_max_tokens}
    with TestClient(create_app(settings)) as client:
        while client.get("/readyz").status_code != 200:
            time.sleep(0.2)
        engine = client.app.state.registry.get("minilm")  # type: ignore[attr-defined]

        def forward_ms(n: int) -> float:
            enc = engine.encode(text_of(n))
            assert len(enc) == n
            start = time.perf_counter()
            engine.forward([enc])
            return (time.perf_counter() - start) * 1000

        print(f"| tokens | forward | {' | '.join(MEASURES)} |")
        print(f"|---|---|{'---|' * len(MEASURES)}")
        for n in lengths:
            fwd = median_ms(lambda n=n: forward_ms(n), args.repeat)
            cells = []
            for name, (path, extra) in MEASURES.items():
                if n > bounds.get(name, n):
                    cells.append(f"413 (> {bounds[name]})")
                    continue
                body = {"text": text_of(n), **extra}
                if path == "/api/heads":
                    body["random_length"] = min(20, (n - 2) // 2)
                ms = median_ms(lambda path=path, body=body: server_ms(client, path, body), args.repeat)
                cells.append(f"{ms:.0f} ms ({ms / fwd:.1f}×)")
            print(f"| {n} | {fwd:.0f} ms | {' | '.join(cells)} |")
        print()
        print("| tokens | forward | rollout | flow |")
        print("|---|---|---|---|")
        for n in flow_lengths:
            fwd = median_ms(lambda n=n: forward_ms(n), args.repeat)
            cells = []
            for methods in (["rollout"], ["flow"]):
                body = {"text": text_of(n), "methods": methods}
                ms = median_ms(lambda body=body: server_ms(client, "/api/aggregate", body), args.repeat)
                cells.append(f"{ms:.0f} ms ({ms / fwd:.1f}×)")
            print(f"| {n} | {fwd:.0f} ms | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
