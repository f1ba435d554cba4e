"""Bring check-ins from any source to CHECKIN_SCHEMA (plus OPTIONAL_CHECKIN_SCHEMA), and set
aside rows that cannot be used.

A source with a missing column or an uncastable type is a programming or configuration
error and raises InputDataError naming the column. A row that breaks the table's NOT NULL
promises (no id, no created_at) only takes its own user out of the run: the job puts that
user on the retry list and writes everyone else.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from montage_vec.engine.schema import CHECKIN_SCHEMA, OPTIONAL_CHECKIN_SCHEMA, REJECTED_SCHEMA
from montage_vec.errors import InputDataError


def conform_checkins(checkins: pl.DataFrame | pa.Table) -> pl.DataFrame:
    """The engine's columns, in its types; an absent optional column is all NULL, extra columns are dropped."""
    frame = checkins if isinstance(checkins, pl.DataFrame) else _from_arrow(checkins)
    missing = [name for name in CHECKIN_SCHEMA if name not in frame.columns]
    if missing:
        raise InputDataError(f"check-ins lack required column(s): {', '.join(missing)}")
    required = [_conform_column(frame, name, dtype) for name, dtype in CHECKIN_SCHEMA.items()]
    optional = [
        _conform_column(frame, name, dtype) if name in frame.columns else pl.lit(None, dtype).alias(name)
        for name, dtype in OPTIONAL_CHECKIN_SCHEMA.items()
    ]
    return frame.select([*required, *optional])


def _from_arrow(table: pa.Table) -> pl.DataFrame:
    converted = pl.from_arrow(table)
    if not isinstance(converted, pl.DataFrame):
        raise InputDataError("check-ins must be a table, got a single column")
    return converted


def _conform_column(frame: pl.DataFrame, name: str, target: pl.DataType) -> pl.Expr:
    source = frame.schema[name]
    column = pl.col(name)
    if isinstance(target, pl.Datetime) and isinstance(source, pl.Datetime):
        # Naive timestamps are taken as UTC (contract: all times are UTC); zoned ones are converted.
        zoned = column.dt.replace_time_zone("UTC") if source.time_zone is None else column
        column = zoned.dt.convert_time_zone("UTC")
    elif source == pl.Null:
        column = column.cast(target)
    try:
        frame.head(0).select(column.cast(target, strict=True))
    except pl.exceptions.PolarsError as exc:
        raise InputDataError(f"check-in column {name!r} has type {source}, expected {target}") from exc
    return column.cast(target)


def split_rejected(checkins: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(usable check-ins, rejected users with the reason) — a user with one bad row is rejected whole."""
    problem = (
        pl.when(pl.col("id").is_null())
        .then(pl.lit("check-in without id"))
        .when(pl.col("created_at").is_null())
        .then(pl.concat_str(pl.lit("check-in "), pl.col("id"), pl.lit(" has no created_at")))
    )
    flagged = checkins.with_columns(problem=problem)
    bad_rows = flagged.filter(pl.col("problem").is_not_null())
    if bad_rows.is_empty():
        return checkins, pl.DataFrame(schema=REJECTED_SCHEMA)
    rejected = bad_rows.group_by("user_id", maintain_order=True).agg(error=pl.col("problem").first())
    usable = checkins.join(rejected.select("user_id"), on="user_id", how="anti", nulls_equal=True)
    return usable, rejected.select([pl.col(n).cast(t) for n, t in REJECTED_SCHEMA.items()])
