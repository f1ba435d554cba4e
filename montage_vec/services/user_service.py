"""Telling the user service which users' montages changed, after each committed chunk.

Endpoint (user service): `POST {USER_SERVICE_URL}/internal/montages/cache-invalidations`
with header `X-API-Key: {USER_SERVICE_API_KEY}` and body
`{"job_id": "batch_...", "user_ids": ["<uuid>", ...]}` (at most 1,000 ids per call).
Any 2xx is success. A failure is logged and counted; the montages are already committed
and the outbox holds a `montage.cache.invalidated` event per user, so nothing is lost.
"""

from __future__ import annotations

from loguru import logger

from montage_vec.config import Settings
from montage_vec.errors import ServiceError
from montage_vec.job.chunks import ChunkResult
from montage_vec.job.summary import RunSummary
from montage_vec.observability.metrics import JobMetrics
from montage_vec.services.http import ServiceClient

INVALIDATION_PATH = "/internal/montages/cache-invalidations"
IDS_PER_CALL = 1000


class CacheInvalidator:
    """A run observer posting each chunk's changed users to the user service."""

    def __init__(self, client: ServiceClient, metrics: JobMetrics | None = None) -> None:
        self._client = client
        self._metrics = metrics

    @classmethod
    def from_settings(cls, settings: Settings, metrics: JobMetrics | None = None) -> CacheInvalidator | None:
        if not settings.user_service_url:
            return None
        api_key = settings.user_service_api_key.get_secret_value() if settings.user_service_api_key else None
        client = ServiceClient(
            "user service", settings.user_service_url, api_key, settings.user_service_timeout,
            settings.user_service_retries,
        )  # fmt: skip
        return cls(client, metrics)

    def run_started(self, summary: RunSummary) -> None:
        """Invalidation follows commits, not run starts."""

    def chunk_finished(self, summary: RunSummary, result: ChunkResult) -> None:
        if summary.dry_run or not result.changed_users:
            return
        for offset in range(0, len(result.changed_users), IDS_PER_CALL):
            user_ids = result.changed_users[offset : offset + IDS_PER_CALL]
            try:
                self._client.request("POST", INVALIDATION_PATH, json={"job_id": summary.job_id, "user_ids": user_ids})
            except ServiceError as exc:
                if self._metrics is not None:
                    self._metrics.invalidation_failures.inc()
                logger.bind(job_id=summary.job_id).error(
                    "cache invalidation failed; montages are committed and the outbox keeps the events",
                    users=len(user_ids),
                    error=str(exc),
                )

    def run_finished(self, summary: RunSummary) -> None:
        """Nothing to flush: every chunk's call already happened."""

    def close(self) -> None:
        self._client.close()
