"""`montage-vec demo`: synthetic check-ins into the embedded database, then one run."""

from __future__ import annotations

import click
from loguru import logger

from montage_vec.cli.app import exit_on_failure, settings_from
from montage_vec.errors import ConfigError


@click.command()
@click.option("--users", default=2000, show_default=True, type=click.IntRange(1, 2_000_000))
@click.option("--seed", default=42, show_default=True, help="Same seed, same data.")
@click.pass_context
def demo(ctx: click.Context, users: int, seed: int) -> None:
    """Fill the embedded database with synthetic check-ins and run the job on them."""
    import polars as pl

    from montage_vec.cli.render import render_user_montages
    from montage_vec.datagen import SyntheticSpec, iter_checkin_batches
    from montage_vec.job.plan import RunOptions, utc_now
    from montage_vec.job.runner import run_job
    from montage_vec.job.summary import log_outcome
    from montage_vec.stores import open_store

    settings = settings_from(ctx)
    target = settings.database()
    if target.kind != "duckdb":
        raise ConfigError("demo writes synthetic check-ins, so it only runs on the embedded DuckDB database")
    as_of = utc_now()
    with open_store(target) as store, store.session() as session:
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
