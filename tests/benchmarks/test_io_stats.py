"""The benchmark's "Database I/O" numbers: a finished child process's reads show up in the statistics
(PostgreSQL 15 publishes a session's statistics only as its backend exits), and the section reads
"not applicable" where a number does not apply. No timings are asserted."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import adbc_driver_postgresql.dbapi as pg
import pytest

from benchmarks.database import PostgresDatabase
from benchmarks.duck_database import DuckDatabase
from benchmarks.io_stats import DatabaseIo, IoCounters, IoSnapshot, TableIo, TableSize, render_io
from montage_vec.stores.backends.postgres import session_uri
from tests.support.database import admin_url

# Like an engine run: a child process whose session (with the product's application_name) ends with it;
# an index probe, a heap scan, and a sort too big for its work_mem, so it spills to a temporary file.
CHILD = """
import sys
import adbc_driver_postgresql.dbapi as pg
with pg.connect(sys.argv[1], autocommit=True) as connection, connection.cursor() as cursor:
    for sql in ("SET enable_seqscan = off", "SELECT count(*) FROM checkins WHERE id < 500",
                "SET enable_seqscan = on", "SET work_mem = '64kB'", "SELECT tag FROM checkins ORDER BY tag"):
        cursor.execute(sql)
        if sql.startswith("SELECT"):
            cursor.fetchall()
"""


@pytest.mark.postgres
def test_a_child_sessions_reads_are_counted_once_it_has_ended(postgres_url: str) -> None:
    db = PostgresDatabase(admin_url(), urlsplit(postgres_url).path.lstrip("/"))
    db.execute("CREATE TABLE checkins (id bigint PRIMARY KEY, tag text)")
    db.execute("INSERT INTO checkins SELECT g, md5(g::text) FROM generate_series(1, 20000) AS g")
    before = db.io_snapshot()

    subprocess.run([sys.executable, "-c", CHILD, session_uri(postgres_url)], check=True, timeout=60)
    run = db.io_snapshot().minus(before)

    assert run.counters is not None
    checkins = run.counters.tables["checkins"]
    assert checkins.heap_read + checkins.heap_hit > 0
    assert checkins.idx_read + checkins.idx_hit > 0
    assert run.counters.blks_read + run.counters.blks_hit >= checkins.heap_read + checkins.heap_hit
    assert run.counters.temp_files > 0 and run.counters.temp_bytes > 0
    assert [size.name for size in db.table_sizes(("checkins", "montages"))] == ["checkins"]
    assert db.table_sizes(("checkins",))[0].index_bytes > 0


@pytest.mark.postgres
def test_the_snapshot_waits_for_a_session_that_is_still_ending(postgres_url: str) -> None:
    """A session's reads after its first statement are published at its end at the latest: the
    snapshot must wait for the engine's sessions to end rather than read what is published so far."""
    db = PostgresDatabase(admin_url(), urlsplit(postgres_url).path.lstrip("/"))
    db.execute("CREATE TABLE montages (id bigint PRIMARY KEY)")
    db.execute("INSERT INTO montages SELECT generate_series(1, 5000)")
    before = db.io_snapshot()
    scanned = threading.Event()

    def engine_session() -> None:
        with pg.connect(session_uri(postgres_url), autocommit=True) as connection, connection.cursor() as cursor:
            for sql in ("SELECT 1", "SELECT count(*) FROM montages"):
                cursor.execute(sql)
                cursor.fetchall()
            scanned.set()
            time.sleep(0.5)  # the session ends after the snapshot has started

    session = threading.Thread(target=engine_session)
    session.start()
    assert scanned.wait(30)
    run = db.io_snapshot().minus(before)
    session.join()

    assert run.counters is not None
    montages = run.counters.tables["montages"]
    assert montages.heap_read + montages.heap_hit > 0


@pytest.mark.postgres
def test_the_settings_are_the_servers(postgres_url: str) -> None:
    io = PostgresDatabase(admin_url(), urlsplit(postgres_url).path.lstrip("/")).io_settings()
    assert set(io.settings) == {"shared_buffers", "effective_cache_size", "work_mem", "max_wal_size"}
    assert all(value[0].isdigit() for value in io.settings.values())
    assert io.block_size in (4096, 8192, 16384, 32768)


def test_postgresql_section_shows_hit_ratios_per_table() -> None:
    counters = IoCounters({"checkins": TableIo(1, 3, 0, 4), "montage_items": TableIo(0, 0, 0, 0)}, 1, 7, 8192, 1)
    io = render_io(_postgres_io(counters), [("full", "full")], 2**30)
    text = "\n".join(io)
    assert "| checkins | 1 (8.0 KiB) / 3 | 75.0% | 0 (0 B) / 4 | 100.0% |" in text
    assert "| montage_items | 0 (0 B) / 0 | - | 0 (0 B) / 0 | - |" in text  # no accesses, no ratio
    assert "| full | 1 (8.0 KiB) / 7 | 87.5% | 8.0 KiB in 1 files | 2.0 MiB |" in text
    assert "| DUCKDB_MEMORY_LIMIT | not applicable |" in text


def test_duckdb_section_says_what_does_not_apply(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DUCKDB_MEMORY_LIMIT", "64MB")
    io = DuckDatabase(tmp_path / "bench.duckdb").io_settings()
    io.runs["full"] = IoSnapshot(None, 0)
    text = "\n".join(render_io(io, [("full", "full")], 2**30))
    assert "| DUCKDB_MEMORY_LIMIT | 64MB |" in text
    assert "| shared_buffers | not applicable |" in text
    assert "Per-table hit ratios: not applicable" in text
    assert "| full | not applicable | not applicable | not applicable | 0 B |" in text


def _postgres_io(counters: IoCounters) -> DatabaseIo:
    settings = {"shared_buffers": "128MB", "effective_cache_size": "4GB", "work_mem": "4MB", "max_wal_size": "1GB"}
    io = DatabaseIo("postgresql", settings, 8192, [TableSize("checkins", 2**20, 2**19)], 2**21)
    io.runs["full"] = IoSnapshot(counters, 2**21)
    return io
