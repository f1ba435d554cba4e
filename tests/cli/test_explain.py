"""`montage-vec explain` and a named users' `once --dry-run`: one user's montages explained, checked
against the naive reference on generated users, and the diff a dry run prints agreeing with its counts."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import polars as pl
import pytest

from montage_vec.engine import MontageParams
from tests.engine.reference import reference_montages, reference_tag_stats
from tests.support.cli import RunCli, run_once
from tests.support.data import AS_OF, SyntheticDatabase, checkin, days, load_checkins, load_frame, new_id

USERS = 12


def explained(run_cli: RunCli, url: str, user: str, as_of: datetime) -> dict[str, Any]:
    result = run_cli("explain", "--user-id", user, "--as-of", as_of.isoformat(), "--json", env={"DATABASE_URL": url})
    assert result.exit_code == 0, result.everything()
    document: dict[str, Any] = json.loads(result.stdout)  # the whole of stdout is the document
    return document


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@pytest.mark.slow
def test_explain_json_matches_the_reference_on_generated_users(database_url: str, run_cli: RunCli) -> None:
    database = SyntheticDatabase(database_url, USERS)
    load_frame(database_url, database.frame())
    run_once(run_cli, database_url, as_of=database.as_of)
    rows = database.frame().to_dicts()
    expected = reference_montages(rows, database.as_of)
    params = MontageParams()  # the defaults, as the job runs here
    for user in database.user_ids()[:6]:
        document = explained(run_cli, database_url, user, database.as_of)
        montages = {(m["kind"], m["interest"]): m for m in document["montages"]}
        mine = {key[1:]: value for key, value in expected.montages.items() if key[0] == user}
        assert set(montages) == set(mine), f"montages of {user}"
        for key, (item_count, valid_until) in mine.items():
            assert montages[key]["item_count"] == item_count
            assert montages[key]["valid_until"] == _iso(valid_until)
            shown = [item["checkin_id"] for item in montages[key]["items"]]
            assert shown == [item[1] for item in expected.items[(user, *key)]]
        tags = {entry.pop("tag"): entry for entry in document["tags"]}
        for tag, stats in reference_tag_stats(rows, user, database.as_of, params).items():
            assert tags[tag]["occurrences_in_window"] == stats["occurrences_in_window"], tag
            assert tags[tag]["qualifies"] == stats["qualifies"], tag
            assert tags[tag]["kth_newest_in_window"] == _iso(stats["kth_newest_in_window"]), tag
            assert tags[tag]["valid_until"] == _iso(stats["valid_until"]), tag
            assert tags[tag]["more_needed"] == stats["more_needed"], tag
        assert set(tags) == set(reference_tag_stats(rows, user, database.as_of, params))
        assert document["diff"]["counts"]["unchanged"] == len(mine), "a run just stored these"
        assert document["diff"]["montages"] == []


def test_explain_listing_names_reasons_and_needs(duckdb_url: str, run_cli: RunCli) -> None:
    user = new_id()
    rows = [
        checkin(user, AS_OF - days(1), tags=["hiking", " Hiking "]),
        checkin(user, AS_OF - days(2), tags=["hiking"], privacy="private"),
        checkin(user, AS_OF - days(3), tags=["coffee"], deleted_at=AS_OF),
    ]
    load_checkins(duckdb_url, rows)
    result = run_cli("explain", "--user-id", user, "--as-of", AS_OF.isoformat(), env={"DATABASE_URL": duckdb_url})
    assert result.exit_code == 0, result.everything()
    assert "not eligible: privacy 'private' is not one of friends, public" in result.stdout
    assert "not eligible: deleted" in result.stdout
    assert "' Hiking ' duplicate of 'hiking'" in result.stdout
    assert "hiking: 1 eligible in the window (1 ineligible check-in(s) also carry it); needs 2 more" in result.stdout
    assert "compared with the stored montages: 1 added, 0 removed, 0 changed, 0 unchanged" in result.stdout


def test_explain_rejects_a_bad_user_id_naming_the_flag(duckdb_url: str, run_cli: RunCli) -> None:
    load_checkins(duckdb_url, [checkin(new_id(), AS_OF - days(1))])
    result = run_cli("explain", "--user-id", "alice", env={"DATABASE_URL": duckdb_url})
    assert result.exit_code == 2, result.everything()
    assert "--user-id" in result.stderr


def test_named_dry_run_logs_each_change_and_agrees_with_its_counts(database_url: str, run_cli: RunCli) -> None:
    stays, edited, fresh = new_id(), new_id(), new_id()
    load_checkins(
        database_url,
        [checkin(user, AS_OF - days(n), tags=["coffee"]) for user in (stays, edited) for n in range(1, 4)],
    )
    run_once(run_cli, database_url)
    load_checkins(database_url, [checkin(edited, AS_OF - days(0.5), tags=["tea"]), checkin(fresh, AS_OF - days(1))])
    users = [arg for user in (stays, edited, fresh) for arg in ("--user-id", user)]

    dry = run_once(run_cli, database_url, "--dry-run", "--concurrency", "1", *users)  # one chunk line

    changes = [line for line in dry.logs if line["message"].startswith("dry run: montage would be ")]
    summary = dry.log("Batch job completed")
    statuses = pl.DataFrame([{"user_id": c["user_id"], "status": c["message"].rsplit(" ", 1)[1]} for c in changes])
    assert sorted(statuses.rows()) == sorted([(edited, "changed"), (fresh, "added")])  # general of each
    edited_general = next(c for c in changes if c["user_id"] == edited)
    assert edited_general["items"][0]["change"] == "changed" and edited_general["item_count"] == 4
    assert summary["montages_would_write"] == 2 and summary["montages_would_remove"] == 0
    assert dry.messages()[-1] == "Batch job completed", "the summary stays the last line"
    chunk = dry.log("chunk computed (dry run)")
    assert (chunk["montages_would_write"], chunk["montages_would_remove"]) == (2, 0)
    assert chunk["items_would_write"] == summary["items_would_write"] == 5  # 4 for the edited user, 1 new
    real = run_once(run_cli, database_url, *users)
    assert real.log("Batch job completed")["montages_written"] == summary["montages_would_write"]


def test_listing_names_the_checkins_that_join_or_leave_instead_of_every_shifted_position(
    duckdb_url: str, run_cli: RunCli
) -> None:
    user = new_id()
    rows = [checkin(user, AS_OF - days(n), text_content=f"day {n}") for n in range(1, 6)]
    load_checkins(duckdb_url, rows)
    run_once(run_cli, duckdb_url)
    newest = checkin(user, AS_OF - days(0.5), text_content="new")
    load_checkins(duckdb_url, [newest, {**rows[2], "text_content": "edited", "updated_at": AS_OF}])
    result = run_cli("explain", "--user-id", user, "--as-of", AS_OF.isoformat(), env={"DATABASE_URL": duckdb_url})
    assert result.exit_code == 0, result.everything()
    assert f"    + {newest['id']}" in result.stdout
    assert f"    ~ {rows[2]['id']} (shown differently)" in result.stdout
    assert "    5 position(s) now hold another check-in" in result.stdout
