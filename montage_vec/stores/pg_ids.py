"""Passing a chunk's user ids to PostgreSQL without bound parameters.

Bound parameters switch the driver from streaming binary COPY to a fully buffered result,
so ids travel as a `'{...}'::uuid[]` literal instead. Only canonical uuid text can get
into that literal: anything else is rejected first, which keeps it injection-proof.
"""

from __future__ import annotations

import polars as pl

from montage_vec.errors import InputDataError

CANONICAL_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


def uuid_array_literal(user_ids: pl.Series) -> str:
    """`'{id1,id2}'::uuid[]` for canonical lower-case uuids; InputDataError for anything else."""
    valid = user_ids.str.contains(CANONICAL_UUID).fill_null(False)
    if not valid.all():
        bad = user_ids.filter(~valid).head(3).to_list()
        raise InputDataError(f"not canonical uuids: {bad}")
    joined: str = user_ids.str.join(",").item()
    return "'{" + joined + "}'::uuid[]"
