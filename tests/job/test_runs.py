"""End-to-end runs of `montage-vec once` on DuckDB and PostgreSQL: modes, incremental
correctness, ageing interests, idempotence, stable ids, backend parity, filters, dry runs,
chunking and the run log."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from montage_vec.datagen import SyntheticSpec, generate_checkins
from montage_vec.engine import MontageParams
from tests.support.cli import WATERMARK_MODE, run_once
from tests.support.data import (
    AS_OF,
    Checkins,
    assert_matches_recompute,
    checkin,
    content_events,
    days,
    expected_montages,
    item_rows_raw,
    load_frame,
    montage_ids,
    montage_stamps,
    montages_by_user,
    new_id,
    run_rows,
    same_instant,
    stored_montages,
    watermark,
)
from tests.support.database import count, execute, query
from tests.support.interference import job_connections
from tests.support.processes import wait_until

GENERAL = ("general", "")
OVERLAP = timedelta(minutes=10)  # WATERMARK_OVERLAP's default


def interest(tag: str) -> tuple[str, str]:
    return ("interest", tag)


def tagged_rows(user: str, tag: str, how_many: int, start: float = 1) -> list[dict[str, Any]]:
    """`how_many` check-ins of `user`, one a day from `start` days before AS_OF, tagged `tag` (not yet stored)."""
    return [checkin(user, AS_OF - days(start + i), tags=[tag]) for i in range(how_many)]


def tagged(data: Checkins, user: str, tag: str, how_many: int, start: float = 1) -> list[dict[str, Any]]:
    """tagged_rows(...), stored."""
    return data.add_many(tagged_rows(user, tag, how_many, start))


# -- modes -------------------------------------------------------------------------------


def test_first_run_is_full_later_runs_are_incremental(database_url: str, run_cli) -> None:
    data = Checkins(database_url)
    user = new_id()
    tagged(data, user, "Coffee", 3)

    first = run_once(run_cli, database_url, as_of=AS_OF)
    started = first.log("Batch job started")
    assert (started["mode"], started["candidates"], started["since"]) == ("full", 1, None)
    assert first.log("Batch job completed")["mode"] == "full"
    job_id = first.log("Batch job completed")["job_id"]
    assert [entry.get("job_id") for entry in first.logs] == [job_id] * len(first.logs), "every line carries it"

    second = run_once(run_cli, database_url, as_of=AS_OF + days(1))
    started = second.log("Batch job started")
    assert started["mode"] == "incremental"
    # The window starts one overlap before the watermark the first run stored.
    assert datetime.fromisoformat(started["since"]) == data.latest_update() - OVERLAP
    assert second.log("Batch job completed")["mode"] == "incremental"

    forced = run_once(run_cli, database_url, "--full", as_of=AS_OF + days(1))
    assert forced.log("Batch job started")["mode"] == "full"
    assert [row["mode"] for row in run_rows(database_url)] == ["full", "incremental", "full"]
    assert_matches_recompute(database_url, data.all(), AS_OF + days(1))


# -- incremental correctness ---------------------------------------------------------------


def test_incremental_run_after_inserts(database_url: str, run_cli) -> None:
    data = Checkins(database_url)
    grows, untouched, newcomer = new_id(), new_id(), new_id()
    data.add_many(tagged_rows(untouched, "tea", 3, start=10) + tagged_rows(grows, "hiking", 2, start=5))
    run_once(run_cli, database_url, as_of=AS_OF)
    assert montages_by_user(database_url) == {grows: [GENERAL], untouched: [GENERAL, interest("tea")]}
    first_stamps = montage_stamps(database_url)

    # A third hiking check-in (the interest now qualifies) and a new user.
    data.add_many(tagged_rows(grows, " Hiking", 1, start=0.5) + tagged_rows(newcomer, "yoga", 3, start=2))
    result = run_once(run_cli, database_url, as_of=AS_OF)

    assert result.log("Batch job started")["mode"] == "incremental"
    done = result.log("Batch job completed")
    assert (done["processed"], done["montages_written"], done["montages_removed"]) == (2, 4, 0)
    assert montages_by_user(database_url) == {
        grows: [GENERAL, interest("hiking")],
        newcomer: [GENERAL, interest("yoga")],
        untouched: [GENERAL, interest("tea")],
    }
    assert_matches_recompute(database_url, data.all(), AS_OF)
    # The user nobody touched was not rewritten.
    stamps = montage_stamps(database_url)
    for key in [(untouched, *GENERAL), (untouched, *interest("tea"))]:
        assert stamps[key] == first_stamps[key]


def test_incremental_run_after_tag_edits(database_url: str, run_cli) -> None:
    data = Checkins(database_url)
    loses, gains = new_id(), new_id()
    coffee = tagged(data, loses, "coffee", 3)
    plain = data.add_many(checkin(gains, AS_OF - days(i + 1)) for i in range(3))
    run_once(run_cli, database_url, as_of=AS_OF)
    assert montages_by_user(database_url) == {loses: [GENERAL, interest("coffee")], gains: [GENERAL]}

    data.edit_many({coffee[0]["id"]: {"tags": ["tea"]}, **{row["id"]: {"tags": ["MUSEUM", "art"]} for row in plain}})
    result = run_once(run_cli, database_url, as_of=AS_OF)

    assert montages_by_user(database_url) == {
        gains: [GENERAL, interest("art"), interest("museum")],
        loses: [GENERAL],
    }
    assert_matches_recompute(database_url, data.all(), AS_OF)
    done = result.log("Batch job completed")
    # Both general montages show the new tags; two interests appear, one disappears.
    assert (done["processed"], done["montages_written"], done["montages_removed"]) == (2, 4, 1)
    assert done["interest_montages"] == 2


def test_stale_interest_removed_after_tags_edited_away(database_url: str, run_cli) -> None:
    data = Checkins(database_url)
    user = new_id()
    coffee = data.add_many(tagged_rows(user, "coffee", 3) + tagged_rows(user, "tea", 3, start=5))[:3]
    run_once(run_cli, database_url, as_of=AS_OF)
    coffee_id = montage_ids(database_url)[(user, "interest", "coffee")]

    data.edit_many({row["id"]: {"tags": []} for row in coffee})
    result = run_once(run_cli, database_url, as_of=AS_OF)

    assert montages_by_user(database_url) == {user: [GENERAL, interest("tea")]}
    assert result.log("Batch job completed")["montages_removed"] == 1
    # Its items went with it: nothing points at the removed montage.
    orphans = query(
        database_url, "SELECT count(*) AS n FROM montage_items WHERE montage_id NOT IN (SELECT id FROM montages)"
    )
    assert orphans["n"][0] == 0
    assert all(row[0] != coffee_id for row in item_rows_raw(database_url))
    assert_matches_recompute(database_url, data.all(), AS_OF)


def test_incremental_run_after_soft_deletes(database_url: str, run_cli) -> None:
    data = Checkins(database_url)
    shrinks, vanishes, loses_interest = new_id(), new_id(), new_id()
    two = data.add_many(checkin(shrinks, AS_OF - days(i + 1), text_content=f"note {i}") for i in range(2))
    only = data.add(vanishes, AS_OF - days(3), tags=["coffee"])
    coffee = tagged(data, loses_interest, "coffee", 3)
    run_once(run_cli, database_url, as_of=AS_OF)
    assert set(montages_by_user(database_url)) == {shrinks, vanishes, loses_interest}

    data.edit_many({row["id"]: {"deleted_at": AS_OF - days(0.1)} for row in (two[0], only, coffee[1])})
    result = run_once(run_cli, database_url, as_of=AS_OF)

    stored = montages_by_user(database_url)
    assert vanishes not in stored, "a user without eligible check-ins must have no montages"
    assert stored == {shrinks: [GENERAL], loses_interest: [GENERAL]}
    general_counts = query(
        database_url, "SELECT user_id::VARCHAR AS user_id, item_count FROM montages WHERE kind = 'general'"
    )
    assert dict(general_counts.iter_rows()) == {shrinks: 1, loses_interest: 2}
    done = result.log("Batch job completed")
    assert (done["processed"], done["montages_written"], done["montages_removed"]) == (3, 2, 2)
    assert_matches_recompute(database_url, data.all(), AS_OF)


def test_incremental_run_after_privacy_changes(database_url: str, run_cli) -> None:
    data = Checkins(database_url)
    hidden, loses_interest, to_friends = new_id(), new_id(), new_id()
    only = data.add(hidden, AS_OF - days(1), location_name="Home")
    coffee = tagged(data, loses_interest, "coffee", 3)
    shared = data.add(to_friends, AS_OF - days(2), text_content="hello")
    run_once(run_cli, database_url, as_of=AS_OF)

    data.edit_many(
        {
            only["id"]: {"privacy": "private"},
            coffee[2]["id"]: {"privacy": "private"},
            shared["id"]: {"privacy": "friends"},
        }
    )
    run_once(run_cli, database_url, as_of=AS_OF)

    assert montages_by_user(database_url) == {loses_interest: [GENERAL], to_friends: [GENERAL]}
    items = query(
        database_url,
        f"SELECT i.widget_metadata::VARCHAR AS meta FROM montage_items i JOIN montages m ON m.id = i.montage_id "
        f"WHERE m.user_id = '{to_friends}'",
    )
    assert '"friends"' in items["meta"][0]  # the item shows the check-in's new audience
    assert_matches_recompute(database_url, data.all(), AS_OF)


@pytest.mark.parametrize(
    ("backend", "capture"), [("duckdb", "watermark"), ("postgresql", "watermark"), ("postgresql", "trigger")]
)
def test_hard_deletes_are_reflected_by_the_next_incremental_run(
    request: pytest.FixtureRequest, run_cli, backend: str, capture: str
) -> None:
    """Capture triggers are PostgreSQL's; watermark mode sees hard deletes through reconciliation."""
    if backend == "postgresql":
        request.applymarker(pytest.mark.postgres)
    database_url: str = request.getfixturevalue("duckdb_url" if backend == "duckdb" else "postgres_url")
    env = {"MONTAGE_CHANGE_CAPTURE": capture}
    data = Checkins(database_url)
    gone, keeps = new_id(), new_id()
    data.add_many([checkin(gone, AS_OF - days(2)), *tagged_rows(keeps, "coffee", 3)])
    run_once(run_cli, database_url, as_of=AS_OF, env=env)
    [gone_row] = data.of_user(gone)
    execute(database_url, f"DELETE FROM checkins WHERE id = '{gone_row['id']}'")
    del data.rows[gone_row["id"]]

    incremental = run_once(run_cli, database_url, as_of=AS_OF, env=env).log("Batch job completed")
    assert incremental["montages_removed"] == 1
    assert montages_by_user(database_url) == {keeps: [GENERAL, interest("coffee")]}
    assert_matches_recompute(database_url, data.all(), AS_OF)


def test_contract_settings_come_from_the_environment(database_url: str, run_cli) -> None:
    data = Checkins(database_url)
    user = new_id()
    data.add_many(
        [
            *tagged_rows(user, "coffee", 2),  # AS_OF - 1, 2 days
            checkin(user, AS_OF - days(3), tags=["coffee"], privacy="friends"),
            checkin(user, AS_OF - days(10), tags=["coffee"]),
        ]
    )
    env = {
        "MONTAGE_MAX_ITEMS": "2",
        "MONTAGE_MIN_INTEREST_OCCURRENCE": "2",
        "MONTAGE_INTEREST_LOOKBACK_DAYS": "7",
        "MONTAGE_PRIVACY_INCLUDED": "public",
    }
    params = MontageParams(
        max_items=2, min_interest_occurrence=2, interest_lookback_days=7, privacy_included=frozenset({"public"})
    )
    run_once(run_cli, database_url, as_of=AS_OF, env=env)
    assert stored_montages(database_url) == expected_montages(data.all(), AS_OF, params)
    rows = query(database_url, "SELECT kind, item_count, valid_until FROM montages ORDER BY kind").rows()
    # The friends-only check-in is left out; the second-newest coffee (AS_OF - 2 days) + 7 days.
    assert rows == [("general", 2, None), ("interest", 2, AS_OF + days(5))]

    # With a 7-day lookback the interest ages out after 5 days, not 28.
    later = AS_OF + days(5)
    run_once(run_cli, database_url, as_of=later, env=env)
    assert montages_by_user(database_url) == {user: [GENERAL]}
    assert stored_montages(database_url) == expected_montages(data.all(), later, params)


# -- time alone changes montages ---------------------------------------------------------------


def test_interest_ages_out_without_data_changes(database_url: str, run_cli) -> None:
    data = Checkins(database_url)
    ages, edge, other = new_id(), new_id(), new_id()
    data.add(other, AS_OF - days(100))
    # `edge` posts ahead of time (created after AS_OF): its third-newest coffee is AS_OF + 1 day,
    # so the interest stops qualifying exactly at AS_OF + 31 days.
    data.add_many(tagged_rows(edge, "coffee", 3, start=-3))
    tagged(data, ages, "coffee", 3)  # AS_OF - 1..3 days: qualifies until AS_OF + 27 days
    run_once(run_cli, database_url, as_of=AS_OF)
    valid_until = query(
        database_url, "SELECT user_id::VARCHAR AS user_id, valid_until FROM montages WHERE kind = 'interest'"
    )
    assert dict(valid_until.iter_rows()) == {ages: AS_OF + days(27), edge: AS_OF + days(31)}

    just_before = run_once(run_cli, database_url, as_of=AS_OF + days(27) - timedelta(microseconds=1))
    assert just_before.log("Batch job completed")["montages_removed"] == 0
    assert montages_by_user(database_url)[ages] == [GENERAL, interest("coffee")]

    later = AS_OF + days(31)
    result = run_once(run_cli, database_url, as_of=later)
    assert result.log("Batch job started")["mode"] == "incremental"
    assert montages_by_user(database_url) == {ages: [GENERAL], edge: [GENERAL], other: [GENERAL]}
    done = result.log("Batch job completed")
    # Only the two users whose interests expired (valid_until <= as_of) are processed.
    assert (done["processed"], done["montages_written"], done["montages_removed"]) == (2, 0, 2)
    assert_matches_recompute(database_url, data.all(), later)


# -- idempotence and ids ----------------------------------------------------------------------


WRITE_COUNTERS = """
SELECT coalesce(sum(n_tup_upd + n_tup_ins + n_tup_del), 0)::BIGINT AS n FROM pg_stat_user_tables
WHERE relname IN ('montages', 'montage_items')
"""
ROW_VERSIONS = {
    "montages": "SELECT id::VARCHAR AS k, xmin::TEXT AS v FROM montages ORDER BY 1",
    "montage_items": "SELECT montage_id::VARCHAR || '/' || position AS k, xmin::TEXT AS v "
    "FROM montage_items ORDER BY 1",
}


def postgres_writes(url: str) -> tuple[int, dict[str, list[tuple[str, str]]]]:
    """PostgreSQL's own record of writes to the montage tables: the statistics' insert, update
    and delete counters (rolled-back writes included) and every row's version (xmin)."""
    # A backend reports its statistics before it leaves pg_stat_activity: once the job's
    # connections are gone, the counters include all they did.
    wait_until(lambda: job_connections(url) == 0, "the job's connections closed")
    counters = int(query(url, WRITE_COUNTERS)["n"][0])
    return counters, {table: query(url, sql).rows() for table, sql in ROW_VERSIONS.items()}


def test_rerun_without_changes_writes_nothing(database_url: str, run_cli) -> None:
    data = Checkins(database_url)
    users = [new_id() for _ in range(4)]
    extras = {"location_name": "Zürich HB", "thumbnail_url": "https://m/t.jpg", "privacy": "friends",
              "text_content": 'a "quoted" ünïcödé ☕ line'}  # fmt: skip
    data.add_many(
        row
        for n, user in enumerate(users)
        for row in [
            *tagged_rows(user, "coffee", 3 + n),
            checkin(user, AS_OF - days(40), media_url=f"https://m/{n}.jpg", media_type="image", tags=["Tea"], **extras),
        ]
    )
    first = run_once(run_cli, database_url, as_of=AS_OF, env=WATERMARK_MODE)
    assert first.log("Batch job completed")["montages_written"] == 8
    stamps, items, events = montage_stamps(database_url), item_rows_raw(database_url), content_events(database_url)
    assert events["montage.cache.invalidated"] == 4
    postgres = database_url.startswith("postgresql:")
    if postgres:
        counters, versions = postgres_writes(database_url)
        assert counters > 0 and all(versions.values())

    again = run_once(run_cli, database_url, as_of=AS_OF + days(1), env=WATERMARK_MODE)
    done = again.log("Batch job completed")
    assert done["processed"] == 1, "the overlap window re-processes the last-stamped user"
    assert (done["montages_written"], done["montages_removed"]) == (0, 0)

    full = run_once(run_cli, database_url, "--full", "--batch-size", "2", as_of=AS_OF + days(1), env=WATERMARK_MODE)
    done = full.log("Batch job completed")
    assert (done["processed"], done["montages_written"], done["montages_removed"]) == (4, 0, 0)
    assert (done["general_montages"], done["interest_montages"]) == (4, 4)

    assert montage_stamps(database_url) == stamps
    assert item_rows_raw(database_url) == items
    assert content_events(database_url) == events, "no event for montages that did not change"
    if postgres:  # not a row rewritten with equal values, not a write rolled back
        assert postgres_writes(database_url) == (counters, versions)
    assert_matches_recompute(database_url, data.all(), AS_OF + days(1))


def test_montage_ids_are_stable_across_regenerations(database_url: str, run_cli) -> None:
    data = Checkins(database_url)
    user = new_id()
    coffee = tagged(data, user, "coffee", 3)
    run_once(run_cli, database_url, as_of=AS_OF)
    before = montage_ids(database_url)
    assert set(before) == {(user, *GENERAL), (user, *interest("coffee"))}

    data.add(user, AS_OF - days(0.5), tags=["coffee"])  # both montages change content
    run_once(run_cli, database_url, as_of=AS_OF)
    assert montage_ids(database_url) == before
    stamps = montage_stamps(database_url)
    assert stamps[(user, *GENERAL)][2] == run_rows(database_url)[-1]["job_id"], "the montage was rewritten"

    # The interest falls below 3 occurrences...
    data.edit_many({coffee[0]["id"]: {"deleted_at": AS_OF}, coffee[1]["id"]: {"tags": []}})
    run_once(run_cli, database_url, as_of=AS_OF)
    assert (user, *interest("coffee")) not in montage_ids(database_url)
    data.edit(coffee[1]["id"], tags=["COFFEE"])  # ...and comes back
    run_once(run_cli, database_url, as_of=AS_OF)
    assert montage_ids(database_url) == before


@pytest.mark.postgres
def test_montage_ids_identical_between_duckdb_and_postgresql(duckdb_url: str, postgres_url: str, run_cli) -> None:
    users = [new_id() for _ in range(3)]
    rows = [
        checkin(user, AS_OF - days(i + n), tags=["coffee", "Tea"] if i % 2 else ["coffee"])
        for n, user in enumerate(users)
        for i in range(6)
    ]
    ids = {}
    for url in (duckdb_url, postgres_url):
        Checkins(url).add_many(rows)
        run_once(run_cli, url, as_of=AS_OF)
        ids[url] = montage_ids(url)
    assert len(ids[duckdb_url]) == 9
    assert ids[duckdb_url] == ids[postgres_url]
    # As documented: md5('user_id/kind/interest') read as a uuid.
    for (user, kind, tag), montage_id in ids[duckdb_url].items():
        assert montage_id == str(uuid.UUID(hashlib.md5(f"{user}/{kind}/{tag}".encode()).hexdigest()))
    assert stored_montages(duckdb_url) == stored_montages(postgres_url)


def _edit_synthetic(frame: pl.DataFrame) -> pl.DataFrame:
    """Every 61st check-in changed (tags, privacy or deleted), stamped after all synthetic rows."""
    stamp = AS_OF + days(4)  # synthetic updated_at never passes AS_OF + 3 days
    picked = frame.with_row_index("n").filter(pl.col("n") % 61 == 0)
    n = pl.col("n") // 61 % 3
    return picked.with_columns(
        tags=pl.when(n == 0).then(pl.lit(["Coffee", " tea"])).otherwise(pl.col("tags")),
        privacy=pl.when(n == 1).then(pl.lit("private")).otherwise(pl.col("privacy")),
        deleted_at=pl.when(n == 2).then(pl.lit(stamp)).otherwise(pl.col("deleted_at")),
        updated_at=pl.lit(stamp),
    ).drop("n")


@pytest.mark.slow
@pytest.mark.postgres
def test_synthetic_users_identical_between_duckdb_and_postgresql(duckdb_url: str, postgres_url: str, run_cli) -> None:
    frame = pl.DataFrame(generate_checkins(SyntheticSpec(users=300, seed=11, as_of=AS_OF)))
    assert frame["user_id"].n_unique() == 300
    edits = _edit_synthetic(frame)
    edited = frame.filter(~pl.col("id").is_in(edits["id"].implode())).vstack(edits.select(frame.columns))
    later = AS_OF + days(10)
    results = {}
    for url in (duckdb_url, postgres_url):
        load_frame(url, frame)
        first = run_once(run_cli, url, "--batch-size", "64", as_of=AS_OF).log("Batch job completed")
        assert (first["processed"], first["errors"]) == (300, 0)
        full = (stored_montages(url), montage_ids(url), first["interest_montages"])
        load_frame(url, edits)
        second = run_once(run_cli, url, "--batch-size", "64", as_of=later).log("Batch job completed")
        assert second["errors"] == 0
        results[url] = (full, (stored_montages(url), montage_ids(url), second["processed"]))

    duck, pg = results[duckdb_url], results[postgres_url]
    assert duck[0][2] >= 50, "the synthetic data should produce plenty of interests"
    assert duck == pg
    assert duck[0][0] == expected_montages(frame.to_dicts(), AS_OF)
    assert duck[1][0] == expected_montages(edited.to_dicts(), later)
    # Incremental: the edited users, users whose interests aged out, users inside the overlap.
    aged = {m[0] for m in duck[0][0][0] if m[4] is not None and m[4] <= later}
    mark = frame["updated_at"].max()
    overlap = set(frame.filter(pl.col("updated_at") > mark - OVERLAP)["user_id"])
    assert duck[1][2] == len(set(edits["user_id"]) | aged | overlap) < 300


# -- choosing users ---------------------------------------------------------------------------


def test_named_users_only_and_watermark_unmoved(database_url: str, run_cli) -> None:
    data = Checkins(database_url)
    chosen, listed, bystander = new_id(), new_id(), new_id()
    data.add_many(
        tagged_rows(chosen, "coffee", 2) + tagged_rows(listed, "tea", 2, start=4) + tagged_rows(bystander, "yoga", 2)
    )
    run_once(run_cli, database_url, as_of=AS_OF)
    mark = watermark(database_url)
    assert same_instant(mark, data.latest_update())
    old_rows = data.all()

    def expected_for(fresh: set[str]) -> tuple[list[Any], list[Any]]:
        """Fresh users recomputed from their current rows, the others from the first run's rows."""
        rows = [r for r in data.all() if r["user_id"] in fresh] + [r for r in old_rows if r["user_id"] not in fresh]
        return expected_montages(rows, AS_OF)

    # Every user gets a third tagged check-in, which would make their interest qualify.
    data.add_many(
        tagged_rows(chosen, "coffee", 1, start=0.5)
        + tagged_rows(listed, "tea", 1, start=0.5)
        + tagged_rows(bystander, "yoga", 1, start=0.5)
    )
    by_option = run_once(run_cli, database_url, "--user-id", chosen, as_of=AS_OF)
    started = by_option.log("Batch job started")
    assert (started["mode"], started["candidates"]) == ("users", 1)
    assert by_option.log("Batch job completed")["processed"] == 1
    assert montages_by_user(database_url) == {
        bystander: [GENERAL],
        chosen: [GENERAL, interest("coffee")],
        listed: [GENERAL],
    }
    assert stored_montages(database_url) == expected_for({chosen})
    assert same_instant(watermark(database_url), mark)

    by_variable = run_once(run_cli, database_url, as_of=AS_OF, env={"USER_ID_FILTER": listed})
    started = by_variable.log("Batch job started")
    assert (started["mode"], started["candidates"]) == ("users", 1)
    assert stored_montages(database_url) == expected_for({chosen, listed})
    assert same_instant(watermark(database_url), mark)
    runs = run_rows(database_url)
    assert [(r["mode"], r["status"]) for r in runs[1:]] == [("users", "completed"), ("users", "completed")]
    assert [r["watermark_to"] for r in runs[1:]] == [None, None]

    # The next regular run still sees every change, since the watermark did not move; the two
    # users already done are processed again but nothing of theirs is rewritten.
    catch_up = run_once(run_cli, database_url, as_of=AS_OF, env={"USER_ID_FILTER": ""})
    assert catch_up.log("Batch job started")["mode"] == "incremental"
    done = catch_up.log("Batch job completed")
    assert (done["processed"], done["montages_written"], done["montages_removed"]) == (3, 2, 0)
    assert_matches_recompute(database_url, data.all(), AS_OF)


def test_several_user_ids(database_url: str, run_cli) -> None:
    data = Checkins(database_url)
    users = [new_id() for _ in range(4)]
    data.add_many(checkin(user, AS_OF - days(i + 1), tags=["coffee"]) for user in users for i in range(3))
    # Repeated, and in upper case: still two users.
    args = ("--user-id", users[0], "--user-id", users[2], "--user-id", users[0].upper())
    result = run_once(run_cli, database_url, *args, as_of=AS_OF)
    assert result.log("Batch job started")["candidates"] == 2
    done = result.log("Batch job completed")
    assert (done["processed"], done["successful"], done["errors"]) == (2, 2, 0)
    assert set(montages_by_user(database_url)) == {users[0], users[2]}
    assert watermark(database_url) is None

    listed = run_once(run_cli, database_url, as_of=AS_OF, env={"USER_ID_FILTER": f" {users[1].upper()} ,{users[3]}"})
    assert listed.log("Batch job started")["candidates"] == 2
    assert_matches_recompute(database_url, data.all(), AS_OF)
    assert watermark(database_url) is None


# -- dry runs and chunking --------------------------------------------------------------------


def test_dry_run_writes_nothing_but_reports(database_url: str, run_cli) -> None:
    data = Checkins(database_url)
    users = [new_id() for _ in range(3)]
    # 2, 3 and 4 coffees: two interests.
    data.add_many(row for n, user in enumerate(users) for row in tagged_rows(user, "coffee", 2 + n))

    result = run_once(run_cli, database_url, "--dry-run", as_of=AS_OF, env=WATERMARK_MODE)
    started, done = result.log("Batch job started"), result.log("Batch job completed")
    assert (started["mode"], started["dry_run"], started["candidates"]) == ("full", True, 3)
    assert (done["dry_run"], done["status"], done["processed"], done["successful"]) == (True, "completed", 3, 3)
    assert (done["general_montages"], done["interest_montages"]) == (3, 2)
    assert (done["montages_written"], done["montages_removed"]) == (0, 0)
    written = [count(database_url, t) for t in ("montages", "montage_items", "montage_job_runs", "montage_events")]
    assert written == [0, 0, 0, 0]
    assert watermark(database_url) is None

    # A real run afterwards is still the first one.
    real = run_once(run_cli, database_url, as_of=AS_OF, env=WATERMARK_MODE)
    assert real.log("Batch job started")["mode"] == "full"
    snapshot, events = stored_montages(database_url), content_events(database_url)
    data.add(users[0], AS_OF - days(0.5), tags=["coffee"])
    again = run_once(run_cli, database_url, "--dry-run", as_of=AS_OF, env=WATERMARK_MODE).log("Batch job completed")
    # Candidates: users[0] (its new row, now 3 coffees) and users[2] (last row, inside the overlap).
    assert (again["processed"], again["general_montages"], again["interest_montages"]) == (2, 2, 2)
    assert stored_montages(database_url) == snapshot
    assert count(database_url, "montage_job_runs") == 1
    assert content_events(database_url) == events
    assert events["montage.cache.invalidated"] == 3


def test_small_chunks_in_parallel_match_one_chunk(database_url: str, run_cli) -> None:
    data = Checkins(database_url)
    users = [new_id() for _ in range(20)]
    data.add_many(
        row
        for n, user in enumerate(users)
        for row in tagged_rows(user, ["coffee", "tea", "yoga"][n % 3], 1 + n % 5, start=n % 4 + 1)
    )

    result = run_once(run_cli, database_url, "--batch-size", "2", "--concurrency", "2", as_of=AS_OF)
    started, done = result.log("Batch job started"), result.log("Batch job completed")
    assert (started["batch_size"], started["concurrency"]) == (2, 2)
    assert done["chunks"] == 10
    committed = [entry for entry in result.logs if entry["message"] == "chunk committed"]
    # Chunks finish in any order on two workers; the count of chunks done only goes up.
    assert sorted(entry["chunk"] for entry in committed) == list(range(1, 11))
    assert [entry["chunks_done"] for entry in committed] == list(range(1, 11))
    assert {entry["chunks_total"] for entry in committed} == {10}
    assert done["processed"] == 20
    assert_matches_recompute(database_url, data.all(), AS_OF)

    # One chunk of everyone agrees with what the small chunks wrote.
    one = run_once(run_cli, database_url, "--full", "--batch-size", "1000", "--concurrency", "1", as_of=AS_OF)
    done = one.log("Batch job completed")
    assert (done["chunks"], done["processed"], done["montages_written"], done["montages_removed"]) == (1, 20, 0, 0)


def test_a_run_smaller_than_a_chunk_per_worker_is_split_across_the_workers(database_url: str, run_cli) -> None:
    data = Checkins(database_url)
    data.add_many(row for n in range(7) for row in tagged_rows(new_id(), "coffee", 3, start=n % 4 + 1))

    result = run_once(run_cli, database_url, "--batch-size", "100", "--concurrency", "2", as_of=AS_OF)
    committed = [entry for entry in result.logs if entry["message"] == "chunk committed"]
    assert sorted(entry["users"] for entry in committed) == [3, 4]  # 7 users, 2 workers: 4 and 3, not 7 and 0
    assert {entry["chunks_total"] for entry in committed} == {2}
    assert result.log("Batch job completed")["processed"] == 7
    assert_matches_recompute(database_url, data.all(), AS_OF)

    # A run of at least a chunk per worker keeps MONTAGE_BATCH_SIZE: 7 users in chunks of 3.
    again = run_once(run_cli, database_url, "--full", "--batch-size", "3", "--concurrency", "2", as_of=AS_OF)
    assert sorted(entry["users"] for entry in again.logs if entry["message"] == "chunk committed") == [1, 3, 3]


# -- the run log and the watermark --------------------------------------------------------------


def test_run_log_and_watermark(database_url: str, run_cli) -> None:
    data = Checkins(database_url)
    users = [new_id() for _ in range(3)]
    # 0, 3 and 6 coffees, and one untagged check-in for users[0].
    coffees = [row for n, user in enumerate(users) for row in tagged_rows(user, "coffee", 3 * n)]
    data.add_many([*coffees, checkin(users[0], AS_OF - days(2))])
    latest = data.latest_update()
    # A row stamped after the run starts (clock skew) must not drag the watermark along.
    future = datetime.now(UTC) + days(30)
    data.put([checkin(users[0], AS_OF - days(3), updated_at=future)])

    result = run_once(run_cli, database_url, as_of=AS_OF, env=WATERMARK_MODE)
    done = result.log("Batch job completed")
    [run] = run_rows(database_url)
    assert run["job_id"] == done["job_id"]
    assert (run["status"], run["mode"], run["shard"]) == ("completed", "full", "0/1")
    assert (run["processed"], run["successful"], run["errors"]) == (3, 3, 0)
    assert (run["general_montages"], run["interest_montages"]) == (3, 2)
    assert same_instant(run["as_of"], AS_OF)
    assert run["finished_at"] is not None and run["finished_at"] >= run["started_at"]
    assert run["watermark_from"] is None
    assert same_instant(run["watermark_to"], latest)
    assert same_instant(watermark(database_url), latest)
    saved_by = query(database_url, "SELECT job_id FROM montage_job_watermarks")["job_id"].to_list()
    assert saved_by == [done["job_id"]]

    data.add(users[1], AS_OF - days(0.2))
    second = run_once(run_cli, database_url, as_of=AS_OF, env=WATERMARK_MODE).log("Batch job completed")
    runs = run_rows(database_url)
    assert [r["status"] for r in runs] == ["completed", "completed"]
    assert runs[1]["job_id"] == second["job_id"] != done["job_id"]
    assert same_instant(runs[1]["watermark_from"], latest)
    assert same_instant(runs[1]["watermark_to"], data.clock)
    assert same_instant(watermark(database_url), data.clock)
    # users[0] (future-stamped row) and users[1] (new row) are processed.
    assert runs[1]["processed"] == 2
    assert_matches_recompute(database_url, data.all(), AS_OF)


# -- shards -------------------------------------------------------------------------------------


def test_shards_split_users_and_keep_their_own_watermarks(database_url: str, run_cli) -> None:
    data = Checkins(database_url)
    # A user's shard is its uuid's last 8 hex digits modulo the shard count.
    users = [new_id()[:-1] + digit for digit in "02468ace13579bdf"[::2]]
    owner = {user: int(user[-8:], 16) % 2 for user in users}
    assert sorted(owner.values()) == [0, 0, 0, 0, 1, 1, 1, 1]
    data.add_many(checkin(user, AS_OF - days(i + 1), tags=["coffee"]) for user in users for i in range(3))

    zero = run_once(run_cli, database_url, as_of=AS_OF, env={"MONTAGE_SHARD": "0/2"})
    assert zero.log("Batch job started")["shard"] == "0/2"
    assert zero.log("Batch job completed")["processed"] == 4
    assert set(montages_by_user(database_url)) == {u for u in users if owner[u] == 0}

    one = run_once(run_cli, database_url, as_of=AS_OF, env={"MONTAGE_SHARD": "1/2"})
    assert one.log("Batch job started")["mode"] == "full", "each shard has its own watermark"
    assert one.log("Batch job completed")["processed"] == 4
    assert_matches_recompute(database_url, data.all(), AS_OF)
    marks = query(database_url, "SELECT shard, watermark FROM montage_job_watermarks ORDER BY shard")
    assert marks["shard"].to_list() == ["0/2", "1/2"]
    assert all(same_instant(mark, data.latest_update()) for mark in marks["watermark"])

    # A change to a shard-1 user is not shard 0's business.
    moved = next(u for u in users if owner[u] == 1)
    data.add(moved, AS_OF - days(0.5), tags=["tea"])
    before = montage_stamps(database_url)
    run_once(run_cli, database_url, as_of=AS_OF, env={"MONTAGE_SHARD": "0/2"})
    assert montage_stamps(database_url)[(moved, *GENERAL)] == before[(moved, *GENERAL)]
    run_once(run_cli, database_url, as_of=AS_OF, env={"MONTAGE_SHARD": "1/2"})
    assert montage_stamps(database_url)[(moved, *GENERAL)] != before[(moved, *GENERAL)]
    assert_matches_recompute(database_url, data.all(), AS_OF)
