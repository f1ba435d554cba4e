"""One place for how montage-vec calls HTTP services: API key header, timeout, bounded retries."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import httpx
from loguru import logger

from montage_vec.config.secrets import redact
from montage_vec.errors import ServiceError, ServiceResponseError

API_KEY_HEADER = "X-API-Key"
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class ServiceClient:
    """A named HTTP service with a base URL; thread-safe (httpx.Client is)."""

    def __init__(self, name: str, base_url: str, api_key: str | None, timeout: timedelta, retries: int) -> None:
        self.name = name
        self.retries = retries
        headers = {API_KEY_HEADER: api_key} if api_key else {}
        headers["User-Agent"] = "montage-vec"
        self._client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout.total_seconds())

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The response of the first successful attempt; ServiceError after the last failed one.

        Connection errors, timeouts and 408/429/5xx are retried with exponential backoff;
        other 4xx answers are final at once.
        """
        for attempt in range(1, self.retries + 2):
            try:
                response = self._client.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    return response
                problem = f"HTTP {response.status_code}"
                if response.status_code not in RETRYABLE_STATUS:
                    raise ServiceResponseError(redact(f"{self.name} {method} {path} refused: {problem}"))
            if attempt <= self.retries:
                backoff = min(10.0, 0.2 * 2 ** (attempt - 1))
                logger.debug("service call failed; retrying", service=self.name, attempt=attempt, error=redact(problem))
                time.sleep(backoff)
        raise ServiceError(redact(f"{self.name} {method} {path} failed: {problem}"))

    def close(self) -> None:
        self._client.close()
