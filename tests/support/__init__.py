"""Helpers shared by the tests, one module per concern (fixtures stay in conftest.py files):

- `database`: the PostgreSQL server's admin connection, per-test databases, and plain
  `query` / `execute` / `count` on either backend, with no job code involved.
- `data`: building check-ins, loading them, synthetic data sets, and reading back what a
  run stored (montages, items, run log, watermark, retry list).
- `outbox`: reading the `montage_events` outbox.
- `cli`: `CliResult`, log-line parsing and `run_once` for the in-process `run_cli` fixture.
- `processes`: real `montage-vec` subprocesses (`JobProcess`, `run_job`, `job_env`), free
  ports and waiting for a condition with a hang guard.
- `servers`: stub HTTP services, a real Pushgateway, and Prometheus text parsing.
- `interference`: holding a running job's writes on a real lock and killing its
  PostgreSQL connections, so fault tests act at a known point of the run.
"""
