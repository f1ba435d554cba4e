"""Tag normalisation (contract rule 2), vectorized.

The contract defines a normalised tag as Python's `tag.strip().lower()`; `strip_lower`
(montage_vec/engine/text.py) computes exactly that, and privacy levels share it (rule 1).
"""

from __future__ import annotations

import polars as pl

from montage_vec.engine.text import strip_lower

MAX_TAG_CHARS = 100


def explode_normalized_tags(checkins: pl.DataFrame) -> pl.DataFrame:
    """One row per (check-in, normalised tag), duplicates within a check-in removed.

    `checkins` must hold `row_nr` and `tags`; the result keeps every other column and the
    input's row order, and within a check-in the order of first occurrence.
    """
    exploded = checkins.explode("tags", empty_as_null=False, keep_nulls=False)
    normalized = exploded.with_columns(tag=strip_lower(exploded["tags"])).drop("tags")
    tag_chars = pl.col("tag").str.len_chars()
    kept = normalized.filter(pl.col("tag").is_not_null() & (tag_chars > 0) & (tag_chars <= MAX_TAG_CHARS))
    return kept.unique(subset=["row_nr", "tag"], keep="first", maintain_order=True)
