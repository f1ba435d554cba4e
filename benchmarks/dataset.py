"""The data set: deterministic synthetic check-ins, bulk-loaded, and the 1% change before the incremental run."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa

from benchmarks.database import BenchDatabase
from benchmarks.duck_database import DuckDatabase
from montage_vec.datagen import SyntheticSpec, iter_checkin_batches
from montage_vec.stores.migrations import unkeyed_checkins_ddl
from montage_vec.stores.render import Timestamp

_HEX_POSITIONS = np.array([i for i in range(36) if i not in (8, 13, 18, 23)])
_HEX_VALUE = np.zeros(256, np.uint8)
_HEX_VALUE[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint8)
_CHECKIN_COLUMNS = (
    "id", "user_id", "created_at", "updated_at", "deleted_at", "privacy", "text_content", "media_url",
    "media_type", "thumbnail_url", "location_name", "tags",
)  # fmt: skip


# Users generated and COPied per batch: the benchmark's own memory stays flat in the number of
# users (the generator's default of 50,000 peaked at about 1 GB).
LOAD_USERS_PER_BATCH = 5_000


@dataclass(frozen=True)
class LoadResult:
    users: int
    checkins: int
    generate_seconds: float
    load_seconds: float
    index_seconds: float
    size_bytes: int


@dataclass(frozen=True)
class ChangeResult:
    users: int
    retagged_users: int
    deleted_users: int
    inserting_users: int
    rows_touched: int
    updated_at: datetime


def uuid_array(text: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Canonical lower-case uuid text -> the arrow.uuid extension type (binary COPY into uuid columns)."""
    array = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
    n = len(array)
    _, offsets_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int32)[array.offset : array.offset + n + 1]
    if array.null_count or not np.all(np.diff(offsets) == 36):
        raise ValueError("expected canonical uuid text without nulls")
    chars = np.frombuffer(data_buffer, np.uint8)[offsets[0] : offsets[-1]].reshape(n, 36)[:, _HEX_POSITIONS]
    nibbles = _HEX_VALUE[chars]
    raw = np.ascontiguousarray((nibbles[:, 0::2] << 4) | nibbles[:, 1::2])
    storage = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), n, [None, pa.py_buffer(raw)])
    return pa.ExtensionArray.from_storage(pa.uuid(), storage)


def load_checkins(db: BenchDatabase, spec: SyntheticSpec) -> LoadResult:
    """Create `checkins` without indexes, bulk-load it, then build the keys and indexes and run the DDL."""
    checkin_ddl = [s for s in db.ddl() if '"checkins"' in s]
    create_table = [s.replace("{checkins}", '"checkins"') for s in unkeyed_checkins_ddl(db.backend)]
    indexes = ['ALTER TABLE "checkins" ADD PRIMARY KEY ("id")'] + [s for s in checkin_ddl if "INDEX" in s.upper()]
    db.drop_tables("checkins")
    for statement in create_table:
        db.execute(statement)
    generate = load = 0.0
    rows = 0
    started = time.perf_counter()
    for batch in iter_checkin_batches(spec, users_per_batch=LOAD_USERS_PER_BATCH):
        generated = time.perf_counter()
        generate += generated - started
        rows += batch.num_rows
        _append(db, batch)
        started = time.perf_counter()
        load += started - generated
    indexed = time.perf_counter()
    for statement in indexes:
        db.execute(statement)
    db.settle_checkins()
    db.migrate()  # everything else; `checkins` and its indexes exist already (IF NOT EXISTS)
    index_seconds = time.perf_counter() - indexed
    return LoadResult(spec.users, rows, generate, load, index_seconds, db.size_bytes())


def _append(db: BenchDatabase, batch: pa.Table) -> None:
    if db.backend == "postgresql":
        # COPY (binary) straight into the uuid columns.
        uuids = {name: uuid_array(batch[name]) for name in ("id", "user_id")}
        columns = [uuids.get(name, batch[name]) for name in batch.column_names]
        db.ingest("checkins", pa.Table.from_arrays(columns, names=batch.column_names), create=False)
        return
    assert isinstance(db, DuckDatabase)
    select_list = ", ".join(f'"{c}"::UUID' if c in ("id", "user_id") else f'"{c}"' for c in _CHECKIN_COLUMNS)
    db.insert_select("checkins", batch, select_list)


def sample_users(db: BenchDatabase, count: int, seed: int) -> list[str]:
    """A deterministic pseudo-random sample of users (ordered by a seeded hash)."""
    found = db.rows(
        f"""SELECT "user_id"::VARCHAR FROM (SELECT DISTINCT "user_id" FROM "checkins") AS d
            ORDER BY md5("user_id"::VARCHAR || '/sample/{int(seed)}') LIMIT {int(count)}"""  # noqa: S608 - ints
    )
    return [str(row[0]) for row in found]


def change_users(db: BenchDatabase, users: int, fraction: float, seed: int, as_of: datetime) -> ChangeResult:
    """Change `fraction` of the users, a third each: re-tag their 3 newest check-ins, soft-delete their
    2 newest, or give them 3 new check-ins. Every touched row gets `updated_at` after everything loaded."""
    wanted = max(1, round(users * fraction))
    latest: datetime = db.scalar('SELECT max("updated_at") FROM "checkins"')
    stamp = latest + timedelta(minutes=1)
    at = Timestamp(stamp).sql("postgresql")
    db.drop_tables("bench_changed_users")
    db.execute(
        f"""CREATE TABLE "bench_changed_users" AS
            SELECT "user_id", (row_number() OVER (ORDER BY "k") - 1) % 3 AS "action"
            FROM (SELECT "user_id", md5("user_id"::VARCHAR || '/change/{int(seed)}') AS "k"
                  FROM (SELECT DISTINCT "user_id" FROM "checkins") AS d ORDER BY "k" LIMIT {wanted}) AS s"""  # noqa: S608
    )
    newest = """SELECT "id" FROM (
        SELECT c."id", row_number() OVER (PARTITION BY c."user_id" ORDER BY c."created_at" DESC, c."id" DESC) AS "rn"
        FROM "checkins" c JOIN "bench_changed_users" u ON u."user_id" = c."user_id" WHERE u."action" = {action}
    ) AS x WHERE "rn" <= {count}"""
    new_rows = ", ".join(f"({n}, {Timestamp(as_of - timedelta(hours=n)).sql('postgresql')})" for n in (1, 2, 3))
    with db.transaction():
        db.execute(
            f"""UPDATE "checkins" SET "tags" = ARRAY['  Bench-Edit ', 'coffee', 'COFFEE'], "updated_at" = {at}
                WHERE "id" IN ({newest.format(action=0, count=3)})"""  # noqa: S608 - constants and literals
        )
        db.execute(
            f"""UPDATE "checkins" SET "deleted_at" = {at}, "updated_at" = {at}
                WHERE "deleted_at" IS NULL AND "id" IN ({newest.format(action=1, count=2)})"""  # noqa: S608
        )
        db.execute(
            f"""INSERT INTO "checkins" ("id", "user_id", "created_at", "updated_at", "deleted_at", "privacy",
                                        "text_content", "location_name", "tags")
                SELECT md5(u."user_id"::VARCHAR || '/bench-new/' || CAST(g."n" AS VARCHAR))::UUID, u."user_id",
                       g."created_at", {at}, NULL, 'public', 'Benchmark check-in', 'Home',
                       ARRAY['Bench-New', ' hiking ']
                FROM "bench_changed_users" u CROSS JOIN (VALUES {new_rows}) AS g("n", "created_at")
                WHERE u."action" = 2"""  # noqa: S608 - constants and literals
        )
    by_action = dict(db.rows('SELECT "action", count(*) FROM "bench_changed_users" GROUP BY "action"'))
    touched = int(db.scalar(f'SELECT count(*) FROM "checkins" WHERE "updated_at" = {at}'))  # noqa: S608
    db.drop_tables("bench_changed_users")
    return ChangeResult(
        users=sum(int(v) for v in by_action.values()),
        retagged_users=int(by_action.get(0, 0)),
        deleted_users=int(by_action.get(1, 0)),
        inserting_users=int(by_action.get(2, 0)),
        rows_touched=touched,
        updated_at=stamp,
    )
