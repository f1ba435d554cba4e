"""`SqlSession.stream_checkins`: the source's check-ins as frames read by one scan, in the
engine's columns, and (PostgreSQL) in one snapshot that no writer waits for."""

from __future__ import annotations

from collections.abc import Iterator

import adbc_driver_postgresql.dbapi as pg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from montage_vec.config import load_settings
from montage_vec.engine.schema import CHECKIN_SCHEMA
from montage_vec.stores import SqlSession, open_store
from tests.support.data import AS_OF, SyntheticDatabase, checkin, days, load_checkins, load_frame, new_id

BATCH_ROWS = 50


@pytest.fixture
def session(database_url: str) -> Iterator[SqlSession]:
    with open_store(load_settings(database_url=database_url).database()) as store, store.session() as opened:
        yield opened


def test_the_scan_returns_every_checkin_in_frames_of_about_the_rows_asked(
    database_url: str, session: SqlSession
) -> None:
    load_frame(database_url, SyntheticDatabase(database_url, users=20).frame())

    frames = list(session.stream_checkins(BATCH_ROWS))

    filled = [frame.height for frame in frames if frame.height]
    assert len(filled) > 1
    assert max(filled) <= 4 * BATCH_ROWS  # PostgreSQL sizes batches by an estimate of their bytes
    assert_frame_equal(pl.concat(frames).sort("id"), session.source_checkins().sort("id"))
    assert pl.concat(frames).schema["tags"] == CHECKIN_SCHEMA["tags"]


def test_a_source_without_rows_still_gives_its_columns(session: SqlSession) -> None:
    session.migrate()

    frames = list(session.stream_checkins(BATCH_ROWS))

    assert frames and all(frame.is_empty() for frame in frames)
    assert frames[0].schema == session.source_checkins().schema


@pytest.mark.postgres
def test_an_open_scan_blocks_no_writer_and_reads_one_snapshot(postgres_url: str) -> None:
    user = new_id()
    rows = [checkin(user, AS_OF - days(i + 1)) for i in range(3 * BATCH_ROWS)]
    load_checkins(postgres_url, rows)
    store = open_store(load_settings(database_url=postgres_url).database())
    session = store.session()
    frames = session.stream_checkins(BATCH_ROWS)
    first = next(frames)

    late = new_id()
    with pg.connect(postgres_url, autocommit=True) as writer, writer.cursor() as cursor:
        cursor.execute("SET lock_timeout = '5s'")  # fails, rather than hangs, if the scan blocked it
        cursor.execute(f"UPDATE checkins SET privacy = 'private' WHERE id = '{rows[-1]['id']}'")
        cursor.execute(
            "INSERT INTO checkins (id, user_id, created_at, updated_at, privacy, tags) "
            f"VALUES ('{late}', '{user}', now(), now(), 'public', ARRAY[]::TEXT[])"
        )
    scanned = pl.concat([first, *frames])
    session.close()
    store.close()

    assert scanned.height == len(rows)
    assert late not in scanned["id"].to_list()
    assert scanned.filter(pl.col("id") == rows[-1]["id"])["privacy"].to_list() == ["public"]
