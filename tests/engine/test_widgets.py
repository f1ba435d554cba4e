"""Rule 6: widget type precedence and widget_metadata, a JSON object that must survive any text."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from montage_vec.engine import MontageParams
from tests.engine.builders import U1, checkin, cid, compute
from tests.engine.reference import GENERAL, widget_metadata, widget_type
from tests.engine.strategies import property_settings

MEDIA = "https://x.test/m.jpg"


def general_items(rows: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    """(checkin_id, widget_type, parsed metadata) of the general montage, newest first.

    json.loads runs in its default strict mode: raw control characters inside strings fail.
    """
    result = compute(rows, params=MontageParams(max_items=max(len(rows), 1)))
    items = result.items.filter(kind=GENERAL).sort("position")
    out = []
    for ident, kind, text in items.select("checkin_id", "widget_type", "widget_metadata").iter_rows():
        parsed = json.loads(text)
        assert isinstance(parsed, dict), text
        out.append((ident, kind, parsed))
    return out


@pytest.mark.parametrize(
    ("media_url", "text", "location", "expected"),
    [
        (MEDIA, "t", "l", "media"),
        (MEDIA, None, None, "media"),
        (MEDIA, None, "l", "media"),
        (None, "t", "l", "text"),
        (None, "t", None, "text"),
        (None, None, "l", "location"),
        (None, None, None, "activity"),
        # "set" is read as NOT NULL: an empty string is a value (see reference.py).
        ("", "t", "l", "media"),
        (None, "", "l", "text"),
        (None, None, "", "location"),
    ],
)
def test_rule6_widget_type_precedence(
    media_url: str | None, text: str | None, location: str | None, expected: str
) -> None:
    row = checkin(1, media_url=media_url, text=text, location=location)
    assert widget_type(row) == expected
    [(_, kind, _)] = general_items([row])
    assert kind == expected


def test_rule6_media_type_and_thumbnail_do_not_make_a_media_widget() -> None:
    row = checkin(1, media_type="image", thumbnail_url="https://x.test/t.jpg")
    [(_, kind, metadata)] = general_items([row])
    assert kind == "activity"
    assert metadata == {"media_type": "image", "thumbnail_url": "https://x.test/t.jpg", "tags": [], "privacy": "public"}


def test_rule6_metadata_leaves_out_null_keys_but_always_has_tags() -> None:
    [(_, _, metadata)] = general_items([checkin(1, tags=None, privacy="friends")])
    assert metadata == {"tags": [], "privacy": "friends"}


def test_rule6_metadata_with_every_field() -> None:
    row = checkin(
        1,
        media_url=MEDIA,
        media_type="video",
        thumbnail_url="https://x.test/t.jpg",
        text="hello",
        location="Oslo",
        tags=[" B", "a", None, "b", ""],
    )
    [(ident, kind, metadata)] = general_items([row])
    assert (ident, kind) == (cid(1), "media")
    assert metadata == {
        "media_url": MEDIA,
        "media_type": "video",
        "thumbnail_url": "https://x.test/t.jpg",
        "text": "hello",
        "location": "Oslo",
        "tags": ["b", "a"],
        "privacy": "public",
    }
    assert metadata == widget_metadata(row)


def test_rule6_empty_strings_are_values_not_nulls() -> None:
    row = checkin(1, media_url="", text="", location="", media_type="", thumbnail_url="")
    [(_, kind, metadata)] = general_items([row])
    assert kind == "media"
    assert metadata == {
        "media_url": "",
        "media_type": "",
        "thumbnail_url": "",
        "text": "",
        "location": "",
        "tags": [],
        "privacy": "public",
    }


HOSTILE = [
    'say "hi"',
    "back\\slash \\u0041 \\n",
    "".join(chr(code) for code in range(0x20)),
    "\x7f\x80\x9f",
    "naïve ☕ 😀 𝄞",
    "\u2028\u2029",
    "\ufeff\ufffe\uffff",
    "\U0010ffff",
    "</script><!--",
    '{"a":1}',
    "}",
    "{",
    ",",
    "null",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_rule6_metadata_json_escaping_round_trips(value: str) -> None:
    row = checkin(
        1,
        media_url=value,
        media_type=value,
        thumbnail_url=value,
        text=value,
        location=value,
        tags=[value],
    )
    [(_, _, metadata)] = general_items([row])
    assert metadata == widget_metadata(row)
    assert metadata["text"] == value


@property_settings(max_examples=120)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "media_url": st.none() | st.text(max_size=8),
                "media_type": st.none() | st.text(max_size=4),
                "thumbnail_url": st.none() | st.text(max_size=4),
                "text": st.none() | st.text(max_size=12) | st.sampled_from(HOSTILE),
                "location": st.none() | st.text(max_size=8),
                "tags": st.none() | st.lists(st.none() | st.text(max_size=6), max_size=4),
                "privacy": st.sampled_from(["public", "friends"]),
            }
        ),
        min_size=1,
        max_size=8,
    )
)
def test_rule6_property_metadata_round_trips_any_text(fields: list[dict[str, Any]]) -> None:
    rows = [checkin(n, user=U1, **values) for n, values in enumerate(fields)]
    items = general_items(rows)
    assert [ident for ident, _, _ in items] == [row["id"] for row in rows]
    assert [kind for _, kind, _ in items] == [widget_type(row) for row in rows]
    assert [metadata for _, _, metadata in items] == [widget_metadata(row) for row in rows]
