"""Rendering SQL: a statement's `{name}` placeholders are filled in one step, by `render`.

Statements are complete texts. The only values that may enter them are the types below,
each validated when it is made: quoted identifiers (any characters, escaped), bare names
the backend itself chooses (type and function names), canonical uuid arrays and
timezone-aware timestamps. A plain `str` is refused, so nothing read from input or
configuration can be spliced in unchecked. Everything else travels as a bound parameter.

Filling happens in a single pass over the template, so braces, quotes or backslashes
inside a value can never be read as another placeholder.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from montage_vec.errors import InputDataError

PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*)\}")
BARE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SNAPSHOT = re.compile(r"^\d+:\d+:(\d+(,\d+)*)?$")
CANONICAL_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


@dataclass(frozen=True)
class Identifier:
    """A table or schema name, optionally schema-qualified; rendered double-quoted."""

    name: str
    schema: str | None = None

    def __post_init__(self) -> None:
        for part in (self.name, self.schema):
            if part is not None and (not part or "\x00" in part):
                raise ValueError(f"not a usable SQL identifier: {part!r}")

    def sql(self, dialect: str) -> str:
        quoted = '"' + self.name.replace('"', '""') + '"'
        if self.schema is None:
            return quoted
        return '"' + self.schema.replace('"', '""') + '".' + quoted


@dataclass(frozen=True)
class Keyword:
    """A type or function name the backend chooses (`jsonb`, `json_object`): letters, digits, `_`."""

    word: str

    def __post_init__(self) -> None:
        if not BARE_NAME.match(self.word):
            raise ValueError(f"not a bare SQL name: {self.word!r}")

    def sql(self, dialect: str) -> str:
        return self.word


@dataclass(frozen=True)
class Timestamp:
    """A TIMESTAMPTZ literal, in UTC."""

    moment: datetime

    def __post_init__(self) -> None:
        if self.moment.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")

    def sql(self, dialect: str) -> str:
        return f"TIMESTAMPTZ '{self.moment.astimezone(UTC).isoformat()}'"


@dataclass(frozen=True)
class UuidArray:
    """A list of canonical (lower-case, hyphenated) uuids, as the backend's uuid array literal.

    PostgreSQL reads ids this way rather than as a bound parameter, because a bound parameter
    turns off the driver's streaming COPY for the result.
    """

    uuids: tuple[str, ...]

    @classmethod
    def of(cls, user_ids: pl.Series | Sequence[str]) -> UuidArray:
        """InputDataError (naming a few offenders) when any id is not a canonical uuid."""
        series = user_ids if isinstance(user_ids, pl.Series) else pl.Series(list(user_ids), dtype=pl.String)
        valid = series.str.contains(CANONICAL_UUID).fill_null(False)
        if not valid.all():
            raise InputDataError(f"not canonical uuids: {series.filter(~valid).head(3).to_list()}")
        return cls(tuple(series.to_list()))

    def sql(self, dialect: str) -> str:
        if dialect == "postgresql":
            return "'{" + ",".join(self.uuids) + "}'::uuid[]"
        return "[" + ",".join(f"'{value}'" for value in self.uuids) + "]::UUID[]"


@dataclass(frozen=True)
class Snapshot:
    """A PostgreSQL snapshot (`xmin:xmax:xip,...`) as `pg_current_snapshot()` gives it."""

    text: str

    def __post_init__(self) -> None:
        if not SNAPSHOT.match(self.text):
            raise ValueError(f"not a pg_snapshot: {self.text!r}")

    def sql(self, dialect: str) -> str:
        return f"'{self.text}'::pg_snapshot"


SqlValue = Identifier | Keyword | Timestamp | UuidArray | Snapshot


class RenderError(ValueError):
    """A template and its values do not fit together: a programming error, never bad data."""


def render(template: str, dialect: str, values: Mapping[str, SqlValue]) -> str:
    """`template` with every `{name}` replaced by `values[name]` rendered for `dialect`.

    A placeholder without a value is an error, so a typo fails loudly; values a template
    does not use are ignored (a session offers all its table names to every statement).
    """
    wanted = set(PLACEHOLDER.findall(template))
    if missing := wanted - values.keys():
        raise RenderError(f"no value for placeholder(s) {sorted(missing)}")
    for name in wanted:
        if not isinstance(values[name], SqlValue):
            raise RenderError(f"{name}: {type(values[name]).__name__} cannot be rendered into SQL")
    return PLACEHOLDER.sub(lambda match: values[match.group(1)].sql(dialect), template)
