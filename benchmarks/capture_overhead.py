"""What the change-capture triggers cost the application's writes.

    .venv/bin/python -m benchmarks.capture_overhead --rows 100000

On a fresh PostgreSQL database migrated by the product (so `checkins` carries the capture
triggers), it times the same writes with the triggers enabled and disabled, alternating,
`--repeat` times each, and prints a Markdown table of the medians: one bulk INSERT of
`--rows` check-ins, an UPDATE and a DELETE of all of them, and `--single-rows` one-row
INSERT statements each in its own transaction (what an application's request does).
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import adbc_driver_postgresql.dbapi as pg

from montage_vec.config import load_settings
from montage_vec.stores import open_store

DEFAULT_ADMIN_URL = "postgresql://root@127.0.0.1:5432/postgres"
USERS_PER_ROWS = 20  # about 20 check-ins per user, as in the main benchmark

STAGE_ROWS = """
CREATE UNLOGGED TABLE "bench_rows" AS
SELECT gen_random_uuid() AS "id",
       ('00000000-0000-4000-8000-' || lpad(to_hex(n % {users}), 12, '0'))::uuid AS "user_id",
       now() - n * interval '1 minute' AS "created_at", now() AS "updated_at",
       NULL::timestamptz AS "deleted_at", 'public' AS "privacy", 'note ' || n AS "text_content",
       NULL::text AS "media_url", NULL::text AS "media_type", NULL::text AS "thumbnail_url",
       NULL::text AS "location_name", ARRAY['coffee', 'tag' || (n % 7)] AS "tags"
FROM generate_series(1, {rows}) AS n
"""
BULK_INSERT = 'INSERT INTO "checkins" SELECT * FROM "bench_rows"'
BULK_UPDATE = 'UPDATE "checkins" SET "updated_at" = now(), "text_content" = "text_content" || \'!\''
BULK_DELETE = 'DELETE FROM "checkins"'
SINGLE_INSERT = """
INSERT INTO "checkins" ("id", "user_id", "created_at", "updated_at", "tags")
VALUES ($1::uuid, $2::uuid, now(), now(), ARRAY['coffee'])
"""
RESET = ['TRUNCATE "checkins"', 'TRUNCATE "montage_changes"', 'VACUUM ANALYZE "checkins"']


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.capture_overhead", description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--single-rows", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pg-admin-url", default=DEFAULT_ADMIN_URL)
    args = parser.parse_args(argv)
    name = f"montage_capture_bench_{uuid.uuid4().hex[:8]}"
    admin(args.pg_admin_url, f'CREATE DATABASE "{name}"')
    url = args.pg_admin_url.rsplit("/", 1)[0] + "/" + name
    try:
        with open_store(load_settings(database_url=url).database()) as store, store.session() as session:
            session.migrate()  # the job's own checkins table, with its capture triggers
        print(measure(url, args.rows, args.single_rows, args.repeat))
    finally:
        admin(args.pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def measure(url: str, rows: int, single_rows: int, repeat: int) -> str:
    with pg.connect(url, autocommit=True) as connection:
        run(connection, STAGE_ROWS.format(users=max(1, rows // USERS_PER_ROWS), rows=int(rows)))
        timings: dict[tuple[str, bool], list[float]] = {}
        for attempt in range(repeat):
            # Alternate which goes first, so that cache warm-up does not favour one side.
            for enabled in (True, False) if attempt % 2 == 0 else (False, True):
                run(connection, f'ALTER TABLE "checkins" {"ENABLE" if enabled else "DISABLE"} TRIGGER USER')
                for label, seconds in one_round(connection, rows, single_rows).items():
                    timings.setdefault((label, enabled), []).append(seconds)
                run(connection, 'ALTER TABLE "checkins" ENABLE TRIGGER USER')
    users = max(1, rows // USERS_PER_ROWS)
    lines = [
        f"| write ({rows:,} check-ins, ~{users:,} users) | without triggers | with triggers | overhead |",
        "|---|---:|---:|---:|",
    ]
    for label in dict.fromkeys(label for label, _ in timings):
        without = statistics.median(timings[(label, False)])
        with_triggers = statistics.median(timings[(label, True)])
        lines.append(f"| {label} | {without:.3f} s | {with_triggers:.3f} s | {with_triggers / without - 1:+.0%} |")
    return "\n".join(lines)


def one_round(connection: Any, rows: int, single_rows: int) -> dict[str, float]:
    for statement in RESET:
        run(connection, statement)
    timed = {
        f"bulk INSERT ... SELECT of {rows:,} rows": lambda: run(connection, BULK_INSERT),
        f"UPDATE of {rows:,} rows": lambda: run(connection, BULK_UPDATE),
        f"DELETE of {rows:,} rows": lambda: run(connection, BULK_DELETE),
        f"{single_rows:,} one-row INSERTs, one transaction each": lambda: single_inserts(connection, single_rows),
    }
    return {label: seconds_of(action) for label, action in timed.items()}


def single_inserts(connection: Any, count: int) -> None:
    with connection.cursor() as cursor:
        for _ in range(count):
            cursor.execute(SINGLE_INSERT, [str(uuid.uuid4()), str(uuid.uuid4())])


def seconds_of(action: Callable[[], None]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def run(connection: Any, sql: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql)


def admin(admin_url: str, sql: str) -> None:
    with pg.connect(admin_url, autocommit=True) as connection:
        run(connection, sql)


if __name__ == "__main__":
    main()
