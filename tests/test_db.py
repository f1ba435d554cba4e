"""The library API (`montage_vec.connect` and `Database`) against real databases, both backends."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

import montage_vec
from montage_vec.errors import ConfigError
from tests.support.data import (
    AS_OF,
    SyntheticDatabase,
    as_rows,
    checkin,
    days,
    load_checkins,
    load_frame,
    new_id,
)
from tests.support.database import execute

USERS = 40


@pytest.fixture
def loaded(database_url: str) -> SyntheticDatabase:
    database = SyntheticDatabase(database_url, USERS)
    load_frame(database_url, database.frame())
    return database


def test_read_returns_what_a_run_stored_and_compute_agrees(loaded: SyntheticDatabase) -> None:
    with montage_vec.connect(loaded.url) as db:
        summary = db.run(as_of=loaded.as_of)
        assert summary.status == "completed", summary.error_text
        stored = db.read()
        assert as_rows(stored.montages, stored.items) == loaded.expected()
        computed = db.compute(db.checkins(), as_of=loaded.as_of)
    joined = computed.montages.join(stored.montages, on="montage_id", how="full", suffix="_stored")
    assert joined["user_id"].null_count() == 0 and joined["user_id_stored"].null_count() == 0, "ids differ"
    assert set(stored.montages.columns) >= {"montage_id", "generated_at", "cache_expires_at", "job_id"}


def test_read_filters_users_and_kinds(loaded: SyntheticDatabase) -> None:
    some = loaded.user_ids()[:3]
    with montage_vec.connect(loaded.url) as db:
        db.run(as_of=loaded.as_of)
        mine = db.read(user_ids=some)
        assert set(mine.montages["user_id"]) <= set(some)
        assert as_rows(mine.montages, mine.items) == loaded.expected(only=some)
        general = db.read(kinds=["general"])
        assert set(general.montages["kind"]) == {"general"} and set(general.items["kind"]) == {"general"}
        assert db.read(user_ids=[new_id()]).montages.is_empty()
        with pytest.raises(ConfigError, match="unknown montage kind"):
            db.read(kinds=["favourite"])
        with pytest.raises(ConfigError, match="not a user id"):
            db.read(user_ids=["42"])


def test_checkins_of_some_users_are_the_engine_columns(loaded: SyntheticDatabase) -> None:
    some = loaded.user_ids()[:2]
    with montage_vec.connect(loaded.url) as db:
        checkins = db.checkins(user_ids=some)
    assert set(checkins["user_id"]) == set(some)
    assert {"id", "user_id", "created_at", "tags", "updated_at"} <= set(checkins.columns)
    assert checkins.height == loaded.frame().filter(pl.col("user_id").is_in(some)).height


def test_explain_after_a_run_is_unchanged_and_sees_an_edit(database_url: str) -> None:
    user = new_id()
    rows = [checkin(user, AS_OF - days(n), tags=["coffee"], text_content=f"cup {n}") for n in range(1, 5)]
    load_checkins(database_url, rows)
    with montage_vec.connect(database_url) as db:
        db.run(as_of=AS_OF)
        explanation = db.explain(user, as_of=AS_OF)
        assert explanation.diff is not None
        assert explanation.diff.counts() == {"added": 0, "removed": 0, "changed": 0, "unchanged": 2}
        assert explanation.tags.filter(pl.col("tag") == "coffee")["qualifies"].to_list() == [True]
        load_checkins(database_url, [{**rows[0], "text_content": "tea after all", "updated_at": AS_OF}])
        edited = db.explain(user, as_of=AS_OF)
    assert edited.diff is not None
    assert edited.diff.counts()["changed"] == 2  # the check-in is in the general and the coffee montage
    assert edited.diff.items["changed_fields"].to_list() == [["widget_metadata"], ["widget_metadata"]]


def test_explain_says_when_a_user_is_set_aside_for_an_unsupported_time(postgres_url: str) -> None:
    user = new_id()
    load_checkins(postgres_url, [checkin(user, AS_OF - days(1))])
    execute(postgres_url, f"UPDATE checkins SET created_at = 'infinity' WHERE user_id = '{user}'")
    with montage_vec.connect(postgres_url) as db:
        explanation = db.explain(user, as_of=AS_OF)
    assert explanation.rejected is not None and "infinity" in explanation.rejected
    assert explanation.montages.montages.is_empty() and explanation.diff is None


def test_compute_takes_a_minimal_frame_with_the_configured_contract() -> None:
    user = new_id()
    frame = pl.DataFrame(
        {
            "id": [new_id() for _ in range(5)],
            "user_id": [user] * 5,
            "created_at": [AS_OF - timedelta(hours=n) for n in range(5)],
            "privacy": ["public"] * 5,
        }
    )
    with montage_vec.connect(montage_max_items=2) as db:
        result = db.compute(frame, as_of=AS_OF)
    assert result.montages["item_count"].to_list() == [2]
    assert not Path("montage.duckdb").exists(), "computing must not create the default database"


LIBRARY_CALLER = """
import sys
from datetime import datetime
from loguru import logger
import montage_vec

lines = []
logger.remove()
logger.add(lines.append, level="DEBUG")
as_of = datetime.fromisoformat(sys.argv[2])
with montage_vec.connect(sys.argv[1]) as db:
    db.run(as_of=as_of, dry_run=True)
    print("before enabling:", len(lines))
    logger.enable("montage_vec")
    db.run(as_of=as_of, dry_run=True)
    print("after enabling:", len(lines))
"""


def test_the_library_logs_nothing_unless_enabled(loaded: SyntheticDatabase) -> None:
    """In a fresh process, as a library caller has it (the tests' own CLI runs enable the logs)."""
    caller = subprocess.run(
        [sys.executable, "-c", LIBRARY_CALLER, loaded.url, loaded.as_of.isoformat()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert caller.returncode == 0, caller.stderr
    before, after = caller.stdout.splitlines()
    assert before == "before enabling: 0"
    assert int(after.removeprefix("after enabling: ")) > 0
    assert caller.stderr == ""


def test_run_rejects_contradictions_and_writes_in_read_only(loaded: SyntheticDatabase) -> None:
    with montage_vec.connect(loaded.url) as db, pytest.raises(ConfigError, match="contradict"):
        db.run(full=True, user_ids=loaded.user_ids()[:1])
    with montage_vec.connect(loaded.url, read_only=True) as db, pytest.raises(ConfigError, match="read_only"):
        db.run()


def test_the_package_is_typed() -> None:
    package = Path(montage_vec.__file__).parent
    assert (package / "py.typed").is_file()
    assert "connect" in montage_vec.__all__ and callable(montage_vec.connect)


def test_arguments_are_checked_with_clear_errors(loaded: SyntheticDatabase) -> None:
    user = loaded.user_ids()[0]
    with pytest.raises(ConfigError, match=r"unknown setting.*montage_max_itemz"):
        montage_vec.connect(loaded.url, montage_max_itemz=5)
    with montage_vec.connect(loaded.url) as db:
        with pytest.raises(ConfigError, match="user_ids is empty"):
            db.run(user_ids=[], dry_run=True)
        with pytest.raises(ConfigError, match="as_of: not an ISO 8601"):
            db.explain(user, as_of="yesterday")
        with pytest.raises(ConfigError, match=r"params:.*max_itemz"):
            db.compute(db.checkins(user_ids=[user]), params={"max_itemz": 3})
        with pytest.raises(montage_vec.InputDataError, match="got list"):
            db.compute([{"id": "x"}])  # type: ignore[arg-type]


def test_text_times_lazy_frames_and_dict_params_are_taken(loaded: SyntheticDatabase) -> None:
    user = loaded.user_ids()[0]
    with montage_vec.connect(loaded.url) as db:
        checkins = db.checkins(user_ids=[user])
        expected = db.compute(checkins, as_of=loaded.as_of, params=montage_vec.MontageParams(max_items=2))
        lazy = db.compute(checkins.lazy(), as_of=loaded.as_of.isoformat(), params={"max_items": 2})
        explained = db.explain(user, as_of=loaded.as_of.replace(tzinfo=None).isoformat())
    assert lazy.montages.equals(expected.montages) and lazy.items.equals(expected.items)
    assert explained.as_of == loaded.as_of


def test_a_plain_path_is_a_duckdb_file_and_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "montage.duckdb"
    with montage_vec.connect(str(missing)) as db, pytest.raises(montage_vec.MontageVecError, match="no DuckDB file"):
        db.read()
    assert not missing.parent.exists()
    with montage_vec.connect(str(tmp_path / "new.duckdb"), create=True) as db:
        assert db.migrate(), "a new file gets every migration"
        assert db.read().montages.is_empty()
