"""`once --as-of` is checked (issue 10, defects 7 and 9), on DuckDB and PostgreSQL.

An as_of more than MONTAGE_MAX_CLOCK_SKEW (default one day) ahead of the real clock would
age out interests that are still current, so it is refused as a setting (exit 2, nothing
written) unless `--allow-future`; one before 1970 is refused the same way (it used to end
in an unexpected OverflowError). And when a run's as_of is earlier than that of any run
since the shard's last full run (a run in the future, even one that failed half-way), the
run widens to a full one, which brings back the interests that run aged out; an
incremental run would only revisit changed users.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from montage_vec.job import chunks
from tests.support.cli import CliResult, RunCli, run_once
from tests.support.data import (
    AS_OF,
    JOB_TABLES,
    checkin,
    days,
    expected_montages,
    load_checkins,
    montages_by_user,
    new_id,
    run_rows,
    same_instant,
    stored_montages,
)
from tests.support.database import count

EXIT_CONFIG = 2
REWOUND = "as_of is earlier than a run's since the shard's last full run; running in full to restore what it aged out"


def coffee_users(url: str, now: datetime, users: int = 2) -> list[dict[str, Any]]:
    """`users` users with three coffee check-ins each, one a day before `now`: an interest, current at `now`."""
    user_ids = [new_id() for _ in range(users)]
    rows = [checkin(user, now - days(i + 1), tags=["coffee"]) for user in user_ids for i in range(3)]
    load_checkins(url, rows)
    return rows


def once(run_cli: RunCli, url: str, *args: str, env: dict[str, str] | None = None) -> CliResult:
    """`montage-vec once ARGS` against `url`, whatever its exit code."""
    return run_cli("once", *args, env={"DATABASE_URL": url, **(env or {})})


def nothing_written(url: str) -> dict[str, int]:
    return {table: count(url, table) for table in (*JOB_TABLES, "montage_job_leases") if count(url, table)}


def interests(url: str) -> set[tuple[str, str]]:
    """(user, interest) of every stored interest montage."""
    return {(user, name) for user, kinds in montages_by_user(url).items() for kind, name in kinds if kind == "interest"}


def started(result: CliResult) -> dict[str, Any]:
    return result.log("Batch job started")


# -- refused as_of values ------------------------------------------------------------------------


def test_an_as_of_beyond_the_clock_skew_is_refused_unless_allowed(database_url: str, run_cli: RunCli) -> None:
    coffee_users(database_url, AS_OF)
    ahead = (datetime.now(UTC) + days(2)).isoformat()

    refused = once(run_cli, database_url, "--as-of", ahead)

    assert refused.exit_code == EXIT_CONFIG, refused.everything()
    assert "MONTAGE_MAX_CLOCK_SKEW" in refused.stderr and "--allow-future" in refused.stderr, refused.everything()
    assert "Traceback" not in refused.stdout + refused.stderr
    assert nothing_written(database_url) == {}, "a refused run must not even record itself"

    allowed = once(run_cli, database_url, "--as-of", ahead, "--allow-future")

    assert allowed.exit_code == 0, allowed.everything()
    [run] = run_rows(database_url)
    assert run["status"] == "completed"
    assert same_instant(run["as_of"], datetime.fromisoformat(ahead))


def test_the_allowed_skew_is_montage_max_clock_skew(database_url: str, run_cli: RunCli) -> None:
    coffee_users(database_url, AS_OF)
    week = {"MONTAGE_MAX_CLOCK_SKEW": "7d"}
    now = datetime.now(UTC)

    within = once(run_cli, database_url, "--as-of", (now + days(2)).isoformat(), env=week)
    assert within.exit_code == 0, within.everything()

    beyond = once(run_cli, database_url, "--as-of", (now + days(8)).isoformat(), env=week)
    assert beyond.exit_code == EXIT_CONFIG, beyond.everything()
    assert "MONTAGE_MAX_CLOCK_SKEW" in beyond.stderr, beyond.everything()
    assert [run["status"] for run in run_rows(database_url)] == ["completed"], "only the run within the skew"


@pytest.mark.parametrize("as_of", ["0001-01-05", "1969-12-31T23:59:59+00:00"])
def test_an_as_of_before_1970_is_refused_as_a_setting(database_url: str, run_cli: RunCli, as_of: str) -> None:
    """0001-01-05 used to end in `unexpected OverflowError` (exit 1): as_of minus the interest
    window leaves the dates Python can represent."""
    coffee_users(database_url, AS_OF)

    result = once(run_cli, database_url, "--as-of", as_of)

    assert result.exit_code == EXIT_CONFIG, result.everything()
    assert "--as-of" in result.stderr and "1970-01-01" in result.stderr, result.everything()
    assert "OverflowError" not in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert nothing_written(database_url) == {}


# -- a run earlier than one since the last full run ---------------------------------------------------


def test_a_run_at_the_real_time_after_a_future_run_restores_the_interests(database_url: str, run_cli: RunCli) -> None:
    """The defect: `once --as-of <future>` removed interests (right for that time), and the next
    run at the real time, incremental, left them removed: no check-in had changed."""
    rows = coffee_users(database_url, datetime.now(UTC))
    everyone = {(row["user_id"], "coffee") for row in rows}

    now_run = once(run_cli, database_url)
    assert now_run.exit_code == 0, now_run.everything()
    assert interests(database_url) == everyone

    future = (datetime.now(UTC) + days(5 * 365)).isoformat()
    future_run = once(run_cli, database_url, "--as-of", future, "--allow-future")
    assert future_run.exit_code == 0, future_run.everything()
    assert interests(database_url) == set(), "aged out, five years on"

    back = once(run_cli, database_url)

    assert back.exit_code == 0, back.everything()
    rewound = back.log(REWOUND)
    assert rewound["level"] == "warn", rewound
    assert started(back)["mode"] == "full"
    assert back.log("Batch job completed")["mode"] == "full"
    assert interests(database_url) == everyone
    as_of = datetime.fromisoformat(started(back)["as_of"])
    assert same_instant(datetime.fromisoformat(rewound["as_of"]), as_of)
    assert stored_montages(database_url) == expected_montages(rows, as_of), "what a fresh full run computes"
    assert [run["mode"] for run in run_rows(database_url)] == ["full", "incremental", "full"]


def test_only_an_earlier_as_of_widens_a_run(database_url: str, run_cli: RunCli) -> None:
    coffee_users(database_url, AS_OF)
    run_once(run_cli, database_url, as_of=AS_OF)

    runs = [
        run_once(run_cli, database_url, as_of=AS_OF),  # the same as_of again
        run_once(run_cli, database_url, as_of=AS_OF + days(1)),  # later: the ordinary nightly run
    ]
    for result in runs:
        assert started(result)["mode"] == "incremental", result.everything()
        assert REWOUND not in result.messages()

    earlier = run_once(run_cli, database_url, as_of=AS_OF)

    assert started(earlier)["mode"] == "full", earlier.everything()
    assert REWOUND in earlier.messages()
    assert [run["mode"] for run in run_rows(database_url)] == ["full", "incremental", "incremental", "full"]


def test_a_future_run_that_failed_half_way_still_widens_the_next_run(
    database_url: str, run_cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its first chunk committed at the future as_of before the run failed: not a completed run,
    and still one whose aged-out interests the next run must restore."""
    rows = coffee_users(database_url, datetime.now(UTC), users=3)
    assert once(run_cli, database_url).exit_code == 0
    engine = chunks.compute_montages
    calls: list[int] = []

    def second_chunk_fails(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("the process died here")
        return engine(*args, **kwargs)

    monkeypatch.setattr(chunks, "compute_montages", second_chunk_fails)
    future = (datetime.now(UTC) + days(5 * 365)).isoformat()
    args = ("--as-of", future, "--allow-future", "--batch-size", "1", "--concurrency", "1")
    assert once(run_cli, database_url, *args).exit_code == 1
    monkeypatch.setattr(chunks, "compute_montages", engine)
    assert len(interests(database_url)) == 2, "the first chunk's user lost its interest"

    back = once(run_cli, database_url)

    assert back.exit_code == 0, back.everything()
    assert started(back)["mode"] == "full" and REWOUND in back.messages()
    assert interests(database_url) == {(row["user_id"], "coffee") for row in rows}
