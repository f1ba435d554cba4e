"""Durations written the way the old Go job took them: `90s`, `30m`, `1h`, `1h30m`, `500ms`.

Logs and messages print a duration in the same notation (`format_duration`), so that a value
can be copied from a log line into a setting: `30m` reads back as `30m`, never `PT30M`.
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
# The whole units format_duration writes, largest first, in milliseconds.
_WHOLE_UNITS = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000))


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
    """The span in the notation settings take, to the millisecond: `30m`, `1h30m`, `2d`, `1.5s`, `250ms`.

    Zero units are left out (`1h`, not `1h0m0s`); seconds carry the milliseconds as decimals
    (`5m30.25s`), and a span under a second is whole milliseconds (`250ms`). The canonical
    text round-trips: `format_duration(parse_duration(text)) == text`.
    """
    if span < timedelta(0):
        return "-" + format_duration(-span)
    milliseconds = (span // timedelta(microseconds=1) + 500) // 1000  # integers: exact for any timedelta
    if milliseconds < 1000:
        return f"{milliseconds}ms" if milliseconds else "0s"
    parts = []
    for unit, size in _WHOLE_UNITS:
        count, milliseconds = divmod(milliseconds, size)
        if count:
            parts.append(f"{count}{unit}")
    if milliseconds:
        seconds, fraction = divmod(milliseconds, 1000)
        parts.append(f"{seconds}.{fraction:03d}".rstrip("0").rstrip(".") + "s")
    return "".join(parts)
