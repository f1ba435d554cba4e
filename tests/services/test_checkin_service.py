"""CHECKIN_SOURCE=http against a real check-in service on 127.0.0.1 serving the documented
endpoints (montage_vec/services/checkin_service.py) from an in-memory list of check-ins."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import job_id_of, run_once
from tests.support.data import AS_OF, checkin, days, expected_montages, load_checkins, new_id, stored_montages
from tests.support.database import query
from tests.support.outbox import RUNS_QUERY
from tests.support.servers import FakeService, Reply, Request, closed_port_url

API_KEY = "checkin-service-key-Rw4x"
PAGE_SIZE = 7
PLUS_TWO = timezone(timedelta(hours=2))
BASE = "/internal/checkins"


def iso(moment: datetime | None, zone: timezone = UTC) -> str | None:
    return None if moment is None else moment.astimezone(zone).isoformat()


class CheckinServiceData:
    """The check-in service's data and its four bulk endpoints, with cursor pagination."""

    def __init__(self, rows: list[dict[str, Any]], api_key: str = API_KEY) -> None:
        self._lock = threading.Lock()
        self.rows = {row["id"]: row for row in rows}
        self.api_key = api_key

    def put(self, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            self.rows.update({row["id"]: row for row in rows})

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.rows.values())

    def respond(self, request: Request) -> Reply:
        if request.headers.get("x-api-key") != self.api_key:
            return Reply.of({"error": "unauthorized"}, status=401)
        rows = sorted(self.all(), key=lambda row: row["id"])
        if request.method == "GET" and request.path == f"{BASE}/latest-update":
            not_after = datetime.fromisoformat(request.query["not_after"])
            stamps = [row["updated_at"] for row in rows if row["updated_at"] <= not_after]
            return Reply.of({"max_updated_at": iso(max(stamps)) if stamps else None})
        if request.method == "GET" and request.path == f"{BASE}/changed-users":
            since = datetime.fromisoformat(request.query["since"])
            users = sorted({row["user_id"] for row in rows if row["updated_at"] > since})
            return self._page("user_ids", users, request.query["limit"], request.query.get("cursor"))
        if request.method == "GET" and request.path == f"{BASE}/users":
            users = sorted({row["user_id"] for row in rows})
            return self._page("user_ids", users, request.query["limit"], request.query.get("cursor"))
        if request.method == "POST" and request.path == f"{BASE}/query":
            body = request.json()
            wanted = set(body["user_ids"])
            found = [self._render(row) for row in rows if row["user_id"] in wanted]
            return self._page("checkins", found, body["limit"], body.get("cursor"))
        return Reply.of({"error": "not found"}, status=404)

    @staticmethod
    def _page(key: str, items: list[Any], limit: Any, cursor: str | None) -> Reply:
        start = int(cursor.removeprefix("after:")) if cursor else 0
        end = start + int(limit)
        return Reply.of({key: items[start:end], "next_cursor": f"after:{end}" if end < len(items) else None})

    @staticmethod
    def _render(row: dict[str, Any]) -> dict[str, Any]:
        """The documented row: ISO 8601 with offsets (not all UTC), tags a list or null."""
        rendered = {name: row[name] for name in row if not isinstance(row[name], datetime)}
        rendered["created_at"] = iso(row["created_at"], PLUS_TWO)
        rendered["updated_at"] = iso(row["updated_at"])
        rendered["deleted_at"] = iso(row["deleted_at"], PLUS_TWO)
        rendered["tags"] = row["tags"] or None
        return rendered


def varied_checkins(users: int, seed: int) -> list[dict[str, Any]]:
    """A mix of privacy, deletions, widgets and tags, as the engine sees in production."""
    rng = random.Random(seed)
    rows = []
    for _ in range(users):
        user = new_id()
        for _ in range(rng.randint(1, 9)):
            created = AS_OF - timedelta(days=rng.uniform(0.5, 45))
            fields: dict[str, Any] = {
                "privacy": rng.choice(["public", "public", "friends", "private"]),
                "tags": rng.sample(["Coffee", "coffee ", "hiking", "Books", "#hiking"], rng.randint(0, 3)),
                "updated_at": created + timedelta(hours=rng.uniform(0, 48)),
            }
            if rng.random() < 0.1:
                fields["deleted_at"] = created + timedelta(days=1)
            if rng.random() < 0.4:
                fields["text_content"] = f"note {rng.randint(0, 999)}"
            if rng.random() < 0.3:
                fields["media_url"], fields["media_type"] = "https://cdn.example/p.jpg", "image"
            if rng.random() < 0.3:
                fields["location_name"] = rng.choice(["park", "café", 'the "dock"'])
            rows.append(checkin(user, created, **fields))
    # Nothing may be stamped after the run starts, or the service's latest-update would hide it.
    assert max(row["updated_at"] for row in rows) < datetime.now(UTC)
    return rows


def http_env(service: FakeService, **extra: str) -> dict[str, str]:
    return {
        "CHECKIN_SOURCE": "http",
        "CHECKIN_SERVICE_URL": service.url,
        "CHECKIN_SERVICE_API_KEY": API_KEY,
        "CHECKIN_SERVICE_PAGE_SIZE": str(PAGE_SIZE),
        **extra,
    }


def migrated_empty(url: str) -> None:
    load_checkins(url, [])


def watermark(url: str) -> datetime | None:
    found = query(url, "SELECT watermark FROM montage_job_watermarks")["watermark"].to_list()
    return found[0] if found else None


def test_http_source_gives_the_same_montages_as_the_database(database_url: str, run_cli, tmp_path: Path) -> None:
    rows = varied_checkins(users=12, seed=7)
    migrated_empty(database_url)
    data = CheckinServiceData(rows)
    with FakeService(data.respond) as service:
        result = run_once(run_cli, database_url, env=http_env(service, MONTAGE_BATCH_SIZE="5"))
        requests = service.received()

    expected = expected_montages(rows, AS_OF)
    assert expected[0], "the sample should produce montages"
    assert stored_montages(database_url) == expected
    assert result.log("Batch job completed")["processed"] == 12
    # The job never copies check-ins into its own database.
    assert query(database_url, "SELECT count(*) AS n FROM checkins")["n"][0] == 0
    assert watermark(database_url) == max(row["updated_at"] for row in rows)

    # Same data through the database source: the same montages.
    database_source = f"duckdb:///{tmp_path}/database_source.duckdb"
    load_checkins(database_source, rows)
    run_once(run_cli, database_source, env={"MONTAGE_BATCH_SIZE": "5", "CHECKIN_SOURCE": "database"})
    assert stored_montages(database_source) == expected

    # What the service saw: the key everywhere, the page size, and cursors followed.
    assert {request.headers["x-api-key"] for request in requests} == {API_KEY}
    user_pages = [r for r in requests if r.path == f"{BASE}/users"]
    assert [r.query.get("cursor") for r in user_pages] == [None, "after:7"]
    assert all(r.query["limit"] == str(PAGE_SIZE) for r in user_pages)
    query_pages = [r.json() for r in requests if r.path == f"{BASE}/query"]
    assert all(page["limit"] == PAGE_SIZE for page in query_pages)
    assert any(page.get("cursor") for page in query_pages), "no chunk needed a second page"
    asked = [user for page in query_pages if not page.get("cursor") for user in page["user_ids"]]
    assert sorted(asked) == sorted({row["user_id"] for row in rows})


def test_incremental_run_asks_for_changed_users_since_the_watermark(duckdb_url: str, run_cli) -> None:
    rows = varied_checkins(users=6, seed=11)
    migrated_empty(duckdb_url)
    data = CheckinServiceData(rows)
    env_extra = {"WATERMARK_OVERLAP": "0s"}
    with FakeService(data.respond) as service:
        env = http_env(service, **env_extra)
        run_once(run_cli, duckdb_url, env=env)
        first_mark = watermark(duckdb_url)
        assert first_mark == max(row["updated_at"] for row in rows)

        # The service's data changes: one user takes up hiking, one deletes a check-in, one is new.
        hiker, deleter = rows[0]["user_id"], rows[-1]["user_id"]
        newcomer = new_id()
        stamp = AS_OF + timedelta(hours=1)
        changes = [
            checkin(hiker, AS_OF - days(i + 1), tags=["Hiking"], updated_at=stamp + timedelta(minutes=i))
            for i in range(3)
        ]
        changes += [checkin(newcomer, AS_OF - days(2), text_content="hello", updated_at=stamp)]
        gone = next(row for row in rows if row["user_id"] == deleter)
        changes.append({**gone, "deleted_at": stamp, "updated_at": stamp + timedelta(minutes=30)})
        data.put(changes)
        before = len(service.received())

        second = run_once(run_cli, duckdb_url, env=env)
        requests = service.received()[before:]

    started = second.log("Batch job started")
    assert started["mode"] == "incremental"
    assert started["candidates"] == 3
    asked = [r for r in requests if r.path == f"{BASE}/changed-users"]
    assert asked and datetime.fromisoformat(asked[0].query["since"]) == first_mark
    assert not [r for r in requests if r.path == f"{BASE}/users"]
    queried = {user for r in requests if r.path == f"{BASE}/query" for user in r.json()["user_ids"]}
    assert queried == {hiker, deleter, newcomer}
    assert stored_montages(duckdb_url) == expected_montages(data.all(), AS_OF)
    assert watermark(duckdb_url) == stamp + timedelta(minutes=30)
    assert job_id_of(second)


def test_service_down_fails_the_run_clearly_without_a_watermark(duckdb_url: str, run_cli) -> None:
    migrated_empty(duckdb_url)
    env = {"DATABASE_URL": duckdb_url, "CHECKIN_SOURCE": "http", "CHECKIN_SERVICE_URL": closed_port_url()}
    result = run_cli("once", env={**env, "CHECKIN_SERVICE_API_KEY": API_KEY})
    assert result.exit_code == 1
    assert "check-in service" in result.stderr
    assert f"{BASE}/latest-update" in result.stderr
    assert "Connect" in result.stderr or "refused" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert API_KEY not in result.stdout + result.stderr
    assert watermark(duckdb_url) is None
    assert query(duckdb_url, "SELECT count(*) AS n FROM montages")["n"][0] == 0


def test_service_failing_mid_run_keeps_the_watermark_and_logs_the_run(duckdb_url: str, run_cli) -> None:
    rows = varied_checkins(users=3, seed=3)
    migrated_empty(duckdb_url)
    data = CheckinServiceData(rows)

    def no_queries(request: Request) -> Reply:
        if request.path == f"{BASE}/query":
            return Reply(503, b"maintenance", "text/plain")
        return data.respond(request)

    with FakeService(no_queries) as service:
        one_chunk = {"CHUNK_RETRY_ATTEMPTS": "0", "MAX_CONCURRENT_GENERATIONS": "1"}
        result = run_cli("once", env={"DATABASE_URL": duckdb_url, **http_env(service, **one_chunk)})
        assert len(service.received("POST", f"{BASE}/query")) == 4  # the client's 3 retries, once each chunk try
    assert result.exit_code == 1
    assert f"{BASE}/query" in result.stderr and "503" in result.stderr
    assert watermark(duckdb_url) is None
    (run,) = query(duckdb_url, RUNS_QUERY).to_dicts()
    assert run["status"] == "failed"
    assert "check-in service" in run["message"]


MALFORMED = [
    ("latest-update", b"<html>upstream error</html>", "not JSON"),
    ("users", b"[]", "not a JSON object"),
    ("users", b'{"ids": []}', "lacks a 'user_ids' list"),
    ("query", b'{"checkins": [{"id": ', "not JSON"),
]


@pytest.mark.parametrize(("endpoint", "body", "complaint"), MALFORMED)
def test_malformed_answers_fail_the_run_clearly(
    duckdb_url: str, run_cli, endpoint: str, body: bytes, complaint: str
) -> None:
    rows = varied_checkins(users=2, seed=5)
    migrated_empty(duckdb_url)
    data = CheckinServiceData(rows)

    def broken(request: Request) -> Reply:
        if request.path == f"{BASE}/{endpoint}":
            return Reply(200, body)
        return data.respond(request)

    with FakeService(broken) as service:
        result = run_cli("once", env={"DATABASE_URL": duckdb_url, **http_env(service, CHUNK_RETRY_ATTEMPTS="0")})
    assert result.exit_code == 1, result.stdout
    assert f"check-in service {BASE}/{endpoint}" in result.stderr
    assert complaint in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert watermark(duckdb_url) is None


def test_wrong_api_key_is_final_at_once(duckdb_url: str, run_cli) -> None:
    migrated_empty(duckdb_url)
    data = CheckinServiceData(varied_checkins(users=1, seed=1), api_key="the-right-key")
    with FakeService(data.respond) as service:
        result = run_cli("once", env={"DATABASE_URL": duckdb_url, **http_env(service)})
        assert len(service.received()) == 1  # 401 is not retried
    assert result.exit_code == 1
    assert "HTTP 401" in result.stderr
    assert API_KEY not in result.stdout + result.stderr


def test_a_bad_row_from_the_service_isolates_its_user(duckdb_url: str, run_cli) -> None:
    good = [new_id(), new_id(), new_id()]
    bad = new_id()
    rows = [checkin(user, AS_OF - days(i + 1), tags=["tea"]) for user in good for i in range(3)]
    rows += [checkin(bad, AS_OF - days(i + 1.5), tags=["tea"]) for i in range(3)]  # its own timestamps
    migrated_empty(duckdb_url)
    data = CheckinServiceData(rows)

    def garble(request: Request) -> Reply:
        reply = data.respond(request)
        if request.path == f"{BASE}/query":
            return Reply(reply.status, reply.body.replace(iso(rows[-1]["created_at"], PLUS_TWO).encode(), b"yesterday"))
        return reply

    with FakeService(garble) as service:
        result = run_once(run_cli, duckdb_url, env=http_env(service))
    summary = result.log("Batch job completed")
    assert (summary["processed"], summary["successful"], summary["errors"]) == (4, 3, 1)
    good_rows = [row for row in rows if row["user_id"] != bad]
    assert stored_montages(duckdb_url) == expected_montages(good_rows, AS_OF)
    retry = query(duckdb_url, "SELECT user_id::VARCHAR AS user_id FROM montage_retry_users")["user_id"].to_list()
    assert retry == [bad]
