"""Column contracts between the stores and the engine.

The stores hand the engine check-ins with the CHECKIN_SCHEMA columns and types (uuids as
their canonical lower-case text, so that string order equals uuid byte order), plus any of
OPTIONAL_CHECKIN_SCHEMA they have, and take back montages and items with the output
schemas below. A caller of the engine (a notebook) may leave out every check-in column but
REQUIRED_CHECKIN_COLUMNS: the missing ones are NULL.
"""

from __future__ import annotations

import polars as pl

UTC_MICROS = pl.Datetime("us", "UTC")

CHECKIN_SCHEMA: dict[str, pl.DataType] = {
    "id": pl.String(),
    "user_id": pl.String(),
    "created_at": UTC_MICROS,
    "deleted_at": UTC_MICROS,
    "privacy": pl.String(),
    "text_content": pl.String(),
    "media_url": pl.String(),
    "media_type": pl.String(),
    "thumbnail_url": pl.String(),
    "location_name": pl.String(),
    "tags": pl.List(pl.String()),
}

REQUIRED_CHECKIN_COLUMNS = ("id", "user_id", "created_at")

# Used when present, a NULL column when not: a source with duplicate check-in ids keeps the
# copy updated last (see duplicates.py), and a minimal source need not have the column.
OPTIONAL_CHECKIN_SCHEMA: dict[str, pl.DataType] = {
    "updated_at": UTC_MICROS,
}

# `montage_id` derives from the montage's key exactly as the stores derive it (see ids.py).
MONTAGE_SCHEMA: dict[str, pl.DataType] = {
    "montage_id": pl.String(),
    "user_id": pl.String(),
    "kind": pl.String(),
    "interest": pl.String(),
    "item_count": pl.Int32(),
    "valid_until": UTC_MICROS,
}

ITEM_SCHEMA: dict[str, pl.DataType] = {
    "montage_id": pl.String(),
    "user_id": pl.String(),
    "kind": pl.String(),
    "interest": pl.String(),
    "position": pl.Int32(),
    "checkin_id": pl.String(),
    "checkin_created_at": UTC_MICROS,
    "widget_type": pl.String(),
    "widget_metadata": pl.String(),
}

# A montage is one per (user, kind, interest); the general montage's interest is "".
MONTAGE_KEY = ["user_id", "kind", "interest"]

# Users whose check-ins could not be processed, with the reason (the job's retry list).
REJECTED_SCHEMA: dict[str, pl.DataType] = {"user_id": pl.String(), "error": pl.String()}

GENERAL = "general"
INTEREST = "interest"
