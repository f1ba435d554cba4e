"""End-to-end runs of `montage-vec once` on an application source that breaks two assumptions
the engine once made: privacy levels stored re-cased and padded (contract rule 1), and a view
over a union that returns one check-in twice (rule 8). Both backends."""

from __future__ import annotations

import json
from typing import Any

from montage_vec.config import load_settings
from montage_vec.stores import open_store
from tests.support.cli import RunCli, run_once
from tests.support.data import AS_OF, checkin, days, new_id, stored_montages
from tests.support.database import execute
from tests.support.database import sql_literal as literal

COLUMNS = (
    "id", "user_id", "created_at", "updated_at", "deleted_at", "privacy", "text_content", "media_url", "media_type",
    "thumbnail_url", "location_name", "tags",
)  # fmt: skip


def table(relation: str) -> str:
    """A contract-shaped table without a primary key, as an application's archive might be."""
    return f"""CREATE TABLE {relation} (
        id uuid, user_id uuid NOT NULL, created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL,
        deleted_at timestamptz, privacy text, text_content text, media_url text, media_type text,
        thumbnail_url text, location_name text, tags text[]
    )"""


def insert(url: str, relation: str, rows: list[dict[str, Any]]) -> None:
    values = ", ".join("(" + ", ".join(literal(row[column]) for column in COLUMNS) + ")" for row in rows)
    execute(url, f"INSERT INTO {relation} ({', '.join(COLUMNS)}) VALUES {values}")


def test_recased_privacy_counts_and_a_check_in_in_both_halves_of_a_union_counts_once(
    database_url: str, run_cli: RunCli
) -> None:
    url = database_url
    execute(
        url,
        "CREATE SCHEMA app",
        table("app.checkins_live"),
        table("app.checkins_archive"),
        "CREATE VIEW app.checkins AS SELECT * FROM app.checkins_live UNION ALL SELECT * FROM app.checkins_archive",
    )
    copied_user, cased_user = sorted(new_id() for _ in range(2))
    copied = checkin(copied_user, AS_OF - days(1), tags=["coffee"], text_content="updated", updated_at=AS_OF - days(1))
    live = [copied, checkin(copied_user, AS_OF - days(2), tags=["coffee"])]
    live += [checkin(cased_user, AS_OF - days(n), privacy=privacy) for n, privacy in ((1, "Public"), (2, " FRIENDS"))]
    # The archive still holds an older version of `copied`: the same id, updated earlier. Only
    # updated_at picks the live copy: the tie-break after it would take "original" < "updated".
    archived = {**copied, "text_content": "original", "updated_at": AS_OF - days(3)}
    insert(url, "app.checkins_live", live)
    insert(url, "app.checkins_archive", [archived])
    env = {"MONTAGE_SOURCE": "app.checkins"}
    assert run_cli("migrate", env={"DATABASE_URL": url, **env}).exit_code == 0

    run_once(run_cli, url, env=env)

    montages, items = stored_montages(url)
    # Two distinct coffee check-ins are fewer than MIN_OCCURRENCE (3): no interest montage.
    assert [(m[0], m[1], m[3]) for m in montages] == [(copied_user, "general", 2), (cased_user, "general", 2)]
    shown = {(item[0], item[4]): json.loads(item[7]) for item in items}
    assert shown[(copied_user, copied["id"])]["text"] == "updated"
    assert [shown[(cased_user, row["id"])]["privacy"] for row in live[2:]] == ["public", "friends"]

    # Reconciliation judges the stored levels as the engine does: nobody to recompute, until
    # the levels change without an updated_at that says so.
    assert reconciled_users(url) == []
    execute(url, f"UPDATE app.checkins_live SET privacy = 'Private ' WHERE user_id = '{cased_user}'")
    assert reconciled_users(url) == [cased_user]


def reconciled_users(url: str) -> list[str]:
    """The users the reconciliation query finds, with the default privacy levels."""
    settings = load_settings(database_url=url, montage_source="app.checkins")
    with open_store(settings.database()) as store:
        session = store.session()
        try:
            return sorted(session.reconcile_users(sorted(settings.montage_params().privacy_included)).to_list())
        finally:
            session.close()
