"""MONTAGE_SOURCE and MONTAGE_SCHEMA: names of relations in the application's database.

A relation is written as SQL would: `checkins`, `app.checkins`, or with double quotes
around a part that needs them (`"My App"."Check-ins"`). Unquoted parts keep their case as
written, because the job always quotes what it sends; an application whose table was
created unquoted in upper case must therefore give it in lower case, as PostgreSQL stores it.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_SOURCE = "checkins"


@dataclass(frozen=True)
class RelationName:
    name: str
    schema: str | None = None

    @classmethod
    def parse(cls, text: str) -> RelationName:
        """ValueError unless `text` is `name` or `schema.name`, each part plain or double-quoted."""
        parts = _split_parts(text.strip())
        if len(parts) == 1:
            return cls(parts[0])
        if len(parts) == 2:
            return cls(parts[1], parts[0])
        raise ValueError(f"must be NAME or SCHEMA.NAME, got {text!r}")

    def __str__(self) -> str:
        return ".".join(_display(part) for part in (self.schema, self.name) if part is not None)


def parse_schema(text: str) -> str:
    """A single schema name, plain or double-quoted."""
    parts = _split_parts(text.strip())
    if len(parts) != 1:
        raise ValueError(f"must be one schema name, got {text!r}")
    return parts[0]


def _split_parts(text: str) -> list[str]:
    parts: list[str] = []
    position = 0
    while True:
        if text.startswith('"', position):
            part, position = _quoted(text, position)
        else:
            end = text.find(".", position)
            end = len(text) if end == -1 else end
            part, position = text[position:end], end
            if '"' in part or not part.strip() or part != part.strip():
                raise ValueError(f"not a relation name: {text!r}")
        if not part or "\x00" in part:
            raise ValueError(f"not a relation name: {text!r}")
        parts.append(part)
        if position == len(text):
            return parts
        if text[position] != ".":
            raise ValueError(f"not a relation name: {text!r}")
        position += 1


def _quoted(text: str, start: int) -> tuple[str, int]:
    """The part between double quotes at `start` ("" is a quote) and the position after it."""
    chars: list[str] = []
    position = start + 1
    while position < len(text):
        if text[position] == '"':
            if text.startswith('""', position):
                chars.append('"')
                position += 2
                continue
            return "".join(chars), position + 1
        chars.append(text[position])
        position += 1
    raise ValueError(f"unterminated quote in {text!r}")


def _display(part: str) -> str:
    plain = part.replace("_", "").isalnum() and part.isascii() and part == part.lower() and not part[0].isdigit()
    return part if plain else '"' + part.replace('"', '""') + '"'
