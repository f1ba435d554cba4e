"""conform_checkins: which input frames the engine takes, and the errors that name what is wrong."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from montage_vec.engine import CHECKIN_SCHEMA, compute_montages
from montage_vec.engine.schema import REQUIRED_CHECKIN_COLUMNS
from montage_vec.errors import InputDataError
from tests.engine.builders import AS_OF, U1, checkin, cid, run
from tests.engine.reference import GENERAL, INTEREST, from_engine
from tests.engine.strategies import to_frame

OPTIONAL_COLUMNS = [name for name in CHECKIN_SCHEMA if name not in REQUIRED_CHECKIN_COLUMNS]


@pytest.mark.parametrize("column", REQUIRED_CHECKIN_COLUMNS)
def test_missing_required_column_raises_input_data_error_naming_it(column: str) -> None:
    frame = to_frame([checkin(1)]).drop(column)
    with pytest.raises(InputDataError, match=rf"\b{column}\b"):
        compute_montages(frame, AS_OF)
    with pytest.raises(InputDataError, match=rf"\b{column}\b"):
        compute_montages(frame.to_arrow(), AS_OF)


@pytest.mark.parametrize("column", OPTIONAL_COLUMNS)
def test_a_missing_optional_column_is_null(column: str) -> None:
    rows = [checkin(n, tags=["coffee"], text="hello", location="park") for n in range(1, 4)]
    expected = run([{**row, column: None} for row in rows])
    frame = to_frame(rows).drop(column)
    assert from_engine(compute_montages(frame, AS_OF)) == expected
    assert from_engine(compute_montages(frame.to_arrow(), AS_OF)) == expected


def test_three_columns_are_enough_and_null_privacy_is_not_eligible() -> None:
    """The minimal frame a notebook builds: no privacy means no eligible check-in (rule 1)."""
    frame = pl.DataFrame(
        {"id": [cid(1), cid(2)], "user_id": [U1, U1], "created_at": [AS_OF - timedelta(hours=1), AS_OF]}
    )
    assert compute_montages(frame, AS_OF).montages.is_empty()
    public = frame.with_columns(privacy=pl.lit("public"))
    out = from_engine(compute_montages(public, AS_OF))
    assert [item[1] for item in out.items[(U1, GENERAL, "")]] == [cid(2), cid(1)]


def test_tags_given_as_text_name_the_column() -> None:
    frame = to_frame([checkin(1)]).with_columns(tags=pl.lit("coffee,hiking"))
    with pytest.raises(InputDataError, match=r"'tags' has type .*expected a list of strings"):
        compute_montages(frame, AS_OF)


@pytest.mark.parametrize("column", ["created_at", "deleted_at", "updated_at"])
def test_times_given_as_text_name_the_column(column: str) -> None:
    frame = to_frame([checkin(1)]).with_columns(pl.lit("2024-03-01T00:00:00Z").alias(column))
    with pytest.raises(InputDataError, match=rf"'{column}' has type"):
        compute_montages(frame, AS_OF)


def test_tags_of_another_inner_type_name_the_column() -> None:
    frame = to_frame([checkin(1)]).with_columns(tags=pl.lit([{"a": 1}], dtype=pl.List(pl.Struct({"a": pl.Int64}))))
    with pytest.raises(InputDataError, match="'tags'"):
        compute_montages(frame, AS_OF)


def test_extra_columns_are_ignored() -> None:
    rows = [checkin(n, tags=["coffee"]) for n in range(1, 4)]
    with_extra = to_frame(rows).with_columns(mood=pl.lit("happy"))
    out = from_engine(compute_montages(with_extra, AS_OF))
    assert out == run(rows)
    assert (U1, INTEREST, "coffee") in out.montages
