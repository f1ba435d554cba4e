"""Tag normalisation (contract rule 2), vectorized.

The contract defines a normalised tag as Python's `tag.strip().lower()`. Polars' string
kernels get us there with two differences that we close explicitly:

* `strip_chars()` without arguments trims Unicode White_Space, which lacks the four
  information separators (U+001C..U+001F) that `str.isspace()` accepts, so we pass
  Python's own whitespace set.
* Polars' case tables may follow a newer Unicode version than this interpreter's
  `unicodedata` (e.g. letters assigned in Unicode 16 lower-case in Polars but not in
  Python 3.11), and context rules (final sigma) depend on neighbours' case properties. So
  every distinct tag outside ASCII is also lower-cased by Python, and where the two
  disagree Python's result is kept. ASCII case mapping never differs, and a chunk holds
  few distinct non-ASCII tags, so this costs little, and nothing when all tags are ASCII.
"""

from __future__ import annotations

from functools import cache

import polars as pl

MAX_TAG_CHARS = 100


@cache
def python_whitespace() -> str:
    """Every character for which `str.isspace()` is true.

    Only the Basic Multilingual Plane holds whitespace (White_Space, bidi classes WS, B and S,
    category Zs) in any Unicode version so far; scanning just it takes milliseconds.
    """
    return "".join(chr(code) for code in range(0x10000) if chr(code).isspace())


def normalize_tag_values(raw_tags: pl.Series) -> pl.Series:
    """Strip and lower-case each tag exactly as `str.strip().lower()` would."""
    stripped = raw_tags.str.strip_chars(python_whitespace())
    lowered = stripped.str.to_lowercase()
    non_ascii = (stripped.str.len_bytes() != stripped.str.len_chars()).fill_null(False)
    if not non_ascii.any():
        return lowered
    distinct = stripped.filter(non_ascii).unique()
    by_python = pl.Series([tag.lower() for tag in distinct.to_list()], dtype=pl.String)
    disagree = distinct.str.to_lowercase() != by_python
    if not disagree.any():
        return lowered
    fixes = stripped.replace_strict(distinct.filter(disagree), by_python.filter(disagree), default=None)
    return fixes.fill_null(lowered)


def explode_normalized_tags(checkins: pl.DataFrame) -> pl.DataFrame:
    """One row per (check-in, normalised tag), duplicates within a check-in removed.

    `checkins` must hold `row_nr` and `tags`; the result keeps every other column and the
    input's row order, and within a check-in the order of first occurrence.
    """
    exploded = checkins.explode("tags", empty_as_null=False, keep_nulls=False)
    normalized = exploded.with_columns(tag=normalize_tag_values(exploded["tags"])).drop("tags")
    tag_chars = pl.col("tag").str.len_chars()
    kept = normalized.filter(pl.col("tag").is_not_null() & (tag_chars > 0) & (tag_chars <= MAX_TAG_CHARS))
    return kept.unique(subset=["row_nr", "tag"], keep="first", maintain_order=True)
