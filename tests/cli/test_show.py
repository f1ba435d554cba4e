"""`montage-vec show --json`: one JSON document on stdout, on both backends, including stored
timestamps that no Python datetime holds. (The listing: tests/cli/test_cli.py; read-only
files: tests/cli/test_no_surprising_writes.py.)"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.support.cli import RunCli, parse_logs, run_once
from tests.support.data import AS_OF, checkin, days, load_checkins, montage_ids, new_id
from tests.support.database import execute, query


def shown_document(run_cli: RunCli, url: str, user: str, **env: str) -> dict[str, Any]:
    result = run_cli("show", "--user-id", user, "--json", env={"DATABASE_URL": url, **env})
    assert result.exit_code == 0, result.everything()
    document: dict[str, Any] = json.loads(result.stdout)  # the whole of stdout is one document
    return document


def test_json_document_nests_each_montages_items(database_url: str, run_cli: RunCli) -> None:
    user = new_id()
    rows = [
        checkin(user, AS_OF - days(i + 1), tags=["Coffee"], text_content=f"cup {i}", location_name="Café Ü")
        for i in range(3)
    ]
    load_checkins(database_url, rows)
    completed = run_once(run_cli, database_url)
    ids = montage_ids(database_url)

    document = shown_document(run_cli, database_url, user.upper())

    assert document["user_id"] == user
    general, coffee = document["montages"]
    job_id = completed.log("Batch job completed")["job_id"]
    assert {key: general[key] for key in ("id", "kind", "interest", "item_count", "valid_until", "job_id")} == {
        "id": ids[(user, "general", "")], "kind": "general", "interest": "", "item_count": 3, "valid_until": None,
        "job_id": job_id,
    }  # fmt: skip
    assert (coffee["id"], coffee["kind"], coffee["interest"]) == (
        ids[(user, "interest", "coffee")],
        "interest",
        "coffee",
    )
    # The third-newest coffee (AS_OF - 3 days) leaves the 30-day window on June 28.
    assert coffee["valid_until"] == "2026-06-28T00:00:00+00:00"
    stored = query(database_url, f"SELECT generated_at FROM montages WHERE id = '{general['id']}'")["generated_at"][0]
    assert general["generated_at"] == stored.isoformat()  # ISO 8601, UTC ("+00:00"), to the microsecond
    newest = general["items"][0]
    assert [item["position"] for item in general["items"]] == [0, 1, 2]
    assert newest["checkin_id"] == rows[0]["id"] and newest["checkin_created_at"] == rows[0]["created_at"].isoformat()
    assert newest["widget_type"] == "text"
    assert newest["widget_metadata"]["text"] == "cup 0" and newest["widget_metadata"]["tags"] == ["coffee"]
    assert [item["checkin_id"] for item in coffee["items"]] == [row["id"] for row in rows]


def test_a_user_without_montages_is_an_empty_list(duckdb_url: str, run_cli: RunCli) -> None:
    load_checkins(duckdb_url, [])
    stranger = new_id()

    assert shown_document(run_cli, duckdb_url, stranger) == {"user_id": stranger, "montages": []}


@pytest.mark.parametrize(
    ("stored", "shown"),
    [("infinity", "infinity"), ("10000-01-01 00:00:00+00", "10000-01-01 00:00:00+00")],
    ids=["infinity", "year 10000"],
)
def test_json_keeps_the_databases_text_for_what_no_datetime_holds(
    database_url: str, run_cli: RunCli, stored: str, shown: str
) -> None:
    user = new_id()
    load_checkins(database_url, [checkin(user, AS_OF - days(i + 1), tags=["coffee"]) for i in range(3)])
    run_once(run_cli, database_url)
    execute(database_url, f"UPDATE montages SET valid_until = TIMESTAMPTZ '{stored}' WHERE kind = 'interest'")

    general, coffee = shown_document(run_cli, database_url, user)["montages"]

    assert coffee["valid_until"] == shown
    assert general["valid_until"] is None
    assert datetime.fromisoformat(general["generated_at"]).utcoffset() == timedelta(0)


def test_json_logs_go_to_stderr(duckdb_url: str, run_cli: RunCli) -> None:
    """With DEBUG=true, `show` logs its configuration: on stderr, so stdout stays one document."""
    user = new_id()
    load_checkins(duckdb_url, [checkin(user, AS_OF - days(1))])
    run_once(run_cli, duckdb_url)

    result = run_cli("show", "--user-id", user, "--json", env={"DATABASE_URL": duckdb_url, "DEBUG": "true"})

    assert result.exit_code == 0, result.everything()
    assert json.loads(result.stdout)["montages"][0]["kind"] == "general"
    assert "effective configuration" in [entry["message"] for entry in parse_logs(result.stderr)]
