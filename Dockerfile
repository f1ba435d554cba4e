# montage-vec: the same install and commands the README and CI use.
FROM python:3.11-slim

# _RJEM_MALLOC_CONF: Polars' jemalloc hands freed chunk memory back at once instead of
# keeping it for 10 s, which lowers the job's peak RSS (see benchmarks/README.md).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    _RJEM_MALLOC_CONF=dirty_decay_ms:0,muzzy_decay_ms:0

WORKDIR /app
COPY pyproject.toml README.md ./
COPY montage_vec ./montage_vec
COPY sql ./sql
RUN pip install --upgrade pip && pip install .

# Unprivileged at run time; the embedded DuckDB default writes into /data.
RUN useradd --create-home --uid 10001 montage && mkdir /data && chown montage /data
USER montage
WORKDIR /data

# BATCH_MODE (once | scheduler | health) picks the mode when no command is given.
ENV BATCH_MODE=once
EXPOSE 8090
HEALTHCHECK --interval=60s --timeout=20s CMD ["montage-vec", "health"]
ENTRYPOINT ["montage-vec"]
