"""A chunk write built from a few users' tags, and a session to write it with: for the store tests
that drive SqlSession.write_chunk directly."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import polars as pl

from montage_vec.config import load_settings
from montage_vec.engine import compute_montages
from montage_vec.stores import ChunkWrite, SqlSession, open_store
from montage_vec.stores.records import Lease
from tests.support.data import AS_OF, CHECKIN_FRAME_SCHEMA, checkin, checkin_frame


@contextmanager
def session_for(url: str) -> Iterator[SqlSession]:
    with open_store(load_settings(database_url=url).database()) as store, store.session() as session:
        yield session


def chunk_of(users: dict[str, list[str]], job_id: str = "job-1", lease: Lease | None = None) -> ChunkWrite:
    """The montages of users with one check-in a day per tag given ("": untagged); the n-th
    check-in of a user has the same id in every chunk."""
    rows = [
        checkin(
            user, AS_OF - timedelta(days=n + 1), tags=[tag] if tag else [], id=str(uuid.uuid5(uuid.UUID(user), str(n)))
        )
        for user, tags in users.items()
        for n, tag in enumerate(tags)
    ]
    computed = compute_montages(checkin_frame(rows).select(list(CHECKIN_FRAME_SCHEMA)), AS_OF)
    return ChunkWrite(
        job_id=job_id,
        generated_at=AS_OF,
        cache_ttl=timedelta(hours=1),
        user_ids=pl.Series(list(users)),
        montages=computed.montages,
        items=computed.items,
        lease=lease,
    )
