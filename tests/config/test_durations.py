"""Go-style durations: parsing what operators write, and the same notation in the text the logs show."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from montage_vec.config import Settings, format_duration, load_settings, parse_duration
from montage_vec.errors import ConfigError


@pytest.fixture(autouse=True)
def no_job_settings_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1h30m15s", timedelta(hours=1, minutes=30, seconds=15)),
        ("500ms", timedelta(milliseconds=500)),
        ("1s500ms", timedelta(seconds=1.5)),
        ("45", timedelta(seconds=45)),
        ("0", timedelta(0)),
        ("2.5", timedelta(seconds=2.5)),
        ("1.5h", timedelta(minutes=90)),
        ("2d", timedelta(days=2)),
        ("10S", timedelta(seconds=10)),
        ("  5m ", timedelta(minutes=5)),
        ("1h0m0s", timedelta(hours=1)),
    ],
)
def test_parses_go_style_durations_and_bare_seconds(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("value", [45, 2.5, timedelta(minutes=3)])
def test_numbers_and_timedeltas_pass_through(value: int | float | timedelta) -> None:
    expected = value if isinstance(value, timedelta) else timedelta(seconds=value)
    assert parse_duration(value) == expected


@pytest.mark.parametrize("text", ["forever", "", "   ", "10x", "-5s", "ms", "h1", "1h 30m", "5 m", "1h30", "1.5.5s"])
def test_rejects_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    "variable",
    ["BATCH_PROCESSING_TIMEOUT", "CHECKIN_SERVICE_TIMEOUT", "USER_SERVICE_TIMEOUT", "DB_CONNECT_TIMEOUT",
     "WATERMARK_OVERLAP", "CACHE_TTL"],
)  # fmt: skip
def test_every_duration_setting_takes_go_style_text(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "1h30m")
    assert getattr(load_settings(), variable.lower()) == timedelta(minutes=90)
    monkeypatch.setenv(variable, "forever")
    with pytest.raises(ConfigError, match=variable):
        load_settings()


@pytest.mark.parametrize(
    ("span", "text"),
    [(timedelta(minutes=30), "30m"), (timedelta(minutes=90), "1h30m"), (timedelta(seconds=45), "45s"),
     (timedelta(days=2), "2d"), (timedelta(seconds=1.5), "1.5s"), (timedelta(milliseconds=250), "250ms"),
     (timedelta(0), "0s"), (timedelta(seconds=90), "1m30s"), (timedelta(seconds=330.25), "5m30.25s"),
     (timedelta(hours=1), "1h"), (timedelta(days=1, hours=1, seconds=1), "1d1h1s"),
     (timedelta(seconds=12.3456), "12.346s"), (timedelta(microseconds=400), "0s"), (timedelta(seconds=-5), "-5s")],
)  # fmt: skip
def test_format_is_the_notation_settings_take(span: timedelta, text: str) -> None:
    assert format_duration(span) == text


CANONICAL = ["30m", "1h30m", "45s", "2d", "1.5s", "250ms", "0s", "1d1h", "5m30.25s", "2d3h4m5.006s"]


@pytest.mark.parametrize("text", CANONICAL)
def test_canonical_text_round_trips(text: str) -> None:
    assert format_duration(parse_duration(text)) == text


@given(st.integers(min_value=0, max_value=10**12))
def test_any_span_in_milliseconds_round_trips(milliseconds: int) -> None:
    span = timedelta(milliseconds=milliseconds)
    text = format_duration(span)
    assert parse_duration(text) == span, text
    assert format_duration(parse_duration(text)) == text


@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=10**5)))
def test_any_span_reads_back_within_half_a_millisecond(span: timedelta) -> None:
    assert abs(parse_duration(format_duration(span)) - span) <= timedelta(microseconds=500)


@pytest.mark.parametrize("seconds", [119.9996, 3599.9996, 59.9999])
def test_rounding_carries_into_the_next_unit(seconds: float) -> None:
    """Rounding to the millisecond happens before splitting, so 119.9996 s reads 2m, never 1m60s."""
    text = format_duration(timedelta(seconds=seconds))
    assert not re.search(r"(?<![\d.])60(\.0+)?s", text), text
    assert parse_duration(text) == timedelta(seconds=round(seconds, 3)), text
