"""Go-style durations: parsing what operators write, and the text the logs show."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

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
    ("seconds", "text"),
    [(0.5, "0.5s"), (12.345, "12.3s"), (60, "1m0s"), (90, "1m30s"), (330.2, "5m30.2s"), (3600, "1h0m0s"),
     (5400, "1h30m0s"), (172800, "48h0m0s")],
)  # fmt: skip
def test_format_is_go_style(seconds: float, text: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == text


@pytest.mark.parametrize("seconds", [0.001, 0.5, 1, 59, 61.5, 90, 330.2, 3599, 3661, 5400, 86400])
def test_formatted_text_parses_back_to_about_the_same_span(seconds: float) -> None:
    text = format_duration(timedelta(seconds=seconds))
    assert parse_duration(text).total_seconds() == pytest.approx(seconds, rel=0.01, abs=0.05)


SECONDS_PART = re.compile(r"(?:^|[hm])(\d+(?:\.\d+)?)s$")


@pytest.mark.parametrize("seconds", [119.97, 3599.97])
def test_seconds_part_never_reaches_sixty(seconds: float) -> None:
    text = format_duration(timedelta(seconds=seconds))
    match = SECONDS_PART.search(text)
    assert match is not None, text
    assert float(match.group(1)) < 60, text
