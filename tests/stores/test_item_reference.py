"""montage_items.montage_id references montages.id on PostgreSQL, checked per statement
(sql/postgresql/008_item_reference_per_statement.sql): the guarantees of the foreign key it
replaced, exercised through the driver with no montage-vec code in between.

Covers: an item without its montage is refused (23503) whether inserted or updated onto a
missing id, alone or among valid rows; deleting montages deletes their items and only theirs;
a referenced montage's id cannot change; montages cannot be truncated without their items; and
an inserting transaction holds its montages against a concurrent delete until it ends.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import adbc_driver_postgresql.dbapi as pg
import pytest

from montage_vec.config import load_settings
from montage_vec.stores import open_store
from tests.support.database import execute, query

pytestmark = pytest.mark.postgres

FOREIGN_KEY_VIOLATION = "23503"
LOCK_NOT_AVAILABLE = "55P03"


@pytest.fixture
def migrated(postgres_url: str) -> Iterator[str]:
    with open_store(load_settings(database_url=postgres_url).database()) as store, store.session() as session:
        session.migrate()
    yield postgres_url


def insert_montage(montage_id: str, kind: str = "general", interest: str = "") -> str:
    return f"""
    INSERT INTO "montages"
        ("id", "user_id", "kind", "interest", "item_count", "generated_at", "cache_expires_at", "job_id")
    VALUES ('{montage_id}', '{uuid.uuid4()}', '{kind}', '{interest}', 1, now(), now(), 'test-job')
    """


def insert_items(*montage_ids: str) -> str:
    rows = ", ".join(
        f"('{montage_id}', {position}, '{uuid.uuid4()}', now(), 'photo', '{{}}')"
        for position, montage_id in enumerate(montage_ids)
    )
    return f"""
    INSERT INTO "montage_items"
        ("montage_id", "position", "checkin_id", "checkin_created_at", "widget_type", "widget_metadata")
    VALUES {rows}
    """


def sqlstate_of(url: str, *statements: str) -> str | None:
    """The SQLSTATE the statements fail with in one transaction (rolled back), None when they pass."""
    with pg.connect(url) as connection, connection.cursor() as cursor:
        try:
            for sql in statements:
                cursor.execute(sql)
                if cursor.description:  # the driver may stream a query's rows, and its errors, only when read
                    cursor.fetchall()
        except pg.Error as exc:
            return exc.sqlstate
        finally:
            connection.rollback()
    return None


def items_of(url: str, montage_id: str) -> int:
    frame = query(url, f"""SELECT count(*) AS "n" FROM "montage_items" WHERE "montage_id" = '{montage_id}'""")
    return int(frame["n"][0])


def test_an_item_of_a_missing_montage_is_refused_even_among_valid_ones(migrated: str) -> None:
    present, missing = str(uuid.uuid4()), str(uuid.uuid4())
    execute(migrated, insert_montage(present))

    assert sqlstate_of(migrated, insert_items(missing)) == FOREIGN_KEY_VIOLATION
    assert sqlstate_of(migrated, insert_items(present, present, missing)) == FOREIGN_KEY_VIOLATION
    assert sqlstate_of(migrated, insert_items(present, present)) is None


def test_the_refusal_names_the_missing_montage(migrated: str) -> None:
    missing = str(uuid.uuid4())
    with pg.connect(migrated) as connection, connection.cursor() as cursor, pytest.raises(pg.Error) as raised:
        cursor.execute(insert_items(missing))
    assert missing in str(raised.value)


def test_a_montage_and_its_items_written_in_one_transaction_pass(migrated: str) -> None:
    montage_id = str(uuid.uuid4())
    with pg.connect(migrated) as connection, connection.cursor() as cursor:
        cursor.execute(insert_montage(montage_id))
        cursor.execute(insert_items(montage_id, montage_id))
        connection.commit()
    assert items_of(migrated, montage_id) == 2


def test_moving_items_onto_a_missing_montage_is_refused(migrated: str) -> None:
    montage_id, missing = str(uuid.uuid4()), str(uuid.uuid4())
    execute(migrated, insert_montage(montage_id), insert_items(montage_id))

    moved = f"""UPDATE "montage_items" SET "montage_id" = '{missing}' WHERE "montage_id" = '{montage_id}'"""
    assert sqlstate_of(migrated, moved) == FOREIGN_KEY_VIOLATION
    assert sqlstate_of(migrated, """UPDATE "montage_items" SET "widget_type" = 'note'""") is None


def test_deleting_montages_deletes_their_items_and_only_theirs(migrated: str) -> None:
    doomed, kept = str(uuid.uuid4()), str(uuid.uuid4())
    execute(
        migrated,
        insert_montage(doomed),
        insert_montage(kept),
        insert_items(doomed, doomed, doomed),
        insert_items(kept, kept),
    )

    execute(migrated, f"""DELETE FROM "montages" WHERE "id" = '{doomed}'""")

    assert items_of(migrated, doomed) == 0
    assert items_of(migrated, kept) == 2


def test_a_referenced_montage_keeps_its_id(migrated: str) -> None:
    referenced, unreferenced = str(uuid.uuid4()), str(uuid.uuid4())
    execute(migrated, insert_montage(referenced), insert_montage(unreferenced), insert_items(referenced))

    assert (
        sqlstate_of(migrated, f"""UPDATE "montages" SET "id" = '{uuid.uuid4()}' WHERE "id" = '{referenced}'""")
        == FOREIGN_KEY_VIOLATION
    )
    renamed = f"""UPDATE "montages" SET "id" = '{uuid.uuid4()}' WHERE "id" = '{unreferenced}'"""
    assert sqlstate_of(migrated, renamed) is None
    assert sqlstate_of(migrated, f"""UPDATE "montages" SET "item_count" = 7 WHERE "id" = '{referenced}'""") is None


def test_montages_are_truncated_only_with_their_items(migrated: str) -> None:
    montage_id = str(uuid.uuid4())
    execute(migrated, insert_montage(montage_id), insert_items(montage_id))

    assert sqlstate_of(migrated, 'TRUNCATE "montages"') is not None
    assert items_of(migrated, montage_id) == 1
    execute(migrated, 'TRUNCATE "montages", "montage_items"')
    assert items_of(migrated, montage_id) == 0


def test_an_inserting_transaction_holds_its_montage_against_a_delete(migrated: str) -> None:
    """As the foreign key's check did: a delete of the montage waits until the insert commits,
    and then takes the committed items with it."""
    montage_id = str(uuid.uuid4())
    execute(migrated, insert_montage(montage_id))

    with pg.connect(migrated) as inserting, inserting.cursor() as cursor:
        cursor.execute(insert_items(montage_id, montage_id))
        # A delete locks the row FOR UPDATE first; NOWAIT turns the wait into an error.
        assert (
            sqlstate_of(migrated, f"""SELECT 1 FROM "montages" WHERE "id" = '{montage_id}' FOR UPDATE NOWAIT""")
            == LOCK_NOT_AVAILABLE
        )
        inserting.commit()

    execute(migrated, f"""DELETE FROM "montages" WHERE "id" = '{montage_id}'""")
    assert items_of(migrated, montage_id) == 0
