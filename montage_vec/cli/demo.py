"""`montage-vec demo`: synthetic check-ins into an empty embedded database, then one run.

It only starts from an empty database, so that what it says (N users) is what the file
holds: a file with data is refused unless `--reset` deletes it first. The listing of the
busiest user's montages goes to stdout, the logs to stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from loguru import logger

from montage_vec.cli.common import exit_on_failure, settings_from
from montage_vec.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from montage_vec.config import DatabaseTarget


@click.command()
@click.option("--users", default=2000, show_default=True, type=click.IntRange(1, 2_000_000))
@click.option("--seed", default=42, show_default=True, help="Same seed, same data.")
@click.option("--reset", is_flag=True, help="Delete the DuckDB file (and its .wal) first, whatever it holds.")
def demo(users: int, seed: int, reset: bool = False) -> None:
    """Fill an empty DuckDB file with synthetic check-ins and run the job.

    A file that holds data is refused unless --reset deletes it first. The busiest user's
    montages are printed on stdout; the logs go to stderr.
    """
    import polars as pl

    from montage_vec.cli.render import render_user_montages
    from montage_vec.datagen import SyntheticSpec, iter_checkin_batches
    from montage_vec.job.plan import RunOptions, utc_now
    from montage_vec.job.runner import run_job
    from montage_vec.job.summary import log_outcome
    from montage_vec.stores import open_store

    settings = settings_from(log_stream=sys.stderr)  # stdout is the listing's
    target = settings.database()
    if target.kind != "duckdb":
        raise ConfigError("demo writes synthetic check-ins, so it only runs on the embedded DuckDB database")
    path = Path(target.location)
    if reset:
        _refuse_if_in_use(target)
        _delete_database(path)
    else:
        _refuse_data(target)
    as_of = utc_now()
    with open_store(target, create=True) as store, store.session() as session:
        session.migrate()
        loaded = 0
        for batch in iter_checkin_batches(SyntheticSpec(users=users, seed=seed, as_of=as_of)):
            loaded += session.load_checkins(pl.DataFrame(batch))
        logger.info("synthetic check-ins loaded", users=users, checkins=loaded, database=target.display)
        summary = run_job(store, settings, RunOptions(as_of=as_of))
        log_outcome(summary)
        exit_on_failure(summary)
        busiest = session.user_with_most_interests()
        if busiest is not None:
            montages, items = session.user_montages(busiest)
            click.echo(render_user_montages(busiest, montages, items))


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


def _delete_database(path: Path) -> None:
    """The file and its write-ahead log; logged, since it cannot be undone."""
    for doomed in (path, path.with_name(path.name + ".wal")):
        if doomed.exists():
            doomed.unlink()
            logger.info("deleted for --reset", file=str(doomed))
