# syntax=docker/dockerfile:1
#
# One file, one target per service, all built from the workspace's uv.lock:
#
#   docker build --target ingest    -t bricqs-ingest:TAG .
#   docker build --target processor -t bricqs-processor:TAG .
#   docker build --target api       -t bricqs-api:TAG .
#   docker build --target dispatcher -t bricqs-dispatcher:TAG .
#
# Each service is installed with `uv sync --locked --no-dev --no-editable --package <svc>`
# into /app/.venv in a build stage (the mechanics' hot path compiled there, see below); the
# final stage copies only that virtualenv onto a plain python-slim image (no uv, no
# compilers, no sources) and runs as an unprivileged numeric user, so Kubernetes can
# enforce runAsNonRoot. Entrypoints are exec form, so the
# service itself is PID 1 and receives SIGTERM. The bricqs-admin tool (migrations, keys,
# DLQ) is in every image; the migration Job runs it from the processor image.
#
# Adding a service is one build stage and one target like the ones below.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

# --- build: the workspace sources and the lock; uv only lives here ----------------------
FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
# Bytecode compiled at build time (the root filesystem is read-only at run time); copies,
# not hard links, out of the cache mount; the image's Python, never a downloaded one.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY libs ./libs
COPY services ./services
# The dev tools' member is only read, so the workspace matches uv.lock; no image installs it.
COPY tools ./tools

# The mechanics' hot path is compiled with mypyc in the images that run mechanics (the
# processor, ingest's /sync, the api): see scripts/compile_hot_path.py. The C compiler and
# mypyc's tools (mypy and setuptools at uv.lock's versions, in a virtualenv of their own)
# stay in the build stages; the service's virtualenv gets the extensions only.
ARG MYPY_VERSION=2.4.1
ARG SETUPTOOLS_VERSION=84.2.1
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN --mount=type=cache,target=/root/.cache/uv \
    uv venv /opt/mypyc \
    && uv pip install --python /opt/mypyc/bin/python \
       "mypy==${MYPY_VERSION}" "setuptools==${SETUPTOOLS_VERSION}"
COPY scripts/compile_hot_path.py ./scripts/

FROM build AS build-ingest
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --package bricqs-ingest
RUN /opt/mypyc/bin/python scripts/compile_hot_path.py --python /app/.venv/bin/python

FROM build AS build-processor
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --package bricqs-processor
RUN /opt/mypyc/bin/python scripts/compile_hot_path.py --python /app/.venv/bin/python

FROM build AS build-api
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --package bricqs-api
RUN /opt/mypyc/bin/python scripts/compile_hot_path.py --python /app/.venv/bin/python

FROM build AS build-dispatcher
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --package bricqs-dispatcher

# --- runtime: python-slim, the virtualenv, an unprivileged user ----------------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 bricqs \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin bricqs
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /app
USER 10001:10001

# One Granian worker per container (SPEC §9): scale pods, not workers, so each process has
# its own Prometheus registry and no multiprocess directory is needed. On SIGTERM Granian
# stops accepting, lets requests in flight finish, and kills a worker that is still busy
# after --workers-kill-timeout, inside the pod's terminationGracePeriodSeconds. The event
# loop is uvloop, named explicitly (Granian's `auto` would take whatever is installed); the
# bench (bench/loops.py) compares it with asyncio and rloop. Not rloop: it cannot open TLS
# connections yet (create_connection with ssl raises NotImplementedError), which rediss://
# and PostgreSQL's sslmode need.
FROM runtime AS ingest
COPY --from=build-ingest /app/.venv /app/.venv
EXPOSE 8000
ENTRYPOINT ["/app/.venv/bin/granian", "--interface", "asgi", "--factory", "--host", "0.0.0.0", "--port", "8000", "--workers", "1", "--workers-kill-timeout", "20", "--loop", "uvloop", "bricqs_ingest.app:create_app"]

# The consumer: SIGTERM stops intake, the batch in hand is committed and acknowledged.
# /metrics and /health/* are served on METRICS_PORT (9100).
FROM runtime AS processor
COPY --from=build-processor /app/.venv /app/.venv
EXPOSE 9100
ENTRYPOINT ["/app/.venv/bin/bricqs-processor"]

# The api (definitions, participant state, leaderboards, catalog): one Granian worker, like
# ingest, on port 8001.
FROM runtime AS api
COPY --from=build-api /app/.venv /app/.venv
EXPOSE 8001
ENTRYPOINT ["/app/.venv/bin/granian", "--interface", "asgi", "--factory", "--host", "0.0.0.0", "--port", "8001", "--workers", "1", "--workers-kill-timeout", "20", "--loop", "uvloop", "bricqs_api.app:create_app"]

# The webhook dispatcher: SIGTERM stops claiming, attempts in flight finish and are
# recorded. /metrics and /health/* are served on METRICS_PORT (9102).
FROM runtime AS dispatcher
COPY --from=build-dispatcher /app/.venv /app/.venv
EXPOSE 9102
ENTRYPOINT ["/app/.venv/bin/bricqs-dispatcher"]
