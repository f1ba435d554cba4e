"""`montage-vec demo`: synthetic check-ins into an empty embedded database, then one run.

It only starts from an empty database, so that what it says (N users) is what the file
holds: a file with data is refused unless `--reset` deletes it first. The listing of the
busiest user's montages goes to stdout, the logs to stderr.

It builds the database in a folder of its own beside the target (`.<name>.demo-build/`) and
moves the file into place only once the run completed: a demo that fails (out of memory, say)
or is interrupted leaves no half-filled database that `health` or a run would take for a
good one. Check-ins are generated and loaded a few thousand users at a time, into the job's
own table without its keys (migrations.unkeyed_checkins_ddl: the job's queries on DuckDB scan
and hash-join it, and demo's ids are unique by construction), so memory stays flat in `--users`,
and in user_id order (datagen/batches.py), so a run's chunks read only their users' rows.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import click
from loguru import logger

from montage_vec.cli.common import exit_on_failure, settings_from
from montage_vec.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from datetime import datetime

    from montage_vec.config import DatabaseTarget, Settings
    from montage_vec.stores import SqlSession

# Users generated and inserted at a time: ~100,000 check-ins, some 50 MB in flight. The
# generator's own default (50,000 users) peaks at over 1 GB.
LOAD_USERS_PER_BATCH = 5000
# Demo's check-ins are new and unique by construction: a plain insert, with no key to upsert on.
INSERT_CHECKINS = 'INSERT INTO {checkins} BY NAME SELECT * FROM "stage_checkins"'


@click.command()
@click.option("--users", default=2000, show_default=True, type=click.IntRange(1, 2_000_000))
@click.option("--seed", default=42, show_default=True, help="Same seed, same data.")
@click.option("--reset", is_flag=True, help="Delete the DuckDB file (and its .wal) first, whatever it holds.")
def demo(users: int, seed: int, reset: bool = False) -> None:
    """Fill an empty DuckDB file with synthetic check-ins and run the job.

    A file that holds data is refused unless --reset deletes it first. The busiest user's
    montages are printed on stdout; the logs go to stderr. A demo that fails leaves no database.
    """
    settings = settings_from(log_stream=sys.stderr)  # stdout is the listing's
    target = settings.database()
    if target.kind != "duckdb":
        raise ConfigError("demo writes synthetic check-ins, so it only runs on the embedded DuckDB database")
    path = Path(target.location)
    if reset:
        _refuse_if_in_use(target)
        _delete_database(path, reason="deleted for --reset")
    else:
        _refuse_data(target)
    if target.location == ":memory:":
        listing = _build(target, target.display, settings, users, seed)
    else:
        folder = build_folder(path)
        shutil.rmtree(folder, ignore_errors=True)  # what a killed demo left behind
        try:
            built = replace(target, location=str(folder / path.name))
            listing = _build(built, target.display, settings, users, seed)
            _move_into_place(folder / path.name, path)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    if listing:
        click.echo(listing)


def build_folder(path: Path) -> Path:
    """Where demo builds `path`: beside it (so the final move is a rename), under the same file name."""
    return path.with_name(f".{path.name}.demo-build")


def _build(target: DatabaseTarget, shown: str, settings: Settings, users: int, seed: int) -> str | None:
    """Fill and run the database at `target` (logged as `shown`); the busiest user's listing.
    Exits on a failed run."""
    from montage_vec.cli.render import render_user_montages
    from montage_vec.job.plan import RunOptions, utc_now
    from montage_vec.job.runner import run_job
    from montage_vec.job.summary import log_outcome
    from montage_vec.stores import open_store

    as_of = utc_now()
    with open_store(target, create=True) as store, store.session() as session:
        loaded = _load(session, users, seed, as_of)
        logger.info("synthetic check-ins loaded", users=users, checkins=loaded, database=shown)
        summary = run_job(store, settings, RunOptions(as_of=as_of))
        log_outcome(summary)
        exit_on_failure(summary)
        busiest = session.user_with_most_interests()
        if busiest is None:
            return None
        montages, items = session.user_montages(busiest)
        return render_user_montages(busiest, montages, items)


def _load(session: SqlSession, users: int, seed: int, as_of: datetime) -> int:
    """Create the unindexed check-ins table, migrate, and insert the check-ins batch by batch."""
    import polars as pl

    from montage_vec.datagen import SyntheticSpec, iter_checkin_batches
    from montage_vec.stores.migrations import unkeyed_checkins_ddl

    with session.unit(write=True):
        for statement in unkeyed_checkins_ddl(session.dialect.name):
            session.run(statement)
    session.migrate()  # finds the check-ins table there, so creates only the job's own tables
    loaded = 0
    spec = SyntheticSpec(users=users, seed=seed, as_of=as_of)
    # In user_id order, as a run takes them: each chunk's extraction then reads a few row groups.
    for batch in iter_checkin_batches(spec, users_per_batch=LOAD_USERS_PER_BATCH, by_user_id=True):
        with session.unit(write=True):
            session.connection.stage("stage_checkins", pl.DataFrame(batch))
            session.run(INSERT_CHECKINS)
        loaded += batch.num_rows
    return loaded


def _move_into_place(built: Path, path: Path) -> None:
    """Replace `path` with the built file; a write-ahead log left beside `path` would be replayed
    into the new file, so it goes first (the build's own, if any, comes along)."""
    path.with_name(path.name + ".wal").unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    built.replace(path)
    built_wal = built.with_name(built.name + ".wal")
    if built_wal.exists():
        built_wal.replace(path.with_name(path.name + ".wal"))


def _refuse_data(target: DatabaseTarget) -> None:
    """ConfigError when the file holds rows (check-ins, montages, runs), naming the tables."""
    location = target.location
    if location == ":memory:" or not Path(location).is_file():
        return
    from montage_vec.stores import open_store

    try:
        with open_store(target, read_only=True) as store, store.session() as session:
            filled = session.tables_with_rows()
    except StoreError as exc:  # not a DuckDB file, or one this DuckDB cannot read
        raise ConfigError(f"demo cannot read {location} ({exc}): pass --reset to replace it") from None
    if filled:
        raise ConfigError(
            f"demo starts from an empty database, but {location} holds data ({', '.join(filled)}): "
            "pass --reset to delete it and start over, or point DATABASE_URL at another file"
        )


def _refuse_if_in_use(target: DatabaseTarget) -> None:
    """RunLockedError (exit 75) when another process has the file open: a running job or a
    notebook must not lose its database under it. Opening it read-write is DuckDB's own test."""
    from montage_vec.stores import open_store

    if not Path(target.location).is_file():
        return
    try:
        with open_store(target) as store, store.session():
            pass
    except StoreError:  # not a DuckDB file at all: --reset replaces it
        return


def _delete_database(path: Path, reason: str) -> None:
    """The file and its write-ahead log; logged, since it cannot be undone."""
    for doomed in (path, path.with_name(path.name + ".wal")):
        if doomed.exists():
            doomed.unlink()
            logger.info(reason, file=str(doomed))
