# syntax=docker/dockerfile:1
# One image, two roles: `api` (default CMD) and `worker` (docker run IMAGE worker).
#
# GPU image (default): torch from the CUDA wheel index; the CUDA runtime ships inside the wheels, so the base stays
# a plain Python image and the host needs only the NVIDIA driver + NVIDIA Container Toolkit.
#   docker build -t dehaze:gpu .
# CPU image: the same Dockerfile with the CPU wheel index (much smaller).
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t dehaze:cpu .
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

WORKDIR /app

# --- dependency layers: rebuilt only when pyproject.toml (or the torch build args) change ---------------------------
# torch first, from the chosen wheel index; `torch==X` in pyproject is then already satisfied by the local
# `X+cu128` / `X+cpu` build (PEP 440 ignores local labels), so PyPI never replaces it.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt "setuptools>=68" wheel \
    && rm /tmp/requirements.txt

# --- the project ----------------------------------------------------------------------------------------------------
COPY README.md ./
COPY model ./model
COPY service ./service
COPY training ./training
COPY commands ./commands
RUN pip install --no-deps --no-build-isolation -e . \
    && groupadd --gid 10001 dehaze && useradd --create-home --uid 10001 --gid 10001 dehaze \
    && mkdir -p /opt/dehaze \
    && dehaze export --weights model/weights/dcmpnet_t.pt --out /opt/dehaze/dcmpnet_t.ts.pt \
    && dehaze export --weights model/weights/dcmpnet_t.pt --dtype bfloat16 \
        --out /opt/dehaze/dcmpnet_t.bfloat16.ts.pt \
    && chown -R dehaze:dehaze /opt/dehaze

# Listen on every interface inside the container; the shipped weights and the artifacts exported above (float32, and
# its bfloat16 sibling, which DEHAZE_DTYPE=auto serves on a CPU with native bfloat16).
ENV DEHAZE_HOST=0.0.0.0 \
    DEHAZE_PORT=8000 \
    DEHAZE_WORKER_METRICS_PORT=9100 \
    DEHAZE_WEIGHTS=/app/model/weights/dcmpnet_t.pt \
    DEHAZE_ARTIFACT=/opt/dehaze/dcmpnet_t.ts.pt

USER 10001:10001

EXPOSE 8000 9100

# Liveness without curl: the API's /healthz by default. For a worker started with plain `docker run ... worker`, set
# DEHAZE_HEALTHCHECK_URL=http://127.0.0.1:9100/metrics (docker/compose.yaml sets each service's own healthcheck).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('DEHAZE_HEALTHCHECK_URL', 'http://127.0.0.1:8000/healthz'), timeout=4)"]

ENTRYPOINT ["dehaze"]
CMD ["api"]
