"""Throughput benchmark of montage-vec: `python -m benchmarks --backend postgresql|duckdb --users N`.

It loads a deterministic synthetic data set, times the engine's full and incremental runs
(as child processes, the way production runs them), three baselines (the old per-user loop,
the whole job as set-based SQL, and the pure transfer floor) and a batch-size x concurrency
sweep, then writes a Markdown report and a throughput plot. See benchmarks/README.md.
"""
