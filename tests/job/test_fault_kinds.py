"""The same kind of database fault ends a run the same way on DuckDB and PostgreSQL.

tests/stores/test_faults.py proves each backend classifies its driver's errors; these tests
prove what a run then does with each kind: a data error isolates the user behind it, a
schema error fails the run with exit 3, a permission error with exit 77; in every failure
the watermark stays where it was.
"""

from __future__ import annotations

import uuid

import pytest

from tests.support.data import AS_OF, checkin, days, load_checkins, new_id, watermark
from tests.support.database import execute, query

EXIT_SCHEMA = 3
EXIT_PERMISSION = 77


def _three_users(url: str) -> list[str]:
    users = sorted(new_id() for _ in range(3))
    load_checkins(url, [checkin(user, AS_OF - days(i + 1), tags=["coffee"]) for user in users for i in range(3)])
    return users


def test_a_data_error_isolates_the_user_behind_it(database_url: str, run_cli) -> None:
    """A stranger's montage occupies the id the job derives for one user's general montage, so
    writing that user breaks the primary key: that user alone goes on the retry list."""
    users = _three_users(database_url)
    blocked = users[1]
    execute(
        database_url,
        f"""INSERT INTO montages (id, user_id, kind, interest, item_count, generated_at, cache_expires_at, job_id)
        VALUES (md5('{blocked}' || '/general/')::UUID, '{uuid.uuid4()}'::UUID, 'general', '', 1,
                TIMESTAMPTZ '2026-01-01 00:00:00+00', TIMESTAMPTZ '2026-01-01 01:00:00+00', 'someone else')""",
    )
    # Named users: a full run would also process the stranger, and remove its montage first.
    args = [arg for user in users for arg in ("--user-id", user)]

    result = run_cli("once", "--as-of", AS_OF.isoformat(), *args, env={"DATABASE_URL": database_url})

    assert result.exit_code == 0, result.stdout + result.stderr
    summary = result.log("Batch job completed")
    assert (summary["processed"], summary["successful"], summary["errors"]) == (3, 2, 1)
    retry = query(database_url, "SELECT user_id::VARCHAR AS user_id, error FROM montage_retry_users")
    assert retry["user_id"].to_list() == [blocked]
    assert "database rejected the data" in retry["error"][0], retry["error"][0]
    owners = set(query(database_url, "SELECT user_id::VARCHAR AS user_id FROM montages")["user_id"])
    assert {users[0], users[2]} <= owners
    assert blocked not in owners


def test_a_schema_error_fails_the_run_with_exit_3(database_url: str, run_cli) -> None:
    """A column the job writes is gone: the run fails before any chunk, naming table and column."""
    _three_users(database_url)
    execute(database_url, "ALTER TABLE montage_items DROP COLUMN widget_type")

    result = run_cli("once", "--as-of", AS_OF.isoformat(), env={"DATABASE_URL": database_url})

    assert result.exit_code == EXIT_SCHEMA, result.stdout + result.stderr
    failed = result.log("Batch job failed")
    assert (failed["status"], failed["error_type"]) == ("failed", "SchemaStoreError")
    assert "table montage_items lacks column(s) widget_type" in failed["error"], failed["error"]
    assert "MONTAGE_SCHEMA" in result.stderr
    assert watermark(database_url) is None
    assert "transient error; retrying the chunk on a new connection" not in [line["message"] for line in result.logs]


@pytest.mark.postgres
def test_a_permission_error_fails_the_run_with_exit_77(postgres_url: str, run_cli) -> None:
    """A role that may read check-ins but not write montages: the run fails at once, exit 77.

    (The embedded DuckDB file is opened read-write by the job, so it has no such fault.)"""
    _three_users(postgres_url)
    role = f"montage_reader_{uuid.uuid4().hex[:8]}"
    database = postgres_url.rsplit("/", 1)[1]
    execute(
        postgres_url,
        f'CREATE ROLE "{role}" LOGIN',
        f'GRANT CONNECT ON DATABASE "{database}" TO "{role}"',
        f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"',
    )
    reader_url = postgres_url.replace("root@", f"{role}@", 1)
    try:
        result = run_cli("once", "--as-of", AS_OF.isoformat(), env={"DATABASE_URL": reader_url})
    finally:
        execute(postgres_url, f'DROP OWNED BY "{role}"', f'DROP ROLE "{role}"')

    assert result.exit_code == EXIT_PERMISSION, result.stdout + result.stderr
    assert "database refused access (42501)" in result.stderr, result.stderr
    assert watermark(postgres_url) is None
    assert query(postgres_url, "SELECT count(*) AS n FROM montages")["n"][0] == 0
