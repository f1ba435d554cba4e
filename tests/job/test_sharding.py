"""Sharding proven: shards running at once, and changes of the shard count, give exactly the
tables of one unsharded run (PostgreSQL; the count-change rule on DuckDB too).

The PostgreSQL tests work on twin databases holding the same generated population: the sharded one,
and a copy (`postgres_database(template=...)`) that one unsharded run (`0/1`) maintains as
the reference. The same application writes go to both, and after each round the montage
tables must be equal in every column of the contract (run-specific ones excluded:
`generated_at`, `cache_expires_at`, `job_id`). Each shard must also have written only its own
users (its outbox events and the montage rows stamped with its job id).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import adbc_driver_postgresql.dbapi as pg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from montage_vec.config.shard import Shard
from montage_vec.datagen import DEFAULT_AS_OF
from montage_vec.stores.change_sql import CAPTURE_TRIGGERS
from tests.support.cli import CliResult, RunCli, run_once
from tests.support.data import AS_OF, Checkins, checkin, load_frame, new_id, synthetic
from tests.support.database import execute, postgres_database, query
from tests.support.outbox import GENERATED, INVALIDATED, events
from tests.support.processes import JobProcess, job_env

postgres = pytest.mark.postgres

SHARDS = 4
USERS = 300  # about 75 users a shard
T0 = DEFAULT_AS_OF  # the population's reference time
MONTAGE_COLUMNS = "id::VARCHAR AS id, user_id::VARCHAR AS user_id, kind, interest, item_count, valid_until"
ITEM_COLUMNS = (
    "montage_id::VARCHAR AS montage_id, position, checkin_id::VARCHAR AS checkin_id, checkin_created_at, "
    "widget_type, widget_metadata::VARCHAR AS widget_metadata"
)


@pytest.fixture
def twins(postgres_url: str) -> Iterator[tuple[str, str]]:
    """(sharded, unsharded): two databases with the same population and nothing computed yet."""
    load_frame(postgres_url, synthetic(USERS))
    with postgres_database(template=urlsplit(postgres_url).path.lstrip("/")) as copy:
        yield postgres_url, copy


def contract_tables(url: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    montages = query(url, f"SELECT {MONTAGE_COLUMNS} FROM montages ORDER BY id")
    items = query(url, f"SELECT {ITEM_COLUMNS} FROM montage_items ORDER BY montage_id, position")
    return montages, items


def assert_same_tables(sharded: str, unsharded: str) -> None:
    mine, reference = contract_tables(sharded), contract_tables(unsharded)
    assert mine[0].height > 0 and mine[1].height > 0
    assert_frame_equal(mine[0], reference[0])
    assert_frame_equal(mine[1], reference[1])


def owner(user_id: str, count: int) -> int:
    """The index of the shard that owns a user, worked out apart from the job's code (README,
    "Sharding"): the uuid's last 8 hex digits modulo the shard count."""
    return int(user_id[-8:], 16) % count


def shard_keys(count: int) -> list[str]:
    return [f"{index}/{count}" for index in range(count)]


# -- the application's writes, the same on both databases ---------------------------------------


@dataclass
class Changes:
    """Rounds of application writes, chosen from the sharded database and applied to both.

    Users are drawn at random, so every shard gets its share. `bump_moves`: watermark mode
    needs a moved check-in's `updated_at` bumped (README, "Watermark mode"); trigger mode sees
    the move without it."""

    urls: tuple[str, str]
    bump_moves: bool = False

    def apply(self, round_: int, as_of: datetime) -> None:
        generator = random.Random(round_)
        live = query(self.urls[0], "SELECT id::VARCHAR AS id, user_id::VARCHAR AS user_id FROM checkins "
                     "WHERE deleted_at IS NULL ORDER BY id")  # fmt: skip
        ids = generator.sample(live["id"].to_list(), 28)
        users = generator.sample(sorted(set(live["user_id"])), 8)
        new_user = str(uuid.UUID(int=generator.getrandbits(128), version=4))
        moved_to = "updated_at = now(), " if self.bump_moves else ""
        statements = [
            f"UPDATE checkins SET tags = ARRAY['round{round_}'], updated_at = now() WHERE id IN {_in(ids[:8])}",
            f"UPDATE checkins SET deleted_at = now(), updated_at = now() WHERE id IN {_in(ids[8:14])}",
            f"UPDATE checkins SET privacy = 'private', updated_at = now() WHERE id IN {_in(ids[14:18])}",
            f"DELETE FROM checkins WHERE id IN {_in(ids[18:24])}",
            *(f"UPDATE checkins SET {moved_to}user_id = '{to}' WHERE id = '{moved}'"
              for moved, to in zip(ids[24:], users[4:], strict=True)),
            insert_sql([*users[:4], new_user], as_of, f"fresh{round_}", generator),
        ]  # fmt: skip
        for url in self.urls:
            execute(url, *statements)


def _in(values: list[str]) -> str:
    return "(" + ", ".join(f"'{value}'" for value in values) + ")"


def insert_sql(users: list[str], as_of: datetime, tag: str, generator: random.Random) -> str:
    """Three check-ins tagged `tag` for each user, in the last days before `as_of`: a new interest."""
    values = [
        f"('{uuid.UUID(int=generator.getrandbits(128), version=4)}', '{user}', "
        f"TIMESTAMPTZ '{(as_of - timedelta(days=day)).isoformat()}', now(), 'public', ARRAY['{tag}'])"
        for user in users
        for day in (1, 2, 3)
    ]
    return f"INSERT INTO checkins (id, user_id, created_at, updated_at, privacy, tags) VALUES {', '.join(values)}"


class LateWriter:
    """A transaction left open across a round of runs, committed after them (a late commit)."""

    def __init__(self, url: str, statement: str) -> None:
        self._connection = pg.connect(url, autocommit=True)
        self._cursor = self._connection.cursor()
        self._cursor.execute("BEGIN")
        self._cursor.execute(statement)

    def commit(self) -> None:
        self._cursor.execute("COMMIT")

    def close(self) -> None:
        self._cursor.close()
        self._connection.close()


# -- runs ------------------------------------------------------------------------------------------


def by_montage_shard(index: int) -> dict[str, str]:
    return {"MONTAGE_SHARD": f"{index}/{SHARDS}"}


def by_indexed_job(index: int) -> dict[str, str]:
    """What the pods of a Kubernetes Indexed Job with SHARDS completions see."""
    return {"MONTAGE_SHARD_COUNT": str(SHARDS), "JOB_COMPLETION_INDEX": str(index)}


def shards_at_once(url: str, as_of: datetime, *args: str, env_of: Callable[[int], dict[str, str]]) -> list[CliResult]:
    """SHARDS `montage-vec once` processes started together; their outcomes once all have exited."""
    common = ("once", "--as-of", as_of.isoformat(), "--batch-size", "40", *args)
    processes = [JobProcess(*common, env=job_env(DATABASE_URL=url, **env_of(index))) for index in range(SHARDS)]
    try:
        for process in processes:
            process.wait(timeout=120)  # a hang guard only
    finally:
        for process in processes:
            process.kill()
    results = [process.finished() for process in processes]
    for result in results:
        assert result.exit_code == 0, result.everything()
    return results


def unsharded(run_cli: RunCli, url: str, as_of: datetime, *args: str) -> CliResult:
    # run_cli's variables stay set for the rest of the test: the shard is always named.
    return run_once(run_cli, url, "--batch-size", "40", *args, as_of=as_of, env={"MONTAGE_SHARD": "0/1"})


def assert_round(sharded: str, reference: str, shards: list[CliResult], single: CliResult) -> None:
    """Equal tables; every user a candidate of exactly one shard; each shard wrote only its own users."""
    assert_same_tables(sharded, reference)
    started = [result.log("Batch job started") for result in shards]
    assert sorted(line["shard"] for line in started) == shard_keys(SHARDS)
    assert sum(line["candidates"] for line in started) == single.log("Batch job started")["candidates"]
    processed = [result.log("Batch job completed")["processed"] for result in shards]
    assert sum(processed) == single.log("Batch job completed")["processed"]
    touched = {line["shard"]: users_written(sharded, result) for line, result in zip(started, shards, strict=True)}
    for key, users in touched.items():
        foreign = [user for user in users if owner(user, SHARDS) != Shard.parse(key).index]
        assert not foreign, f"shard {key} wrote users of other shards: {foreign[:5]}"
    assert all(users.len() for users in touched.values()), f"a shard wrote nothing, which proves nothing: {touched}"


def users_written(url: str, result: CliResult) -> pl.Series:
    """The users a run wrote: its outbox events', and those of the montage rows it stamped."""
    job_id = result.log("Batch job completed")["job_id"]
    stamped = query(url, f"SELECT user_id::VARCHAR AS user_id FROM montages WHERE job_id = '{job_id}'")
    told = {event["payload"]["user_id"] for event in events(url, job_id=job_id)
            if event["type"] in (GENERATED, INVALIDATED)}  # fmt: skip
    return pl.Series("user_id", sorted(told | set(stamped["user_id"])), dtype=pl.String)


def bookkept_shards(url: str, table: str) -> list[str]:
    return sorted(query(url, f"SELECT DISTINCT shard FROM {table}")["shard"].to_list())


# -- tests -----------------------------------------------------------------------------------------


@postgres
@pytest.mark.slow
def test_four_shards_at_once_equal_one_unsharded_run(twins: tuple[str, str], run_cli: RunCli) -> None:
    sharded, reference = twins
    changes = Changes(twins)

    # Full runs.
    shards = shards_at_once(sharded, T0, "--full", env_of=by_montage_shard)
    assert_round(sharded, reference, shards, unsharded(run_cli, reference, T0, "--full"))
    for table in ("montage_job_watermarks", "montage_job_leases", "montage_job_runs"):
        assert bookkept_shards(sharded, table) == shard_keys(SHARDS), table

    # Incremental: edits, deletes, moves, new users, and a transaction open during the runs.
    changes.apply(1, T0)
    late_user = query(sharded, "SELECT min(user_id::VARCHAR) AS user_id FROM checkins")["user_id"][0]
    late = insert_sql([late_user], T0, "late", random.Random(99))
    writers = [LateWriter(url, late) for url in twins]
    try:
        shards = shards_at_once(sharded, T0, env_of=by_montage_shard)
        single = unsharded(run_cli, reference, T0)
        for writer in writers:
            writer.commit()
    finally:
        for writer in writers:
            writer.close()
    assert {result.log("Batch job started")["mode"] for result in shards} == {"incremental"}
    assert_round(sharded, reference, shards, single)

    # Ten days on (interests age out), as the pods of an Indexed Job: the late commit is seen now.
    changes.apply(2, T0 + timedelta(days=10))
    shards = shards_at_once(sharded, T0 + timedelta(days=10), env_of=by_indexed_job)
    assert_round(sharded, reference, shards, unsharded(run_cli, reference, T0 + timedelta(days=10)))
    shown = query(sharded, "SELECT count(*) AS n FROM montages WHERE interest = 'late'")["n"][0]
    assert shown == 1, "the late commit's interest montage"
    assert bookkept_shards(sharded, "montage_job_watermarks") == shard_keys(SHARDS)


@postgres
@pytest.mark.slow
@pytest.mark.parametrize("capture", ["trigger", "watermark"])
def test_changing_the_shard_count_keeps_the_tables_of_an_unsharded_run(
    twins: tuple[str, str], run_cli: RunCli, capture: str
) -> None:
    """4 shards, then 2, then 4 again, with changes before every round. The 2-shard runs are
    ahead of the second 4-shard era's as_of (say the new Job ran with an `--as-of` ahead of
    the clock), so the interests they aged out are current again when 4 shards come back."""
    sharded, reference = twins
    if capture == "watermark":  # no captured changes at all: the watermark alone
        for url in twins:
            execute(url, *(f"DROP TRIGGER {name} ON checkins" for name in CAPTURE_TRIGGERS))
    changes = Changes(twins, bump_moves=capture == "watermark")
    mode = {"MONTAGE_CHANGE_CAPTURE": capture}
    round_ = iter(range(100))

    def era(count: int, as_of: datetime, expected_mode: str) -> None:
        changes.apply(next(round_), as_of)
        modes = [
            run_once(run_cli, sharded, as_of=as_of, env={**mode, "MONTAGE_SHARD": key}).log("Batch job started")["mode"]
            for key in shard_keys(count)
        ]
        run_once(run_cli, reference, as_of=as_of, env={**mode, "MONTAGE_SHARD": "0/1"})
        assert_same_tables(sharded, reference)
        assert modes == [expected_mode] * count

    era(4, T0, "full")
    era(4, T0, "incremental")
    era(2, T0 + timedelta(days=40), "full")  # 4 -> 2: the first run of each new shard is full
    era(2, T0 + timedelta(days=40), "incremental")
    era(4, T0 + timedelta(days=1), "full")  # 2 -> 4: full again, whatever the stale watermarks say
    era(4, T0 + timedelta(days=1), "incremental")
    era(2, T0 + timedelta(days=2), "full")
    assert bookkept_shards(sharded, "montage_job_watermarks") == sorted(shard_keys(2) + shard_keys(4))


def test_a_new_shard_count_starts_each_shard_over_in_full(duckdb_url: str, run_cli: RunCli) -> None:
    """The rule on the embedded database too, and only another count's full or incremental runs count."""
    data = Checkins(duckdb_url)
    data.add_many(checkin(new_id(), AS_OF - timedelta(days=day), tags=["tea"]) for day in (1, 2, 3))

    def mode_of(key: str, *args: str) -> tuple[str, list[str]]:
        result = run_once(run_cli, duckdb_url, *args, env={"MONTAGE_SHARD": key})
        warnings = [line["message"] for line in result.logs if line.get("level") == "warn"]
        return result.log("Batch job started")["mode"], warnings

    assert mode_of("0/1")[0] == "full"
    assert mode_of("0/1") == ("incremental", [])
    mode_of("1/2", "--user-id", data.all()[0]["user_id"])  # a named-user run under another count: no change
    assert mode_of("0/1") == ("incremental", [])
    assert mode_of("1/2")[0] == "full"
    mode, warnings = mode_of("0/1")
    assert mode == "full" and any("another shard count" in warning for warning in warnings), warnings
    assert mode_of("0/1") == ("incremental", [])
