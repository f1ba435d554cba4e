# syntax=docker/dockerfile:1
# montage-vec. The build stage makes a virtualenv from uv.lock with deploy/build-venv (the same
# script tests/deploy/test_image.py runs); the runtime stage holds Python and that venv only.
#
# No HEALTHCHECK: `once` (the CronJob) is a one-shot process, and the scheduler mode is probed
# by the orchestrator on GET /healthz (METRICS_PORT, 8090), as the README's deployment section shows.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY deploy/uv-bootstrap.txt deploy/build-venv deploy/
RUN pip install --no-cache-dir --require-hashes --requirement deploy/uv-bootstrap.txt
COPY pyproject.toml uv.lock README.md ./
COPY montage_vec montage_vec
COPY sql sql
RUN deploy/build-venv /opt/venv

FROM ${PYTHON_IMAGE} AS runtime
# _RJEM_MALLOC_CONF: Polars' jemalloc hands freed memory back after 1 s idle instead of 10 s.
# Not at once (0 ms): then every chunk faults its pages in again, which cost a third of
# the job's CPU for 46 MiB less peak RSS at 100k users (see benchmarks/README.md).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    _RJEM_MALLOC_CONF=dirty_decay_ms:1000,muzzy_decay_ms:0 \
    BATCH_MODE=once

# A numeric user the kubelet can verify as non-root (runAsNonRoot); /data is the embedded
# DuckDB default's home and the only directory the job writes outside /tmp.
RUN groupadd --gid 10001 montage \
    && useradd --uid 10001 --gid 10001 --home-dir /data --no-create-home --shell /usr/sbin/nologin montage \
    && install --directory --owner=10001 --group=10001 /data
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /data

EXPOSE 8090
ENTRYPOINT ["montage-vec"]
