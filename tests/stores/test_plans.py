"""The query plans of the PostgreSQL store's bulk paths, on ~200k synthetic check-ins: an
incremental run's candidate query and a chunk's extraction use their indexes, the extraction
even when the statistics badly underestimate the number of users (as ANALYZE's sample does
on big tables)."""

from __future__ import annotations

from datetime import datetime, timedelta

import adbc_driver_postgresql.dbapi as pg
import polars as pl
import pytest

from montage_vec.datagen import DEFAULT_AS_OF
from montage_vec.stores import Tables, statements
from montage_vec.stores.render import SqlValue, Timestamp, UuidArray, render
from tests.support.data import load_frame, synthetic
from tests.support.database import execute

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def explain(url: str, sql: str) -> str:
    with pg.connect(url) as connection:
        # EXPLAIN cannot be wrapped in the driver's COPY, so ask for the plain protocol.
        with connection.cursor(adbc_stmt_kwargs={"adbc.postgresql.use_copy": "false"}) as cursor:
            cursor.execute(f"EXPLAIN (FORMAT TEXT) {sql}")
            lines = [row[0] for row in cursor.fetchall()]
        connection.rollback()
    return "\n".join(lines)


def incremental_candidates_sql(since: datetime) -> str:
    """The check-in half of an incremental run's candidates, as the store renders it.

    (The montage and retry halves are statements.REVISIT_USERS, on the job's own small tables.)
    """
    return rendered(statements.CHANGED_USERS, since=Timestamp(since))


def extraction_sql(user_ids: pl.Series) -> str:
    """A chunk's extraction query, exactly as SqlSession.extract_checkins renders it."""
    return rendered(statements.EXTRACT_CHECKINS_OF_ARRAY, user_ids=UuidArray.of(user_ids))


def rendered(template: str, **values: SqlValue) -> str:
    return render(template, "postgresql", {**Tables().placeholders(), **values})


def test_bulk_paths_use_their_indexes(postgres_url: str) -> None:
    frame = synthetic(10_200)
    assert 190_000 < frame.height < 215_000
    load_frame(postgres_url, frame)
    execute(postgres_url, "ANALYZE checkins", "ANALYZE montages", "ANALYZE montage_retry_users")
    watermark = frame.filter(pl.col("updated_at") <= DEFAULT_AS_OF)["updated_at"].max()
    assert isinstance(watermark, datetime)

    candidates_plan = explain(postgres_url, incremental_candidates_sql(watermark - timedelta(minutes=10)))
    users = frame["user_id"].unique().sort().head(100)
    extraction_plan = explain(postgres_url, extraction_sql(users))
    print(f"\n-- incremental candidates --\n{candidates_plan}\n-- extraction, 100 users --\n{extraction_plan}")

    assert "checkins_updated_at_idx" in candidates_plan, candidates_plan
    assert "Seq Scan on checkins" not in candidates_plan, candidates_plan
    assert "checkins_user_created_idx" in extraction_plan, extraction_plan
    assert "Seq Scan on checkins" not in extraction_plan, extraction_plan


def test_extraction_probes_the_index_even_when_statistics_see_few_users(postgres_url: str) -> None:
    frame = synthetic(10_200)
    load_frame(postgres_url, frame)
    # 50 distinct users for ~200k rows: 4,000 rows per user, the way a sample of a huge table
    # underestimates them. A 2,500-user chunk then looks like the whole table.
    execute(postgres_url, 'ALTER TABLE checkins ALTER COLUMN "user_id" SET (n_distinct = 50)', "ANALYZE checkins")
    users = frame["user_id"].unique().sort().head(2_500)

    plan = explain(postgres_url, extraction_sql(users))

    assert "checkins_user_created_idx" in plan, plan
    assert "Seq Scan on checkins" not in plan, plan
