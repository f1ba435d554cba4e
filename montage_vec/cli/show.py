"""`montage-vec show`: one user's stored montages, as a listing or as one JSON document."""

from __future__ import annotations

import json
import sys

import click

from montage_vec.cli.common import settings_from
from montage_vec.cli.options import one_user_option


@click.command()
@one_user_option("The user whose montages to show.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON document (montages with their items nested) instead of the listing; logs go to stderr.",
)
def show(user_id: str, as_json: bool = False) -> None:
    """Print a user's stored montages and items (read-only).

    Never creates or changes the database; works on a read-only DuckDB file.
    """
    from montage_vec.cli.render import render_user_montages, user_montages_document
    from montage_vec.stores import open_store

    # With --json, stdout holds the document alone.
    settings = settings_from(log_stream=sys.stderr if as_json else None)
    with open_store(settings.database(), read_only=True, create=False) as store, store.session() as session:
        session.ensure_migrated()
        montages, items = session.user_montages(user_id, timestamps_as_text=True)
    if as_json:
        document = user_montages_document(user_id, montages, items)
        click.echo(json.dumps(document, ensure_ascii=False))  # one line: pipe it to `jq` to read it
    else:
        click.echo(render_user_montages(user_id, montages, items))
