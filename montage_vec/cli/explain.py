"""`montage-vec explain`: why one user's montages are what they are, as a listing or one JSON document.

A thin call to `Database.explain`; read-only, so it runs on a read-only DuckDB file and
never creates one.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from montage_vec.cli.common import settings_from
from montage_vec.cli.options import as_of_flag, one_user_option

if TYPE_CHECKING:
    import polars as pl

    from montage_vec.engine.diff import MontageDiff
    from montage_vec.engine.explain import Explanation


@click.command()
@one_user_option("The user to explain.")
@click.option("--as-of", metavar="TIMESTAMP", callback=as_of_flag, help="Reference time, ISO 8601 (default: now, UTC).")
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON document instead of the listing; logs go to stderr."
)
def explain(user_id: str, as_of: datetime | None = None, as_json: bool = False) -> None:
    """Explain a user's montages: each check-in's eligibility, each tag's count in the window,
    the montages a run would store and how they differ from the stored ones (read-only)."""
    from montage_vec.db import Database
    from montage_vec.engine.documents import explanation_document

    settings = settings_from(log_stream=sys.stderr if as_json else None)
    with Database(settings, read_only=True) as db:
        explanation = db.explain(user_id, as_of=as_of)
    if as_json:
        click.echo(json.dumps(explanation_document(explanation), ensure_ascii=False))
    else:
        click.echo(render_explanation(explanation))


def render_explanation(explanation: Explanation) -> str:
    """The listing: check-ins, tags, montages, then the difference from what is stored."""
    params = explanation.params
    lines = [
        f"user {explanation.user_id} at {_moment(explanation.as_of)}; interest window from "
        f"{_moment(explanation.window_start)}, {params.min_interest_occurrence} check-ins needed",
    ]
    if explanation.rejected:
        lines.append(f"the job sets this user aside (retry list): {explanation.rejected}")
    lines += _checkin_lines(explanation.checkins)
    lines += _tag_lines(explanation.tags)
    montages = explanation.montages.montages
    lines.append(f"\nmontages a run would store: {montages.height}")
    for montage in montages.iter_rows(named=True):
        until = f", valid until {_moment(montage['valid_until'])}" if montage["valid_until"] else ""
        lines.append(f"  {_title(montage)}: {montage['item_count']} item(s){until}")
    if explanation.diff is not None:
        lines += diff_lines(explanation.diff)
    return "\n".join(lines)


def diff_lines(diff: MontageDiff) -> list[str]:
    """Montage by montage, what storing would change (also `once --user-id --dry-run`)."""
    counts = diff.counts()
    lines = ["\ncompared with the stored montages: " + ", ".join(f"{n} {status}" for status, n in counts.items())]
    changes = diff.items
    for montage in diff.montages.iter_rows(named=True):
        if montage["status"] == "unchanged":
            continue
        lines.append(f"  {montage['status']} {_title(montage)} (user {montage['user_id']})")
        if montage["status"] == "changed":
            if montage["stored_item_count"] != montage["item_count"]:
                lines.append(f"    item_count {montage['stored_item_count']} -> {montage['item_count']}")
            if montage["stored_valid_until"] != montage["valid_until"]:
                before, after = _moment(montage["stored_valid_until"]), _moment(montage["valid_until"])
                lines.append(f"    valid_until {before} -> {after}")
            lines += [f"    + {checkin}" for checkin in montage["checkins_added"]]
            lines += [f"    - {checkin}" for checkin in montage["checkins_removed"]]
            lines += [f"    ~ {checkin} (shown differently)" for checkin in montage["checkins_edited"]]
            lines += _position_lines(_changes_of(changes, montage))
    return lines


def _position_lines(changes: list[dict[str, Any]]) -> list[str]:
    """How many positions now hold another check-in (a new one at the top shifts all below it)."""
    shifted = sum(1 for c in changes if c["change"] == "changed" and c["stored_checkin_id"] != c["checkin_id"])
    return [f"    {shifted} position(s) now hold another check-in"] if shifted else []


def _checkin_lines(checkins: pl.DataFrame) -> list[str]:
    eligible = int(checkins["eligible"].sum())
    lines = [f"\ncheck-ins: {checkins.height}, {eligible} eligible (newest first)"]
    for row in checkins.iter_rows(named=True):
        verdict = "eligible" if row["eligible"] else f"not eligible: {row['reason']}"
        tags = ", ".join(row["normalized_tags"]) or "-"
        dropped = "; ".join(f"{tag['tag']!r} {tag['reason']}" for tag in row["dropped_tags"])
        lines.append(
            f"  {_moment(row['created_at'])}  {row['id']}  {verdict}  tags: {tags}"
            + (f"  dropped: {dropped}" if dropped else "")
        )
    return lines


def _tag_lines(tags: pl.DataFrame) -> list[str]:
    lines = [f"\ntags: {tags.height}"]
    for tag in tags.iter_rows(named=True):
        counted = f"{tag['occurrences_in_window']} eligible in the window"
        if tag["ineligible_occurrences"]:
            counted += f" ({tag['ineligible_occurrences']} ineligible check-in(s) also carry it)"
        if tag["qualifies"]:
            verdict = f"interest until {_moment(tag['valid_until'])}"
        else:
            verdict = f"needs {tag['more_needed']} more"
        lines.append(f"  {tag['tag']}: {counted}; {verdict}")
    return lines


def _changes_of(changes: pl.DataFrame, montage: dict[str, Any]) -> list[dict[str, Any]]:
    import polars as pl

    key = (pl.col("user_id") == montage["user_id"]) & (pl.col("kind") == montage["kind"])
    return changes.filter(key & (pl.col("interest") == montage["interest"])).to_dicts()


def _title(montage: dict[str, Any]) -> str:
    return "general" if montage["kind"] == "general" else f"interest '{montage['interest']}'"


def _moment(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value is not None else "-"
