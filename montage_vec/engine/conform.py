"""Bring check-ins from any source to CHECKIN_SCHEMA (plus OPTIONAL_CHECKIN_SCHEMA), and set
aside rows that cannot be used.

A source without a required column (REQUIRED_CHECKIN_COLUMNS) or with a column of the wrong
type is a programming or configuration error and raises InputDataError naming the column;
the other contract columns are NULL when absent. A row that breaks the table's NOT NULL
promises (no id, no created_at) only takes its own user out of the run: the job puts that
user on the retry list and writes everyone else.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa
from polars.datatypes import DataTypeClass

from montage_vec.engine.schema import (
    CHECKIN_SCHEMA,
    OPTIONAL_CHECKIN_SCHEMA,
    REJECTED_SCHEMA,
    REQUIRED_CHECKIN_COLUMNS,
)
from montage_vec.errors import InputDataError

ENGINE_COLUMNS: dict[str, pl.DataType] = {**CHECKIN_SCHEMA, **OPTIONAL_CHECKIN_SCHEMA}


def conform_checkins(checkins: pl.DataFrame | pa.Table) -> pl.DataFrame:
    """The engine's columns, in its types; an absent optional column is all NULL, extra columns are dropped."""
    frame = checkins if isinstance(checkins, pl.DataFrame) else _from_arrow(checkins)
    missing = [name for name in REQUIRED_CHECKIN_COLUMNS if name not in frame.columns]
    if missing:
        raise InputDataError(f"check-ins lack required column(s): {', '.join(missing)}")
    return pl.DataFrame(
        [
            _conform_column(frame[name], dtype) if name in frame.columns else _all_null(name, dtype, frame.height)
            for name, dtype in ENGINE_COLUMNS.items()
        ]
    )


def _from_arrow(table: pa.Table) -> pl.DataFrame:
    converted = pl.from_arrow(table)
    if not isinstance(converted, pl.DataFrame):
        raise InputDataError("check-ins must be a table, got a single column")
    return converted


def _all_null(name: str, dtype: pl.DataType, height: int) -> pl.Series:
    return pl.Series(name, [], dtype).extend_constant(None, height)


def _conform_column(column: pl.Series, target: pl.DataType) -> pl.Series:
    """`column` cast to `target`; InputDataError naming it when its type does not fit.

    Only casts that keep the meaning are made: text stays text (uuids are their text),
    times stay times; a number is no id and a string is no list of tags.
    """
    source = column.dtype
    if not _fits(source, target):
        expected = "a list of strings" if isinstance(target, pl.List) else str(target)
        raise InputDataError(f"check-in column {column.name!r} has type {source}, expected {expected}")
    if isinstance(target, pl.Datetime) and isinstance(source, pl.Datetime):
        # Naive timestamps are taken as UTC (contract: all times are UTC); zoned ones are converted.
        zoned = column.dt.replace_time_zone("UTC") if source.time_zone is None else column
        return zoned.dt.convert_time_zone("UTC").cast(target)
    return column.cast(target)


def _fits(source: pl.DataType | DataTypeClass, target: pl.DataType | DataTypeClass) -> bool:
    if source == pl.Null:
        return True
    if isinstance(target, pl.List):
        return isinstance(source, pl.List) and _fits(source.inner, target.inner)
    if isinstance(target, pl.Datetime):
        return isinstance(source, pl.Datetime | pl.Date)
    return isinstance(source, pl.String | pl.Categorical | pl.Enum)


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


def split_unsupported_times(checkins: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(check-ins of users without one, those users with the reason), per the stores' `unsupported_time`.

    The stores read times outside the years 1-9999 (which no Python datetime holds) as NULL
    and say so in that column; such a user is set aside whole, like a rejected one.
    """
    if "unsupported_time" not in checkins.columns:
        return checkins, pl.DataFrame(schema=REJECTED_SCHEMA)
    flagged = checkins.filter(pl.col("unsupported_time").is_not_null())
    if flagged.is_empty():
        return checkins.drop("unsupported_time"), pl.DataFrame(schema=REJECTED_SCHEMA)
    rejected = flagged.group_by("user_id", maintain_order=True).agg(
        error=pl.format(
            "check-in {} has {}, outside the supported years 1-9999",
            pl.col("id").first(),
            pl.col("unsupported_time").first(),
        )
    )
    usable = checkins.join(rejected.select("user_id"), on="user_id", how="anti").drop("unsupported_time")
    return usable, rejected.select([pl.col(name).cast(dtype) for name, dtype in REJECTED_SCHEMA.items()])
