"""diff_montages: a montage changes exactly when a real run would rewrite it."""

from __future__ import annotations

import json
from datetime import timedelta

import polars as pl

from montage_vec.engine import MontageSet
from montage_vec.engine.diff import diff_montages
from tests.engine.builders import AS_OF, U1, U2, checkin, cid, compute


def _statuses(computed: MontageSet, stored: MontageSet) -> dict[tuple[str, str], str]:
    diff = diff_montages(computed, stored)
    return {(row["kind"], row["interest"]): row["status"] for row in diff.montages.iter_rows(named=True)}


def test_same_montages_are_unchanged() -> None:
    rows = [checkin(n, tags=["coffee"]) for n in range(1, 5)]
    diff = diff_montages(compute(rows), compute(rows))
    assert diff.counts() == {"added": 0, "removed": 0, "changed": 0, "unchanged": 2}
    assert diff.items.is_empty()


def test_added_removed_and_changed_montages() -> None:
    before = [checkin(n, tags=["coffee"]) for n in range(1, 5)]
    after = [checkin(n, tags=["tea"]) for n in range(1, 5)]
    assert _statuses(compute(after), compute(before)) == {
        ("general", ""): "changed",  # the items' metadata lists other tags
        ("interest", "coffee"): "removed",
        ("interest", "tea"): "added",
    }


def test_a_new_item_at_the_top_shifts_every_position() -> None:
    before = [checkin(n) for n in range(2, 5)]
    after = [checkin(1), *before]
    diff = diff_montages(compute(after), compute(before))
    changes = {row["position"]: (row["change"], row["changed_fields"]) for row in diff.items.iter_rows(named=True)}
    assert changes[0] == ("changed", ["checkin_id", "checkin_created_at"])
    assert changes[3] == ("added", [])
    general = diff.montages.row(0, named=True)
    assert (general["checkins_added"], general["checkins_removed"]) == ([cid(1)], [])


def test_only_valid_until_moving_is_a_change() -> None:
    rows = [checkin(n, tags=["coffee"]) for n in range(1, 5)]
    later = compute(rows, as_of=AS_OF + timedelta(days=1))  # same items, same valid_until
    assert set(_statuses(later, compute(rows)).values()) == {"unchanged"}
    stored = compute(rows)
    shifted = MontageSet(
        montages=stored.montages.with_columns(pl.col("valid_until") + timedelta(seconds=1)),
        items=stored.items,
        rejected=stored.rejected,
    )
    assert _statuses(compute(rows), shifted)[("interest", "coffee")] == "changed"


def test_metadata_compares_as_json_values() -> None:
    """PostgreSQL stores jsonb, which prints keys in its own order: that is no change."""
    rows = [checkin(n, text="hi", location="park") for n in range(1, 3)]
    stored = compute(rows)
    respelled = [
        json.dumps(dict(reversed(json.loads(text).items())), indent=1) for text in stored.items["widget_metadata"]
    ]
    stored_as_jsonb = MontageSet(
        stored.montages, stored.items.with_columns(widget_metadata=pl.Series(respelled)), stored.rejected
    )
    assert diff_montages(compute(rows), stored_as_jsonb).counts()["unchanged"] == 1
    edited = [checkin(1, text="hello", location="park"), rows[1]]
    diff = diff_montages(compute(edited), stored_as_jsonb)
    assert diff.items.select("position", "changed_fields").to_dicts() == [
        {"position": 0, "changed_fields": ["widget_metadata"]}
    ]


def test_users_are_kept_apart() -> None:
    mine = [checkin(n, user=U1) for n in range(1, 3)]
    theirs = [checkin(n, user=U2, checkin_id=cid(n + 100)) for n in range(1, 3)]
    diff = diff_montages(compute(mine + theirs), compute(mine))
    assert {(row["user_id"], row["status"]) for row in diff.montages.iter_rows(named=True)} == {
        (U1, "unchanged"),
        (U2, "added"),
    }
