"""diff_montages: what storing computed montages would change, montage by montage and item by item.

Pure, like the rest of the engine: the stored montages come in as a MontageSet (see
`Database.read`). A montage counts as changed exactly when a real run would rewrite it
(stores/chunk_sql.py): it is new, its item count or `valid_until` differs, or some position
holds another check-in, time, widget type or widget metadata. Metadata is compared as JSON
values, as PostgreSQL compares `jsonb`, so key order and spacing do not count.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import polars as pl

from montage_vec.engine.montages import MontageSet
from montage_vec.engine.schema import MONTAGE_KEY

ITEM_FIELDS = ("checkin_id", "checkin_created_at", "widget_type", "widget_metadata")
STATUSES = ("added", "removed", "changed", "unchanged")


@dataclass(frozen=True)
class MontageDiff:
    """`montages`: one row per montage computed or stored, with its `status` (added, removed,
    changed, unchanged), both sides' `item_count` and `valid_until`, and the check-ins that
    join it (`checkins_added`), leave it (`checkins_removed`) or stay with another time,
    widget type or metadata (`checkins_edited`). `items`: one row per position
    that differs, with its `change` (added, removed, changed), both sides' check-in ids and
    the `changed_fields` (one new check-in at the top shifts every position below it)."""

    montages: pl.DataFrame
    items: pl.DataFrame

    def count(self, status: str) -> int:
        return int((self.montages["status"] == status).sum())

    def counts(self) -> dict[str, int]:
        return {status: self.count(status) for status in STATUSES}


def diff_montages(computed: MontageSet, stored: MontageSet) -> MontageDiff:
    """How `stored` would change if `computed` replaced it (both for the same users)."""
    # Metadata made comparable once per side, for both the by-position and the by-check-in view.
    new_items, old_items = _comparable(computed.items), _comparable(stored.items)
    item_changes = _item_changes(new_items, old_items)
    montages = _montage_changes(computed.montages, stored.montages, item_changes)
    with_members = montages.join(_member_changes(new_items, old_items), on=MONTAGE_KEY, how="left")
    return MontageDiff(montages=with_members, items=item_changes)


def _member_changes(computed: pl.DataFrame, stored: pl.DataFrame) -> pl.DataFrame:
    """Per montage (items made `_comparable`), by check-in whatever its position: those only one
    side holds, and those both hold but show differently (`checkins_edited`); each list sorted."""
    no_ids = pl.lit([], pl.List(pl.String))
    shown = [name for name in ITEM_FIELDS if name != "checkin_id"]
    both = computed.join(stored, on=[*MONTAGE_KEY, "checkin_id"], how="full", coalesce=True, suffix="_stored")
    membership = (
        pl.when(pl.col("position_stored").is_null())
        .then(pl.lit("added"))
        .when(pl.col("position").is_null())
        .then(pl.lit("removed"))
        .when(pl.any_horizontal([pl.col(name).ne_missing(pl.col(f"{name}_stored")) for name in shown]))
        .then(pl.lit("edited"))
    )
    return (
        both.with_columns(membership=membership)
        .group_by(MONTAGE_KEY)
        .agg(
            **{
                f"checkins_{kind}": pl.col("checkin_id").filter(pl.col("membership") == kind).sort()
                for kind in ("added", "removed", "edited")
            }
        )
        .with_columns(pl.col("checkins_added", "checkins_removed", "checkins_edited").fill_null(no_ids))
    )


def _montage_changes(computed: pl.DataFrame, stored: pl.DataFrame, item_changes: pl.DataFrame) -> pl.DataFrame:
    sides = computed.select(*MONTAGE_KEY, "montage_id", "item_count", "valid_until", computed=pl.lit(True)).join(
        stored.select(
            *MONTAGE_KEY,
            stored_montage_id="montage_id",
            stored_item_count="item_count",
            stored_valid_until="valid_until",
            stored=pl.lit(True),
        ),
        on=MONTAGE_KEY,
        how="full",
        coalesce=True,
    )
    with_items_changed = sides.join(
        item_changes.select(MONTAGE_KEY).unique().with_columns(items_changed=pl.lit(True)), on=MONTAGE_KEY, how="left"
    )
    status = (
        pl.when(pl.col("stored").is_null())
        .then(pl.lit("added"))
        .when(pl.col("computed").is_null())
        .then(pl.lit("removed"))
        .when(
            (pl.col("item_count") != pl.col("stored_item_count"))
            | pl.col("valid_until").ne_missing(pl.col("stored_valid_until"))
            | pl.col("items_changed").fill_null(False)
        )
        .then(pl.lit("changed"))
        .otherwise(pl.lit("unchanged"))
    )
    return with_items_changed.select(
        # A stored montage keeps its id (ids stored by the old job are kept), so it names the montage.
        pl.coalesce("stored_montage_id", "montage_id").alias("montage_id"),
        *MONTAGE_KEY,
        status=status,
        stored_item_count="stored_item_count",
        item_count="item_count",
        stored_valid_until="stored_valid_until",
        valid_until="valid_until",
    ).sort(MONTAGE_KEY)


def _item_changes(computed: pl.DataFrame, stored: pl.DataFrame) -> pl.DataFrame:
    """Position by position, of items made `_comparable`: what each position now holds differently."""
    key = [*MONTAGE_KEY, "position"]
    both = computed.join(stored, on=key, how="full", coalesce=True, suffix="_stored")
    differs = [pl.col(name).ne_missing(pl.col(f"{name}_stored")) for name in ITEM_FIELDS]
    changed_fields = pl.concat_list(
        [
            pl.when(differ).then(pl.lit(name)).otherwise(pl.lit(None, pl.String))
            for name, differ in zip(ITEM_FIELDS, differs, strict=True)
        ]
    ).list.drop_nulls()
    change = (
        pl.when(pl.col("checkin_id_stored").is_null())
        .then(pl.lit("added"))
        .when(pl.col("checkin_id").is_null())
        .then(pl.lit("removed"))
        .when(pl.any_horizontal(differs))
        .then(pl.lit("changed"))
    )
    return (
        both.with_columns(change=change, changed_fields=changed_fields)
        .filter(pl.col("change").is_not_null())
        .select(
            *key,
            "change",
            stored_checkin_id="checkin_id_stored",
            checkin_id="checkin_id",
            changed_fields=pl.when(pl.col("change") == "changed")
            .then("changed_fields")
            .otherwise(pl.lit([], pl.List(pl.String))),
        )
        .sort(key)
    )


def _comparable(items: pl.DataFrame) -> pl.DataFrame:
    """Items keyed by montage and position, their metadata as canonical JSON text."""
    canonical = [_canonical_json(text) for text in items["widget_metadata"].to_list()]
    return items.select(*MONTAGE_KEY, "position", *ITEM_FIELDS).with_columns(
        widget_metadata=pl.Series(canonical, dtype=pl.String)
    )


def _canonical_json(text: str | None) -> str | None:
    """One item's metadata in one spelling; a few dozen items per user, so a plain loop."""
    if text is None:
        return None
    value: Any = json.loads(text)
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
