"""Baseline 3: the transfer floor, moving the job's bytes with no computation at all.

Read: the engine's extraction query over every user, streamed as Arrow (binary COPY through
ADBC on PostgreSQL, DuckDB's Arrow export), batches counted and dropped. Write: the rows the
engine produced (montages and items read back from its tables, in the shape the engine
stages them, prepared untimed into Arrow IPC files under OUT) bulk-loaded into fresh,
unindexed tables with COPY (PostgreSQL) or CREATE TABLE AS over the Arrow stream (DuckDB).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from benchmarks.cpu_stats import CpuTimes
from benchmarks.database import BenchDatabase
from montage_vec.stores.statements import EXTRACT_ALL_CHECKINS

# The job's extraction, without a chunk's users, from the default schema's check-ins.
READ_ALL = EXTRACT_ALL_CHECKINS.replace("{checkins}", '"checkins"')
STAGED_MONTAGES = """
SELECT "user_id"::VARCHAR AS "user_id", "kind", "interest", "item_count", "valid_until", "generated_at",
       "cache_expires_at", "job_id"
FROM "montages"
"""
STAGED_ITEMS = """
SELECT m."user_id"::VARCHAR AS "user_id", m."kind", m."interest", i."position", i."checkin_id"::VARCHAR AS "checkin_id",
       i."checkin_created_at", i."widget_type", i."widget_metadata"::VARCHAR AS "widget_metadata"
FROM "montage_items" i JOIN "montages" m ON m."id" = i."montage_id"
"""
TABLES = ("floor_montages", "floor_items")


@dataclass(frozen=True)
class FloorResult:
    read_seconds: float
    read_rows: int
    read_bytes: int
    write_seconds: float
    write_rows: int
    write_bytes: int
    cpu: CpuTimes  # of the timed read and writes together

    @property
    def seconds(self) -> float:
        return self.read_seconds + self.write_seconds


def _export(db: BenchDatabase, sql: str, path: Path) -> None:
    """Untimed: the rows to write, as an Arrow IPC stream file (bounded memory)."""
    with db.reader(sql) as batches, pa.OSFile(str(path), "wb") as sink:
        writer = pa.ipc.new_stream(sink, batches.schema)
        for batch in batches:
            writer.write_batch(batch)
        writer.close()


def run_transfer_floor(db: BenchDatabase, scratch: Path) -> FloorResult:
    scratch.mkdir(parents=True, exist_ok=True)
    files = {"floor_montages": scratch / "floor_montages.arrows", "floor_items": scratch / "floor_items.arrows"}
    _export(db, STAGED_MONTAGES, files["floor_montages"])
    _export(db, STAGED_ITEMS, files["floor_items"])
    db.drop_tables(*TABLES)

    read_rows = read_bytes = 0
    cpu_before = db.cpu_times()
    started = time.perf_counter()
    with db.reader(READ_ALL) as batches:
        for batch in batches:
            read_rows += batch.num_rows
            read_bytes += batch.nbytes
    read_seconds = time.perf_counter() - started

    write_rows = write_bytes = 0
    write_seconds = 0.0
    for table, path in files.items():
        with pa.memory_map(str(path)) as source:
            reader = pa.ipc.open_stream(source)
            started = time.perf_counter()
            db.ingest(table, reader, create=True)
            write_seconds += time.perf_counter() - started
    cpu = db.cpu_times().minus(cpu_before)
    for table, path in files.items():
        write_rows += int(db.scalar(f'SELECT count(*) FROM "{table}"'))  # noqa: S608 - constant names
        write_bytes += path.stat().st_size
    db.drop_tables(*TABLES)
    for path in files.values():
        path.unlink(missing_ok=True)
    return FloorResult(read_seconds, read_rows, read_bytes, write_seconds, write_rows, write_bytes, cpu)
