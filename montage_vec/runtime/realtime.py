"""Regenerating one user's montages on request (ENABLE_REALTIME_GENERATION).

It runs the same chunk path as a batch run for a single user, in its own transaction and
without the run lock: the batch run and a request for the same user serialize on the
user's rows, and either order leaves a full recompute in place.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import polars as pl

from montage_vec.config import Settings
from montage_vec.errors import ConfigError, MontageVecError
from montage_vec.job.chunks import ChunkContext, process_chunk
from montage_vec.job.plan import new_job_id, utc_now
from montage_vec.stores import CheckinSource, Store


def regenerate_user(
    store: Store, settings: Settings, user_id: str, checkin_source: CheckinSource | None = None
) -> dict[str, Any]:
    """Recompute and store one user's montages now; return them as JSON-ready data."""
    try:
        canonical = str(uuid.UUID(user_id))
    except ValueError:
        raise ConfigError(f"not a user id: {user_id!r}") from None
    now = utc_now()
    context = ChunkContext(
        job_id=new_job_id(now, kind="realtime"),
        as_of=now,
        params=settings.montage_params(),
        generated_at=now,
        cache_ttl=settings.cache_ttl,
        analytics=settings.enable_analytics,
    )
    with store.session() as session:
        session.ensure_migrated()
        result = process_chunk(session, checkin_source or session, pl.Series("user_id", [canonical]), context)
        if result.failures:
            raise MontageVecError(f"user {canonical} could not be processed: {result.failures[0][1]}")
        montages, items = session.user_montages(canonical)
    item_rows = items.with_columns(pl.col(pl.Datetime).dt.to_string("iso")).to_dicts()
    for item in item_rows:  # one user's few dozen items, decoded for the JSON answer
        item["widget_metadata"] = json.loads(item["widget_metadata"])
    return {
        "user_id": canonical,
        "job_id": context.job_id,
        "montages": montages.with_columns(pl.col(pl.Datetime).dt.to_string("iso")).to_dicts(),
        "items": item_rows,
    }
