"""How a check-in is shown inside a montage (contract rule 6), vectorized."""

from __future__ import annotations

import polars as pl

# JSON key in widget_metadata -> check-in column, in the order the keys are written.
METADATA_FIELDS: tuple[tuple[str, str], ...] = (
    ("media_url", "media_url"),
    ("media_type", "media_type"),
    ("thumbnail_url", "thumbnail_url"),
    ("text", "text_content"),
    ("location", "location_name"),
    ("tags", "normalized_tags"),
    ("privacy", "privacy"),
)


def widget_type_expr() -> pl.Expr:
    """`media` if there is a media URL, else `text`, else `location`, else `activity`."""
    return (
        pl.when(pl.col("media_url").is_not_null())
        .then(pl.lit("media"))
        .when(pl.col("text_content").is_not_null())
        .then(pl.lit("text"))
        .when(pl.col("location_name").is_not_null())
        .then(pl.lit("location"))
        .otherwise(pl.lit("activity"))
    )


def _json_member(key: str, column: str) -> pl.Expr:
    """`"key":<json value>` for non-null values, null otherwise (so the key is left out).

    Encoding a one-field struct borrows Polars' JSON escaping; the surrounding braces are cut.
    """
    encoded = pl.struct(pl.col(column).alias(key)).struct.json_encode()
    member = encoded.str.strip_prefix("{").str.strip_suffix("}")
    return pl.when(pl.col(column).is_not_null()).then(member)


def widget_metadata_expr() -> pl.Expr:
    """The widget_metadata JSON object text, keys with NULL values omitted."""
    members = [_json_member(key, column) for key, column in METADATA_FIELDS]
    body = pl.concat_str(members, separator=",", ignore_nulls=True)
    return pl.concat_str([pl.lit("{"), body, pl.lit("}")])
