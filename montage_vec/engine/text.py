"""Python's `value.strip().lower()`, vectorized: the one normalisation of tags (rule 2) and privacy (rule 1).

Polars' string kernels get us there with two differences that we close explicitly:

* `strip_chars()` without arguments trims Unicode White_Space, which lacks the four
  information separators (U+001C..U+001F) that `str.isspace()` accepts, so we pass
  Python's own whitespace set.
* Polars' case tables may follow a newer Unicode version than this interpreter's
  `unicodedata` (e.g. letters assigned in Unicode 16 lower-case in Polars but not in
  Python 3.11), and context rules (final sigma) depend on neighbours' case properties. So
  every distinct value outside ASCII is also lower-cased by Python, and where the two
  disagree Python's result is kept. ASCII case mapping never differs, and a chunk holds
  few distinct non-ASCII values, so this costs little, and nothing when all are ASCII.
"""

from __future__ import annotations

from functools import cache

import polars as pl


@cache
def python_whitespace() -> str:
    """Every character for which `str.isspace()` is true.

    Only the Basic Multilingual Plane holds whitespace (White_Space, bidi classes WS, B and S,
    category Zs) in any Unicode version so far; scanning just it takes milliseconds.
    """
    return "".join(chr(code) for code in range(0x10000) if chr(code).isspace())


def strip_lower(values: pl.Series) -> pl.Series:
    """Each value as `str.strip().lower()` would give it; NULL stays NULL."""
    stripped = values.str.strip_chars(python_whitespace())
    lowered = stripped.str.to_lowercase()
    non_ascii = (stripped.str.len_bytes() != stripped.str.len_chars()).fill_null(False)
    if not non_ascii.any():
        return lowered
    distinct = stripped.filter(non_ascii).unique()
    by_python = pl.Series([value.lower() for value in distinct.to_list()], dtype=pl.String)
    disagree = distinct.str.to_lowercase() != by_python
    if not disagree.any():
        return lowered
    fixes = stripped.replace_strict(distinct.filter(disagree), by_python.filter(disagree), default=None)
    return fixes.fill_null(lowered)
