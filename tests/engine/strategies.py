"""Hypothesis strategies for check-in frames that sit on the contract's edges.

A scenario is (rows, as_of, params): `rows` is a list of dicts with the CHECKIN_SCHEMA
columns and `updated_at`, turned into a frame with `to_frame` / `to_arrow`. The strategies
aim at:

* few users (1-5) with about 0-40 check-ins each, rows interleaved across users;
* created_at drawn mostly from a handful of instants (ties), including the window cut
  `as_of - lookback` exactly, one microsecond either side, and instants after `as_of`;
* check-in ids sharing a few prefixes, so created_at ties are broken by the tail of the id
  text; about a quarter of the rows reuse an earlier row's id (rule 8), often under another
  user, with updated_at from a few instants (ties and NULL included) and other fields of
  their own, so that the winner is decided at every level of the tie-break;
* privacy public/friends/private/NULL, also re-cased, whitespace-padded and with a
  non-ASCII look-alike (rule 1), deleted or not;
* tags: NULL lists, empty lists, NULL elements, '', whitespace-only (including U+001C..1F,
  U+3000, NBSP), padded and re-cased variants of a small vocabulary, Unicode case oddities
  (İ, ß, Σ/ς, final sigma words, Kelvin sign, ligatures) and 98-102 character strings;
* optional text/media/location fields with JSON-hostile characters.

Speed matters more than usual: Hypothesis spends most of a property's time (and nearly
all of a failure's shrinking time) generating rows. So each example first draws small
palettes (users, tag lists, texts, extra instants), and then every row is just two
integers decoded digit by digit into palette indexes (`_decode`). Each integer stays
below 2**24 (Hypothesis skews wider ranges towards small values, which would starve the
high digits), and index 0 of every digit is the plain choice, so shrinking still ends on
simple rows.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pyarrow as pa
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from montage_vec.engine import CHECKIN_SCHEMA, OPTIONAL_CHECKIN_SCHEMA, MontageParams

# The frames the tests build: the required columns and the optional updated_at.
FRAME_SCHEMA: dict[str, pl.DataType] = {**CHECKIN_SCHEMA, **OPTIONAL_CHECKIN_SCHEMA}
CHECKIN_COLUMNS: tuple[str, ...] = tuple(FRAME_SCHEMA)


def property_settings(max_examples: int) -> settings:
    """Settings for the engine properties.

    No deadline (Polars' first call warms up). A failure costs seconds of shrinking per
    hundred calls here, so only one failure is shrunk and the explain phase, which traces
    every line and took most of the shrinking time, is skipped.
    """
    return settings(
        deadline=None,
        max_examples=max_examples,
        report_multiple_bugs=False,
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


ARROW_CHECKIN_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("user_id", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("deleted_at", pa.timestamp("us", tz="UTC")),
        ("privacy", pa.string()),
        ("text_content", pa.string()),
        ("media_url", pa.string()),
        ("media_type", pa.string()),
        ("thumbnail_url", pa.string()),
        ("location_name", pa.string()),
        ("tags", pa.list_(pa.string())),
        ("updated_at", pa.timestamp("us", tz="UTC")),
    ]
)

AS_OF_CHOICES = (
    datetime(2024, 3, 31, 12, 0, tzinfo=UTC),
    datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=UTC),
)
DEFAULT_LOOKBACK_DAYS = 30
US = timedelta(microseconds=1)

# Whitespace per str.isspace(), including the information separators Unicode does not call White_Space.
WHITESPACE = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2003\u2028\u2029\u202f\u3000"
VOCABULARY = (
    "coffee",
    "hiking",
    "straße",
    "STRASSE",
    "İstanbul",
    "istanbul",
    "ΟΔΟΣ",
    "οδος",
    "ΟΔΟΣ ΟΔΟΣ",
    "Σ",
    "σ",
    "ς",
    "\u212a",  # KELVIN SIGN, lower-cases to 'k'
    "k",
    "ǅ",
    "ﬁ",
    "café",
    "cafe\u0301",
    "a b",
)
FOCUSED_VOCABULARY = ("coffee", "ΟΔΟΣ", "straße")
CASINGS = (
    lambda s: s,
    str.upper,
    str.lower,
    str.title,
    str.swapcase,
)
FREE_TEXT = (
    "",
    "hello",
    'say "hi"',
    "back\\slash",
    "ctl \x00\x01\x08\x1f\x7f",
    "new\nline\ttab",
    "naïve ☕ 😀",
    "\u2028\u2029",
    "</script>",
)


def uuid_text() -> st.SearchStrategy[str]:
    """A random uuid as lower-case text."""
    return st.uuids().map(str)


# Shared id prefixes (a random one is added per example) so that the id order of
# created_at ties depends on the tail of the text.
ID_PREFIXES = (
    "00000000-0000-4000-8000-",
    "7fffffff-ffff-4fff-bfff-",
    "c0ffee00-0000-4000-a000-",
)
_TAIL_BITS = 48
_SCRAMBLE = 0x9E3779B97F4B  # odd, so multiplying by it permutes [0, 2**48)


def _pooled_id(number: int, prefixes: tuple[str, ...]) -> str:
    """A uuid text, distinct for distinct `number` < 2**48, in an order unrelated to `number`."""
    tail = (number * _SCRAMBLE) % 2**_TAIL_BITS
    return f"{prefixes[tail % len(prefixes)]}{tail:012x}"


def edge_instants(as_of: datetime, lookback_days: int) -> list[datetime]:
    """Instants around the window cut and `as_of`, for created_at ties and boundary cases."""
    cut = as_of - timedelta(days=lookback_days)
    default_cut = as_of - timedelta(days=DEFAULT_LOOKBACK_DAYS)
    candidates = {
        cut,
        cut - US,
        cut + US,
        cut - timedelta(days=1),
        cut + timedelta(hours=1),
        default_cut,
        default_cut + US,
        as_of - timedelta(days=1),
        as_of - US,
        as_of,
        as_of + US,
        as_of + timedelta(days=2),
        as_of - timedelta(days=lookback_days + 45),
    }
    return sorted(candidates)


def padding() -> st.SearchStrategy[str]:
    return st.text(alphabet=WHITESPACE, max_size=2)


def vocabulary_variant(vocabulary: tuple[str, ...] = VOCABULARY) -> st.SearchStrategy[str]:
    """A word of the vocabulary, re-cased and padded with whitespace."""
    return st.builds(
        lambda left, word, casing, right: left + casing(word) + right,
        padding(),
        st.sampled_from(vocabulary),
        st.sampled_from(CASINGS),
        padding(),
    )


def long_tag() -> st.SearchStrategy[str]:
    """Tags whose normalised length is around the 100 code point limit."""
    plain = st.tuples(st.sampled_from(["a", "Z", "é", "😀"]), st.integers(98, 102))
    # 'İ'.lower() is two code points: 50 of them normalise to exactly 100.
    dotted = st.tuples(st.just("İ"), st.integers(49, 51))
    return st.builds(lambda pair, pad: pad + pair[0] * pair[1] + pad, plain | dotted, padding())


def tag_element() -> st.SearchStrategy[str | None]:
    return st.one_of(
        vocabulary_variant(),
        vocabulary_variant(),
        vocabulary_variant(),
        st.none(),
        st.just(""),
        st.text(alphabet=WHITESPACE, min_size=1, max_size=3),
        long_tag(),
        st.text(max_size=4),
    )


def tag_lists() -> st.SearchStrategy[list[str | None] | None]:
    non_empty = st.lists(tag_element(), min_size=1, max_size=5)
    return st.one_of(non_empty, non_empty, non_empty, st.none(), st.just([]))


def optional_text() -> st.SearchStrategy[str | None]:
    return st.none() | st.none() | st.sampled_from(FREE_TEXT) | st.text(max_size=6)


# Built once: constructing these strategies costs more than drawing from them.
TAG_PALETTES = st.lists(tag_lists(), min_size=1, max_size=6)
FOCUSED_TAG_PALETTES = st.lists(
    st.lists(vocabulary_variant(FOCUSED_VOCABULARY), min_size=1, max_size=3), min_size=1, max_size=6
)
TEXT_PALETTES = st.lists(optional_text(), min_size=1, max_size=4)

PRIVACY_AND_DELETED: tuple[tuple[str | None, bool], ...] = (
    ("public", False),
    ("friends", False),
    ("public", False),
    ("private", False),
    (None, False),
    ("friends", False),
    ("public", True),
    ("friends", True),
    (" Public", False),
    ("FRIENDS", False),
    ("public\u3000\x1c", False),
    (" private ", False),
    ("PUBL\u0130C", False),  # lower-cases to 'publi\u0307c': not 'public'
    ("Friends\t", True),
)
MEDIA_URLS = (None, None, "https://x.test/a.jpg", "")
MEDIA_TYPES = (None, "image", "video")
THUMBNAILS = (None, 'https://x.test/t.jpg?q="1"&r=\\')
# (digit) -> 0 for a new id, or k to reuse the id of the row k places back (rule 8).
COPY_OF = (0, 0, 0, 0, 0, 0, 1, 3)
# (digit) -> updated_at as an offset from as_of, or None; few values, so copies tie often.
UPDATED_OFFSETS = (None, timedelta(days=-1), timedelta(0), timedelta(days=-1, microseconds=1))
# (digit of the flaw) -> None, or the column a broken row lacks; only with `broken`.
FLAWS: tuple[str | None, ...] = (None,) * 23 + ("created_at", "id")


def _decode(number: int, sizes: list[int]) -> list[int]:
    """The mixed-radix digits of `number`, least significant first."""
    digits = []
    for size in sizes:
        number, digit = divmod(number, size)
        digits.append(digit)
    return digits


@st.composite
def checkin_rows(
    draw: st.DrawFn,
    as_of: datetime,
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
    *,
    max_users: int = 5,
    max_per_user: int = 40,
    broken: bool = False,
    focused: bool = False,
) -> list[dict[str, Any]]:
    """Check-in rows of 1..max_users users, interleaved; with `broken`, a few lack id or created_at.

    Tag lists and free texts come from small per-example palettes, so rows share tags and
    interests qualify. With `focused`, tags come from three words only and most rows share
    an interest.
    """
    users = draw(st.lists(uuid_text(), min_size=1, max_size=max_users, unique=True))
    prefixes = (*ID_PREFIXES, draw(uuid_text())[:24])
    tag_palette = draw(FOCUSED_TAG_PALETTES if focused else TAG_PALETTES)
    text_palette = draw(TEXT_PALETTES)
    # Any microsecond in a 95-day span around as_of, besides the edge instants.
    extra_instants = draw(
        st.lists(st.integers(-90 * 86_400 * 10**6, 5 * 86_400 * 10**6), max_size=6).map(
            lambda offsets: [as_of + timedelta(microseconds=micros) for micros in offsets]
        )
    )
    instants = edge_instants(as_of, lookback_days) + extra_instants
    flaws = FLAWS if broken else (None,)

    first_sizes = [len(instants), len(users), len(tag_palette), len(PRIVACY_AND_DELETED), len(flaws)]
    second_sizes = [
        len(text_palette),
        len(text_palette),
        len(MEDIA_URLS),
        len(MEDIA_TYPES),
        len(THUMBNAILS),
        len(COPY_OF),
        len(UPDATED_OFFSETS),
    ]
    packed_row = st.tuples(st.integers(0, math.prod(first_sizes) - 1), st.integers(0, math.prod(second_sizes) - 1))
    # Hypothesis keeps lists short unless told otherwise: a drawn minimum sets the typical size.
    most = max_per_user * len(users)
    least = draw(st.integers(0, most // 2))
    packed = draw(st.lists(packed_row, min_size=least, max_size=most, unique=True))

    rows: list[dict[str, Any]] = []
    for first, second in packed:
        instant, user, tags, privacy_deleted, flaw = _decode(first, first_sizes)
        text, location, media_url, media_type, thumbnail, copy_of, updated = _decode(second, second_sizes)
        privacy, deleted = PRIVACY_AND_DELETED[privacy_deleted]
        back = COPY_OF[copy_of]
        updated_offset = UPDATED_OFFSETS[updated]
        row = {
            "id": rows[-back]["id"]
            if 0 < back <= len(rows)
            else _pooled_id(first * math.prod(second_sizes) + second, prefixes),
            "user_id": users[user],
            "created_at": instants[instant],
            "deleted_at": as_of - timedelta(days=1) if deleted else None,
            "privacy": privacy,
            "text_content": text_palette[text],
            "media_url": MEDIA_URLS[media_url],
            "media_type": MEDIA_TYPES[media_type],
            "thumbnail_url": THUMBNAILS[thumbnail],
            "location_name": text_palette[location],
            "tags": tag_palette[tags],
            "updated_at": None if updated_offset is None else as_of + updated_offset,
        }
        if flaws[flaw] is not None:
            row[flaws[flaw]] = None
        rows.append(row)
    return rows


def montage_params() -> st.SearchStrategy[MontageParams]:
    return st.builds(
        MontageParams,
        max_items=st.integers(1, 5),
        min_interest_occurrence=st.integers(1, 4),
        interest_lookback_days=st.integers(0, 40),
        privacy_included=st.sampled_from(
            [
                frozenset({"public", "friends"}),
                frozenset({"public", "friends"}),
                frozenset({"public"}),
                frozenset({" Public ", "FRIENDS"}),  # the configured side is normalised too
            ]
        ),
    )


@st.composite
def scenarios(
    draw: st.DrawFn,
    *,
    vary_params: bool = False,
    broken: bool = False,
    focused: bool = False,
    max_users: int = 5,
    max_per_user: int = 40,
) -> tuple[list[dict[str, Any]], datetime, MontageParams]:
    """(rows, as_of, params) with the window cut of those params among the created_at instants."""
    as_of = draw(st.sampled_from(AS_OF_CHOICES))
    params = draw(montage_params()) if vary_params else MontageParams()
    rows = draw(
        checkin_rows(
            as_of,
            params.interest_lookback_days,
            max_users=max_users,
            max_per_user=max_per_user,
            broken=broken,
            focused=focused,
        )
    )
    return rows, as_of, params


def to_frame(rows: list[dict[str, Any]], *, updated_at: bool = True) -> pl.DataFrame:
    """The rows as a Polars frame with CHECKIN_SCHEMA, and updated_at unless told otherwise."""
    return pl.DataFrame(rows, schema=FRAME_SCHEMA if updated_at else CHECKIN_SCHEMA)


def to_arrow(rows: list[dict[str, Any]]) -> pa.Table:
    """The rows as a plain Arrow table (string, timestamp[us, UTC], list<string>)."""
    return pa.Table.from_pylist(
        [{name: row.get(name) for name in CHECKIN_COLUMNS} for row in rows], schema=ARROW_CHECKIN_SCHEMA
    )
