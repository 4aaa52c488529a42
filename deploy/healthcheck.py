"""Container HEALTHCHECK: exit 0 when GET /healthz answers 200 on $HOST:$PORT, else 1 (stdlib only, no curl)."""

from __future__ import annotations

import os
import sys
import urllib.request

# A wildcard bind address is not something to connect to: use the loopback of the same family.
WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def url(env: dict[str, str]) -> str:
    """The /healthz URL the server bound by ``headmap serve`` answers on, from HOST and PORT."""
    host = env.get("HOST", "0.0.0.0")
    host = WILDCARDS.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{env.get('PORT', '8000')}/healthz"


def main() -> int:
    # No proxies: an HTTP(S)_PROXY in the container's environment must not intercept a loopback probe.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url(dict(os.environ)), timeout=4) as response:
            return 0 if response.status == 200 else 1
    except Exception as exc:  # any failure means unhealthy; say why in `docker inspect`
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
