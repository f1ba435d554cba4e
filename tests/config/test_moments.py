"""Reference times: the same instant whether given naive, zoned or as ISO 8601 text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from montage_vec.config.moments import as_utc, parse_moment

NOON = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def test_naive_means_utc_and_zoned_is_converted() -> None:
    assert as_utc(NOON.replace(tzinfo=None)) == NOON
    elsewhere = NOON.astimezone(timezone(timedelta(hours=-3, minutes=-30)))
    assert as_utc(elsewhere) == NOON and as_utc(elsewhere).tzinfo is UTC


@pytest.mark.parametrize("text", ["2026-06-01T12:00:00", "2026-06-01T12:00:00Z", "2026-06-01T14:00:00+02:00"])
def test_text_with_or_without_an_offset(text: str) -> None:
    assert parse_moment(text) == NOON
    assert parse_moment(text).tzinfo is UTC


def test_text_that_is_no_timestamp_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_moment("yesterday")
