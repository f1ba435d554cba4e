"""A user whose montages the database rejects is isolated, put on the retry list and retried."""

from __future__ import annotations

import adbc_driver_postgresql.dbapi as pg
import pytest

from tests.helpers import checkin, days, expected_montages, new_id, query, stored_montages
from tests.job._support import AS_OF, Checkins, assert_matches_recompute, montages_by_user, run_once, watermark


def _execute(url: str, *statements: str) -> None:
    with pg.connect(url, autocommit=True) as connection, connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql)


def _reject_montages_of(url: str, user_id: str) -> None:
    """A trigger that refuses every montage row of one user (SQLSTATE P0001, a data error)."""
    _execute(
        url,
        f"""
        CREATE FUNCTION test_reject_user() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.user_id = '{user_id}'::uuid THEN RAISE EXCEPTION 'montage rejected by test trigger'; END IF;
            RETURN NEW;
        END $$
        """,
        "CREATE TRIGGER test_reject BEFORE INSERT OR UPDATE ON montages "
        "FOR EACH ROW EXECUTE FUNCTION test_reject_user()",
    )


@pytest.mark.postgres
def test_rejected_user_is_isolated_and_retried(postgres_url: str, run_cli) -> None:
    data = Checkins(postgres_url)
    users = sorted(new_id() for _ in range(6))
    bad = users[3]
    data.add_many(checkin(user, AS_OF - days(i + 1), tags=["coffee"]) for user in users for i in range(3))
    data.put([])  # migrate before installing the trigger
    _reject_montages_of(postgres_url, bad)

    first = run_once(run_cli, postgres_url, AS_OF, "--batch-size", "6").log("Batch job completed")
    assert (first["processed"], first["successful"], first["errors"]) == (6, 5, 1)
    assert set(montages_by_user(postgres_url)) == set(users) - {bad}
    good_rows = [row for row in data.all() if row["user_id"] != bad]
    assert stored_montages(postgres_url) == expected_montages(good_rows, AS_OF)
    retry = query(postgres_url, "SELECT user_id::VARCHAR AS user_id, attempts, error FROM montage_retry_users")
    assert retry["user_id"].to_list() == [bad]
    assert retry["attempts"].to_list() == [1]
    assert retry["error"][0].startswith("DataStoreError: database rejected the data (P0001)")
    # The run completed, so the watermark moved; the retry list carries the user instead.
    assert watermark(postgres_url) is not None

    data.add(users[0], AS_OF - days(0.5))
    second = run_once(run_cli, postgres_url, AS_OF).log("Batch job completed")
    # users[0] (changed), users[5] (its last row is inside the overlap) and the retried user.
    assert (second["processed"], second["successful"], second["errors"]) == (3, 2, 1)
    assert query(postgres_url, "SELECT attempts FROM montage_retry_users")["attempts"].to_list() == [2]

    _execute(postgres_url, "DROP TRIGGER test_reject ON montages")
    third = run_once(run_cli, postgres_url, AS_OF).log("Batch job completed")
    # The retried user, plus users[0] whose new row is inside the overlap.
    assert (third["processed"], third["successful"], third["errors"]) == (2, 2, 0)
    assert query(postgres_url, "SELECT count(*) AS n FROM montage_retry_users")["n"][0] == 0
    assert_matches_recompute(postgres_url, data.all(), AS_OF)


@pytest.mark.postgres
def test_retry_list_keeps_the_databases_reason(postgres_url: str, run_cli) -> None:
    """Regression: the error used to be cut to the driver's first line ("IO: [libpq] Failed to
    execute query '"), because the job's statements start with a newline."""
    data = Checkins(postgres_url)
    user = new_id()
    data.add(user, AS_OF - days(1))
    _reject_montages_of(postgres_url, user)
    result = run_once(run_cli, postgres_url, AS_OF)
    assert result.log("Batch job completed")["errors"] == 1
    [error] = query(postgres_url, "SELECT error FROM montage_retry_users")["error"].to_list()
    assert "montage rejected by test trigger" in error
