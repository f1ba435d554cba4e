"""Tag normalisation (contract rule 2), vectorized.

The contract defines a normalised tag as Python's `tag.strip().lower()`. Polars' string
kernels get us there with two differences that we close explicitly:

* `strip_chars()` without arguments trims Unicode White_Space, which lacks the four
  information separators (U+001C..U+001F) that `str.isspace()` accepts, so we pass
  Python's own whitespace set.
* Polars' case tables may follow a newer Unicode version than this interpreter's
  `unicodedata` (e.g. letters assigned in Unicode 16 lower-case in Polars but not in
  Python 3.11). Tags holding one of those rare code points are lower-cased by Python.
  Finding those code points takes a few tenths of a second, so it happens once per
  process, and only when a tag outside ASCII shows up (ASCII case mapping never differs).
"""

from __future__ import annotations

import threading
from functools import cache

import polars as pl

MAX_TAG_CHARS = 100
# Letters with case and case-ignorable marks live in the Basic and Supplementary
# Multilingual Planes and in the tag/variation-selector block of plane 14; the other planes
# hold ideographs, nothing, or private use, which no Unicode version gives case properties.
_CASE_RELEVANT_CODES = (*range(0x20000), *range(0xE0000, 0xE1000))
_SCAN_BLOCK = 16_384
PROBE_SEPARATOR = "\x00"


@cache
def python_whitespace() -> str:
    """Every character for which `str.isspace()` is true.

    Only the Basic Multilingual Plane holds whitespace (White_Space, bidi classes WS, B and S,
    category Zs) in any Unicode version so far; scanning just it takes milliseconds.
    """
    return "".join(chr(code) for code in range(0x10000) if chr(code).isspace())


_scan_lock = threading.Lock()  # chunk workers share one scan instead of each running its own


def lowercase_exceptions() -> tuple[str, ...]:
    """The code points of `_scan_lowercase_exceptions`, computed once per process."""
    with _scan_lock:
        return _scan_lowercase_exceptions()


@cache
def _scan_lowercase_exceptions() -> tuple[str, ...]:
    """Code points for which Polars' lower-casing can differ from this interpreter's `str.lower`.

    Besides a code point's own mapping, its case properties matter: Σ becomes ς or σ
    depending on whether cased letters surround it, skipping case-ignorable marks, so a
    code point whose cased/case-ignorable status differs between the two Unicode tables
    changes its neighbours' result. Each context below probes one of those effects.
    """
    found: list[str] = []
    # ASCII never differs, and leaving it out frees NUL to separate probes: it is neither cased
    # nor case-ignorable, so it ends a probe's context as the end of a string would.
    codes = [code for code in _CASE_RELEVANT_CODES if code > 0x7F and not 0xD800 <= code < 0xE000]
    for start in range(0, len(codes), _SCAN_BLOCK):  # in blocks: a one-off scan need not cost 80 MB
        chars = [chr(code) for code in codes[start : start + _SCAN_BLOCK]]
        series = pl.Series(chars, dtype=pl.String)
        differs = pl.Series([False] * len(chars))
        for prefix, suffix in (("", ""), ("A", "Σ"), ("", "Σ"), ("AΣ", ""), ("AΣ", "A")):
            # One str.lower() over all probes, split at the separators, instead of one call each.
            joined = prefix + (suffix + PROBE_SEPARATOR + prefix).join(chars) + suffix
            python_lower = pl.Series(joined.lower().split(PROBE_SEPARATOR), dtype=pl.String)
            polars_lower = (prefix + series + suffix).str.to_lowercase()
            differs = differs | (polars_lower != python_lower)
        found.extend(series.filter(differs).to_list())
    return tuple(found)


def normalize_tag_values(raw_tags: pl.Series) -> pl.Series:
    """Strip and lower-case each tag exactly as `str.strip().lower()` would."""
    stripped = raw_tags.str.strip_chars(python_whitespace())
    lowered = stripped.str.to_lowercase()
    if not (stripped.str.len_bytes() != stripped.str.len_chars()).any():
        return lowered  # ASCII only
    exceptions = lowercase_exceptions()
    if exceptions and len(stripped):
        needs_python = stripped.str.contains_any(list(exceptions)).fill_null(False)
        if needs_python.any():
            positions = needs_python.arg_true()
            # Only tags containing code points the two Unicode tables disagree on get here.
            fixed = [tag.lower() for tag in stripped.gather(positions).to_list()]
            lowered = lowered.scatter(positions, pl.Series(fixed, dtype=pl.String))
    return lowered


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
