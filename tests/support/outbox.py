"""Reading the `montage_events` outbox back, on either backend."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from typing import Any

from tests.support.database import query

STARTED = "montage.batch_job.started"
COMPLETED = "montage.batch_job.completed"
FAILED = "montage.batch_job.failed"
GENERATED = "montage.generated"
INVALIDATED = "montage.cache.invalidated"

EVENTS_QUERY = """
SELECT id::VARCHAR AS id, type, aggregate_id, job_id, occurred_at, payload::VARCHAR AS payload
FROM montage_events ORDER BY occurred_at, type, aggregate_id
"""
MONTAGES_QUERY = """
SELECT id::VARCHAR AS id, user_id::VARCHAR AS user_id, kind, interest, item_count, job_id, generated_at
FROM montages ORDER BY user_id, kind, interest
"""
RUNS_QUERY = "SELECT job_id, status, message FROM montage_job_runs ORDER BY started_at"


def events(url: str, job_id: str | None = None, type: str | None = None) -> list[dict[str, Any]]:
    """The outbox's events, payloads parsed, optionally only one run's and/or one type's."""
    rows = query(url, EVENTS_QUERY).to_dicts()
    for row in rows:
        row["payload"] = json.loads(row["payload"])
    return [r for r in rows if (job_id is None or r["job_id"] == job_id) and (type is None or r["type"] == type)]


def type_counts(rows: list[dict[str, Any]]) -> Counter[str]:
    return Counter(row["type"] for row in rows)


def montages(url: str) -> list[dict[str, Any]]:
    return query(url, MONTAGES_QUERY).to_dicts()


def runs(url: str) -> list[dict[str, Any]]:
    return query(url, RUNS_QUERY).to_dicts()


def md5_uuid(text: str) -> str:
    return str(uuid.UUID(hashlib.md5(text.encode()).hexdigest()))


def expected_event_id(event_type: str, aggregate_id: str, job_id: str) -> str:
    """md5(type || '/' || aggregate || '/' || job_id) as a uuid."""
    return md5_uuid(f"{event_type}/{aggregate_id}/{job_id}")
