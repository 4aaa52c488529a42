"""Deployment files: the Kubernetes manifests, the compose file, the Dockerfile, .dockerignore, the healthcheck.

Building and running the image is `../shared/tools/container-check` (minutes); these checks are instant.
"""

from __future__ import annotations

import importlib.util
import json
import re
import threading
from collections.abc import Iterator
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


# -- kubernetes.yaml --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()) if d]
    kinds = [d["kind"] for d in docs]
    assert len(kinds) == len(set(kinds)), f"one object of each kind expected, got {kinds}"
    return {d["kind"]: d for d in docs}


@pytest.fixture(scope="module")
def container(k8s: dict[str, dict[str, Any]]) -> dict[str, Any]:
    containers = k8s["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def quantity(value: str | int | float) -> float:
    """A Kubernetes CPU or memory quantity as a number (``500m`` -> 0.5, ``1Gi`` -> 2**30)."""
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert match, f"not a quantity: {value!r}"
    number, unit = match.groups()
    return float(number) * (units[unit] if unit else 1)


def test_k8s_has_deployment_service_and_autoscaler(k8s: dict[str, dict[str, Any]]) -> None:
    assert {"Deployment", "Service", "HorizontalPodAutoscaler"} <= set(k8s)
    assert k8s["HorizontalPodAutoscaler"]["apiVersion"] == "autoscaling/v2"


def test_k8s_probes(container: dict[str, Any]) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    liveness, readiness = container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]
    assert liveness["path"] == "/healthz"
    assert readiness["path"] == "/readyz"
    for probe in (liveness, readiness):
        assert probe["port"] in ports or probe["port"] in ports.values()
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert int(env.get("PORT", "8000")) in ports.values(), "the server must listen on the probed port"


def test_k8s_resources(container: dict[str, Any]) -> None:
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    for key in ("cpu", "memory"):
        assert quantity(requests[key]) <= quantity(limits[key]), key
    assert quantity(requests["memory"]) >= 2**30 * 0.75, "about 450 MB resident after loading, plus large responses"


def test_k8s_runs_as_non_root(k8s: dict[str, dict[str, Any]], container: dict[str, Any]) -> None:
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"].get("runAsUser", 1) != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    if container["securityContext"].get("readOnlyRootFilesystem"):
        assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}, "HF_HOME lives under /tmp"


def test_k8s_service_and_hpa_point_at_the_deployment(k8s: dict[str, dict[str, Any]], container: dict[str, Any]) -> None:
    deployment, service, hpa = k8s["Deployment"], k8s["Service"], k8s["HorizontalPodAutoscaler"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    port_names = {p["name"] for p in container["ports"]} | {p["containerPort"] for p in container["ports"]}
    assert all(p["targetPort"] in port_names for p in service["spec"]["ports"])
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    cpu = [m for m in hpa["spec"]["metrics"] if m["type"] == "Resource" and m["resource"]["name"] == "cpu"]
    assert cpu and "cpu" in container["resources"]["requests"], "CPU utilisation is measured against the request"


# -- compose.yaml -----------------------------------------------------------------------------------


def test_compose_healthcheck() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    service = compose["services"]["headmap"]
    check = service["healthcheck"]
    assert check["test"][0] in {"CMD", "CMD-SHELL"}
    assert not {"curl", "wget"} & set(" ".join(check["test"]).split())
    assert "/opt/headmap/healthcheck.py" in check["test"]
    assert service["build"]["context"] == ".."


# -- Dockerfile -------------------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` in order, comments dropped and continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_starts_with_base_image_arg() -> None:
    steps = instructions()
    assert steps[0][0] == "ARG" and re.fullmatch(r"BASE_IMAGE=\S+:\S*3\.11\S*slim\S*", steps[0][1])
    froms = [args for word, args in steps if word == "FROM"]
    assert len(froms) >= 2, "multi-stage: a builder and a slim runtime"
    assert all(re.fullmatch(r"\$\{BASE_IMAGE\}( AS \w+)?", f, re.IGNORECASE) for f in froms)


def test_dockerfile_installs_cpu_torch_from_its_index() -> None:
    steps = instructions()
    assert ("ARG", "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu") in steps
    runs = [args for word, args in steps if word == "RUN" and '--index-url "${TORCH_INDEX_URL}"' in args]
    assert len(runs) == 1
    spec = re.search(r'"torch([^"]*)"', runs[0])
    assert spec and SpecifierSet(spec.group(1)).contains("2.13.0")


def test_dockerfile_dependencies_before_code() -> None:
    steps = instructions()
    index = {k: i for i, k in enumerate(steps)}
    copy_pyproject = next(i for i, (w, a) in enumerate(steps) if w == "COPY" and a.startswith("pyproject.toml"))
    copy_code = index[("COPY", ". .")]
    torch = next(i for i, (w, a) in enumerate(steps) if w == "RUN" and "TORCH_INDEX_URL" in a)
    deps = next(i for i, (w, a) in enumerate(steps) if w == "RUN" and "requirements.txt" in a)
    assert torch < copy_pyproject < deps < copy_code


def test_dockerfile_runtime_is_non_root_offline_and_exec_form() -> None:
    steps = instructions()
    runtime = steps[max(i for i, (w, _) in enumerate(steps) if w == "FROM") :]
    user = [a for w, a in runtime if w == "USER"]
    assert user and user[-1].split(":")[0] not in {"root", "0"}
    env = " ".join(a for w, a in runtime if w == "ENV")
    for setting in ("HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1", "HOST=0.0.0.0", "PORT=8000"):
        assert setting in env.split()
    cmd = [a for w, a in runtime if w == "CMD"]
    assert len(cmd) == 1 and json.loads(cmd[0])[:2] == ["headmap", "serve"]
    health = [a for w, a in runtime if w == "HEALTHCHECK"]
    assert len(health) == 1
    exec_form = json.loads(health[0][health[0].index("CMD ") + 4 :])
    assert not {"curl", "wget"} & {Path(a).name for a in exec_form}
    assert exec_form[-1] == "/opt/headmap/healthcheck.py"
    assert "/healthz" in (DEPLOY / "healthcheck.py").read_text()


def dockerignored(path: str, rules: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for rule in rules:
        negated, pattern = rule.startswith("!"), rule.lstrip("!")
        if any(fnmatch(c, pattern) for c in candidates):
            ignored = not negated
    return ignored


def test_dockerignore_keeps_tests_caches_and_git_out() -> None:
    rules = [r.strip() for r in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [r for r in rules if r and not r.startswith("#")]
    for path in [".git/HEAD", "tests/test_api.py", ".pytest_cache/v", "app/__pycache__/main.cpython-311.pyc",
                 ".venv/bin/python", "benchmarks/bench.py", "deploy/kubernetes.yaml", ".ruff_cache/x"]:  # fmt: skip
        assert dockerignored(path, rules), path
    for path in ["pyproject.toml", "README.md", "app/main.py", "app/routes/api.py", "templates/index.html",
                 "static/js/api.js", "deploy/healthcheck.py"]:  # fmt: skip
        assert not dockerignored(path, rules), path


# -- deploy/healthcheck.py --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("healthcheck", DEPLOY / "healthcheck.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({}, "http://127.0.0.1:8000/healthz"),
        ({"HOST": "0.0.0.0", "PORT": "9000"}, "http://127.0.0.1:9000/healthz"),
        ({"HOST": "::"}, "http://[::1]:8000/healthz"),
        ({"HOST": "10.1.2.3", "PORT": "81"}, "http://10.1.2.3:81/healthz"),
    ],
)
def test_healthcheck_url(healthcheck: ModuleType, env: dict[str, str], url: str) -> None:
    assert healthcheck.url(env) == url


@pytest.fixture
def server() -> Iterator[HTTPServer]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_healthcheck_exit_codes(healthcheck: ModuleType, server: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOST", "127.0.0.1")
    monkeypatch.setenv("PORT", str(server.server_address[1]))
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # must be bypassed
    assert healthcheck.main() == 0
    server.shutdown()
    server.server_close()
    assert healthcheck.main() == 1
