"""Reference times (`--as-of`, `as_of=`): all times are UTC, and a naive one means UTC.

One definition for the command line, the library and the engine, so that the same text or
datetime is the same instant wherever it is given.
"""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(moment: datetime) -> datetime:
    """The same instant in UTC; a naive datetime is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_moment(text: str) -> datetime:
    """An ISO 8601 timestamp as a UTC datetime (no offset means UTC); ValueError otherwise."""
    return as_utc(datetime.fromisoformat(text))
