"""Where a run's reads came from (shared_buffers, the OS page cache, the disk), and what the server had to
hold them: memory settings and table sizes. The report's "Database I/O" section, so that a reader can tell
an I/O-bound run from a CPU-bound one.

PostgreSQL counts a block as *read* when it was not in shared_buffers; the OS may still have served it
from its page cache. The machine's own disk counters (/proc/diskstats) tell the two apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import adbc_driver_postgresql.dbapi as pg

from montage_vec.stores.backends.postgres import APPLICATION_NAME

if TYPE_CHECKING:
    from benchmarks.cpu_stats import CpuTimes

PG_SETTINGS = ("shared_buffers", "effective_cache_size", "work_mem", "max_wal_size")
IO_TABLES = ("checkins", "montages", "montage_items")
SECTOR_BYTES = 512  # /proc/diskstats counts 512-byte sectors whatever the device's block size
BACKENDS_GONE_TIMEOUT = 5.0
Rows: TypeAlias = Callable[[str], list[tuple[Any, ...]]]  # BenchDatabase.rows
_SETTINGS_SQL = """SELECT name, current_setting(name) FROM unnest(ARRAY['shared_buffers', 'effective_cache_size',
    'work_mem', 'max_wal_size', 'block_size']) AS name"""
_SIZES_SQL = """SELECT relname, pg_table_size(relid), pg_indexes_size(relid) FROM pg_stat_user_tables
    WHERE schemaname = current_schema() AND relname IN ('checkins', 'montages', 'montage_items')"""
_STATIO_SQL = """SELECT relname, heap_blks_read, heap_blks_hit, coalesce(idx_blks_read, 0), coalesce(idx_blks_hit, 0)
    FROM pg_statio_user_tables
    WHERE schemaname = current_schema() AND relname IN ('checkins', 'montages', 'montage_items')"""
# The engine's sessions and the benchmark's own carry the product's application_name (session_uri); a
# developer's psql on the database does not, and is not waited for.
_SESSIONS_SQL = """SELECT count(*) FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = $1"""
_DATABASE_SQL = """SELECT blks_read, blks_hit, temp_bytes, temp_files FROM pg_stat_database
    WHERE datname = current_database()"""


@dataclass(frozen=True)
class TableSize:
    name: str
    heap_bytes: int  # pg_table_size: heap, TOAST, free space and visibility maps
    index_bytes: int  # pg_indexes_size

    @property
    def total_bytes(self) -> int:  # = pg_total_relation_size
        return self.heap_bytes + self.index_bytes


@dataclass(frozen=True)
class TableIo:
    """Blocks of one table (heap, then its indexes) missed in / found in shared_buffers."""

    heap_read: int
    heap_hit: int
    idx_read: int
    idx_hit: int

    def minus(self, before: TableIo) -> TableIo:
        return TableIo(
            self.heap_read - before.heap_read,
            self.heap_hit - before.heap_hit,
            self.idx_read - before.idx_read,
            self.idx_hit - before.idx_hit,
        )


@dataclass(frozen=True)
class IoCounters:
    """PostgreSQL's cumulative block counters; a run's are the difference of two snapshots."""

    tables: dict[str, TableIo]
    blks_read: int  # pg_stat_database: every relation of the database, temporary tables included
    blks_hit: int
    temp_bytes: int  # sorts and hashes spilled to disk
    temp_files: int

    def minus(self, before: IoCounters) -> IoCounters:
        zero = TableIo(0, 0, 0, 0)
        tables = {name: io.minus(before.tables.get(name, zero)) for name, io in self.tables.items()}
        return IoCounters(
            tables,
            self.blks_read - before.blks_read,
            self.blks_hit - before.blks_hit,
            self.temp_bytes - before.temp_bytes,
            self.temp_files - before.temp_files,
        )


@dataclass(frozen=True)
class IoSnapshot:
    counters: IoCounters | None  # None where the database keeps no such statistics (DuckDB)
    disk_read_bytes: int | None  # None where /proc/diskstats cannot be read

    def minus(self, before: IoSnapshot) -> IoSnapshot:
        counters = self.counters.minus(before.counters) if self.counters and before.counters else None
        disk = _difference(self.disk_read_bytes, before.disk_read_bytes)
        return IoSnapshot(counters, disk)


def _difference(now: int | None, then: int | None) -> int | None:
    return now - then if now is not None and then is not None else None


@dataclass
class DatabaseIo:
    """Everything the report's "Database I/O" section shows."""

    backend: str  # BenchDatabase.backend
    settings: dict[str, str]  # PostgreSQL's memory settings, or DUCKDB_MEMORY_LIMIT
    block_size: int = 8192  # bytes per block in the statistics' counts
    sizes: list[TableSize] = field(default_factory=list)  # checkins after loading, the rest after the full run
    size_after_full: int = 0  # the whole database (DuckDB: the file) after the full run
    runs: dict[str, IoSnapshot] = field(default_factory=dict)  # run label -> what the run read
    cpu: dict[str, CpuTimes] = field(default_factory=dict)  # run label (or baseline) -> where its CPU went


def hit_ratio(read: int, hit: int) -> float | None:
    return hit / (read + hit) if read + hit else None


def disk_read_bytes() -> int | None:
    """Bytes the machine has read from its physical disks since boot, all processes together.

    Virtual devices (loop, zram, device-mapper) are left out: their reads either land on a physical
    disk as well, and would count twice, or never touch one.
    """
    try:
        physical = {entry.name for entry in Path("/sys/block").iterdir() if "/virtual/" not in str(entry.resolve())}
        sectors = 0
        for line in Path("/proc/diskstats").read_text().splitlines():
            fields = line.split()
            if len(fields) > 5 and fields[2] in physical:
                sectors += int(fields[5])
    except (OSError, ValueError):
        return None
    return sectors * SECTOR_BYTES if physical else None


def pg_settings(rows: Rows) -> tuple[dict[str, str], int]:
    """The server's memory settings as it reports them ('128MB'), and its block size in bytes."""
    found: dict[str, Any] = dict(rows(_SETTINGS_SQL))
    return {name: str(found[name]) for name in PG_SETTINGS}, int(found["block_size"])


def pg_table_sizes(rows: Rows, tables: tuple[str, ...]) -> list[TableSize]:
    found = {str(name): TableSize(str(name), int(heap), int(index)) for name, heap, index in rows(_SIZES_SQL)}
    return [found[name] for name in tables if name in found]


def pg_counters(url: str) -> IoCounters:
    """The block counters, once the database's other montage-vec sessions (the engine's, ours) have ended.

    PostgreSQL 15 publishes a backend's statistics when it exits (or when idle, at most every few
    seconds): the engine's sessions end with its process, but their backends exit a moment later. A
    backend leaves pg_stat_activity only after its statistics are flushed, so waiting for the others
    to leave, on a fresh connection, then dropping any cached snapshot, reads them all.
    """
    with pg.connect(url, autocommit=True) as connection, connection.cursor() as cursor:
        deadline = time.monotonic() + BACKENDS_GONE_TIMEOUT
        while time.monotonic() < deadline:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.fetchall()
            cursor.execute(_SESSIONS_SQL, [APPLICATION_NAME])
            if cursor.fetchone()[0] == 0:
                break
            time.sleep(0.02)
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.fetchall()
        cursor.execute(_STATIO_SQL)
        tables = {str(row[0]): TableIo(*(int(value) for value in row[1:])) for row in cursor.fetchall()}
        cursor.execute(_DATABASE_SQL)
        blks_read, blks_hit, temp_bytes, temp_files = (int(value) for value in cursor.fetchone())
    return IoCounters(tables, blks_read, blks_hit, temp_bytes, temp_files)


NOT_APPLICABLE = "not applicable"
_DISK = (
    "*Read from disk* is what the whole machine read from its disks during the run (`/proc/diskstats`, all processes)."
)
_PG_INTRO = (
    "Where the runs' reads came from. A block *missed* was not in `shared_buffers` (deltas of "
    "`pg_statio_user_tables` and `pg_stat_database` around the run); the OS may still have served it from its "
    f"page cache. {_DISK} Misses with few disk bytes came from the OS cache. For a table the run writes, misses "
    "also count the new blocks it grew by. Hit ratios near 100% and few disk bytes: the run is CPU-bound, not "
    "I/O-bound."
)
_DUCK_INTRO = (
    "DuckDB keeps its own buffer pool inside the job process (`DUCKDB_MEMORY_LIMIT`) and no block statistics "
    f"PostgreSQL's way, so only the file size and the machine's disk reads apply. {_DISK} Few disk bytes: the "
    "file was in the OS page cache."
)


def human_size(size: int | None) -> str:
    """Bytes in the largest binary unit that keeps a digit before the point ('1.5 GiB'); None as '-'."""
    if size is None:
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:,.1f} {unit}"
    return f"{size:,} B"


def _ratio(read: int, hit: int) -> str:
    ratio = hit_ratio(read, hit)
    return "-" if ratio is None else f"{ratio:.1%}"


def _blocks(read: int, hit: int, block_size: int) -> str:
    return f"{read:,} ({human_size(read * block_size)}) / {hit:,}"


def render_io(io: DatabaseIo | None, runs: list[tuple[str, str]], ram_bytes: int) -> list[str]:
    """The "Database I/O" section; runs are (row name, run label) of the runs to show, the full run first."""
    if io is None:
        return []
    postgres = io.backend == "postgresql"
    settings = [[name, io.settings.get(name, NOT_APPLICABLE)] for name in (*PG_SETTINGS, "DUCKDB_MEMORY_LIMIT")]
    settings.append(["machine RAM", human_size(ram_bytes)])
    sizes = [[f"{s.name} ({'after loading' if s.name == 'checkins' else 'after the full run'})",
              human_size(s.heap_bytes), human_size(s.index_bytes), human_size(s.total_bytes)]
             for s in io.sizes]  # fmt: skip
    if not postgres:
        sizes.append(["per table", NOT_APPLICABLE, NOT_APPLICABLE, NOT_APPLICABLE])
    whole = "whole database" if postgres else "database file"
    sizes.append([f"{whole} (after the full run)", "-", "-", human_size(io.size_after_full)])
    lines = [
        "## Database I/O",
        "",
        _PG_INTRO if postgres else _DUCK_INTRO,
        "",
        *markdown_table(["setting", "value"], settings),
        "",
        *markdown_table(["table", "heap (pg_table_size)", "indexes (pg_indexes_size)", "total"], sizes),
        "",
    ]
    full = io.runs.get(runs[0][1]) if runs else None
    counters = full.counters if full else None
    if counters is None:
        lines += ["Per-table hit ratios: not applicable (DuckDB keeps no buffer statistics).", ""]
    else:
        rows = [[name, _blocks(t.heap_read, t.heap_hit, io.block_size), _ratio(t.heap_read, t.heap_hit),
                 _blocks(t.idx_read, t.idx_hit, io.block_size), _ratio(t.idx_read, t.idx_hit)]
                for name in IO_TABLES if (t := counters.tables.get(name))]  # fmt: skip
        header = ["full run", "heap blocks missed / hit", "heap hit ratio", "index blocks missed / hit",
                  "index hit ratio"]  # fmt: skip
        lines += [*markdown_table(header, rows), ""]
    per_run = []
    for name, label in runs:
        run = io.runs.get(label)
        if run is None:
            continue
        c = run.counters
        missed = _blocks(c.blks_read, c.blks_hit, io.block_size) if c else NOT_APPLICABLE
        ratio = _ratio(c.blks_read, c.blks_hit) if c else NOT_APPLICABLE
        temp = f"{human_size(c.temp_bytes)} in {c.temp_files:,} files" if c else NOT_APPLICABLE
        per_run.append([name, missed, ratio, temp, human_size(run.disk_read_bytes)])
    header = ["run", "database blocks missed / hit (temporary tables too)", "hit ratio", "spilled to temp files",
              "read from disk (machine)"]  # fmt: skip
    return [*lines, *markdown_table(header, per_run), ""]


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table's lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]
