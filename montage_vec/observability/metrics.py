"""Prometheus metrics of the batch job.

`JobMetrics` is a run observer that keeps its own registry: the scheduler serves it on
/metrics, and a one-off run pushes it to a Pushgateway at the end (grouping key: job and
shard only, so each push replaces the previous run's values instead of piling up).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, pushadd_to_gateway
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from montage_vec.config.secrets import redact
from montage_vec.errors import ServiceError
from montage_vec.job.chunks import ChunkResult
from montage_vec.job.summary import RunSummary

PUSH_JOB = "montage_batch"
LAST_SUCCESS = "montage_batch_last_success_timestamp_seconds"
CHUNK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class JobMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.last_success = Gauge(
            LAST_SUCCESS,
            "Unix time the last run completed successfully.",
            registry=self.registry,
        )
        self.last_completion = Gauge(
            "montage_batch_last_completion_timestamp_seconds",
            "Unix time the last run ended, whatever its outcome.",
            registry=self.registry,
        )
        self.duration = Gauge("montage_batch_duration_seconds", "Wall time of the last run.", registry=self.registry)
        self.runs = Counter("montage_batch_runs", "Runs by final status.", ["status"], registry=self.registry)
        self.users_processed = Counter(
            "montage_batch_users_processed", "Users whose montages were computed.", registry=self.registry
        )
        self.errors = Counter(
            "montage_batch_errors", "Users that failed and went to the retry list.", registry=self.registry
        )
        self.montages_generated = Counter(
            "montage_batch_montages_generated", "Montages computed, by kind.", ["kind"], registry=self.registry
        )
        self.montages_written = Counter(
            "montage_batch_montages_written", "Montages created or changed in the database.", registry=self.registry
        )
        self.chunk_duration = Histogram(
            "montage_batch_chunk_duration_seconds",
            "Time to extract, compute and write one chunk.",
            buckets=CHUNK_BUCKETS,
            registry=self.registry,
        )
        self.invalidation_failures = Counter(
            "montage_batch_cache_invalidation_failures",
            "User-service cache invalidation calls that failed after retries.",
            registry=self.registry,
        )

    def run_started(self, summary: RunSummary) -> None:
        """Nothing to count until chunks finish."""

    def chunk_finished(self, summary: RunSummary, result: ChunkResult) -> None:
        self.users_processed.inc(result.users)
        self.errors.inc(len(result.failures))
        self.montages_generated.labels(kind="general").inc(result.general_montages)
        self.montages_generated.labels(kind="interest").inc(result.interest_montages)
        self.montages_written.inc(result.montages_written)
        self.chunk_duration.observe(sum(result.seconds.values()))

    def run_finished(self, summary: RunSummary) -> None:
        if summary.finished_at is None:
            return
        self.runs.labels(status=summary.status).inc()
        self.duration.set(summary.duration.total_seconds())
        self.last_completion.set(summary.finished_at.timestamp())
        if summary.status == "completed":
            self.last_success.set(summary.finished_at.timestamp())

    def exposition(self) -> bytes:
        """The registry in Prometheus text format, for /metrics."""
        return generate_latest(self.registry)

    def push(self, gateway_url: str, shard: str, succeeded: bool, timeout: float = 10.0) -> None:
        """Update this job and shard's group on the Pushgateway with the current values.

        The push replaces metrics by name (POST), so after a failed run, which does not
        send the last-success gauge, the gateway keeps the previous run's success time.
        """
        pushed = self.registry if succeeded else _Without(self.registry, LAST_SUCCESS)
        try:
            pushadd_to_gateway(
                gateway_url, job=PUSH_JOB, registry=pushed, grouping_key={"shard": shard}, timeout=timeout
            )
        except OSError as exc:  # urllib errors: a metrics outage must not fail the run
            raise ServiceError(redact(f"pushing metrics to the Pushgateway failed: {exc}")) from None


class _Without(Collector):
    """A registry's metrics minus one family, for pushes that must leave that family alone."""

    def __init__(self, registry: CollectorRegistry, excluded: str) -> None:
        self._registry = registry
        self._excluded = excluded

    def collect(self) -> Iterable[Metric]:
        return [family for family in self._registry.collect() if family.name != self._excluded]
