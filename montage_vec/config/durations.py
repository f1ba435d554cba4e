"""Durations written the way the old Go job took them: `90s`, `30m`, `1h`, `1h30m`, `500ms`."""

from __future__ import annotations

import re
from datetime import timedelta

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str | int | float | timedelta) -> timedelta:
    """A timedelta from a Go-style duration string, or a bare number of seconds."""
    if isinstance(text, timedelta):
        return text
    if isinstance(text, int | float):
        return timedelta(seconds=text)
    cleaned = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", cleaned):
        return timedelta(seconds=float(cleaned))
    if not cleaned or _PART.sub("", cleaned):
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 30m, 1h30m)")
    seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(cleaned))
    return timedelta(seconds=seconds)


def format_duration(span: timedelta) -> str:
    """Go-style text for logs, e.g. `5m30.2s`."""
    total = span.total_seconds()
    if total >= 60:
        total = round(total, 1)  # round before splitting, so 119.97 s reads 2m0s, never 1m60s
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{seconds:.3g}s" if total < 60 else f"{seconds:.1f}s".replace(".0s", "s")
    if minutes or hours:
        text = f"{int(minutes)}m{text}"
    if hours:
        text = f"{int(hours)}h{text}"
    return text
