"""Rule 2, tag normalisation: the engine must agree with Python's `str.strip().lower()` exactly.

Every check goes through compute_montages: the normalised tag list is read back from the
items' widget_metadata (rule 6 writes it there, in first-occurrence order) and the interest
names from the montages (with MIN_OCCURRENCE = 1 every surviving tag is an interest).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from montage_vec.engine import MontageParams
from tests.engine.builders import AS_OF, U1, checkin, compute
from tests.engine.reference import INTEREST, normalize_tag, normalize_tags
from tests.engine.strategies import WHITESPACE, property_settings

# Characters whose case behaviour is context- or version-sensitive: final sigma and its
# neighbours, letters with multi-character lower-case forms, and combining marks / cased
# letters assigned after Unicode 14 (this interpreter's table) that newer tables know.
TRICKY = (
    "Σ",
    "σ",
    "ς",
    "Α",
    "A",
    "a",
    "İ",
    "I",
    "ß",
    "ẞ",
    "\u212a",
    "ǅ",
    "ﬁ",
    "'",
    "\u00ad",
    "\u0301",
    "\u0345",
    "\u0ece",  # LAO YAMAKKAN, Unicode 15
    "\U00010efd",  # ARABIC SMALL LOW WORD SAKTA, Unicode 15
    "\U0001df25",  # LATIN SMALL LETTER D WITH MID-HEIGHT LEFT HOOK, Unicode 15
    "\U0001e030",  # MODIFIER LETTER CYRILLIC SMALL A, Unicode 15
    "\U00010d50",  # GARAY CAPITAL LETTER A, Unicode 16
    "\u1c89",  # CYRILLIC CAPITAL LETTER TJE, Unicode 16
)

ANY_TEXT = st.text(
    alphabet=st.one_of(st.characters(codec="utf-8"), st.sampled_from(TRICKY), st.sampled_from(WHITESPACE)),
    max_size=12,
)
LONG_TEXT = st.builds(
    lambda pad, body, pad2: pad + body + pad2,
    st.text(alphabet=WHITESPACE, max_size=2),
    st.text(alphabet=st.sampled_from(["a", "İ", "ß", "Σ", "😀", "\u0301"]), min_size=48, max_size=102),
    st.text(alphabet=WHITESPACE, max_size=2),
)


def engine_tag_lists(
    *raw_lists: list[str | None] | None, with_interests: bool = True
) -> tuple[list[list[str]], set[str]]:
    """(normalised tag list of each check-in, interest names) as the engine computes them.

    With `with_interests`, MIN_OCCURRENCE is 1 so every normalised tag becomes an interest;
    without, no interest qualifies (cheaper for very long tag lists) and the set is empty.
    """
    rows = [checkin(n, tags=raw) for n, raw in enumerate(raw_lists)]
    params = MontageParams(max_items=max(len(rows), 1), min_interest_occurrence=1 if with_interests else len(rows) + 1)
    result = compute(rows, params=params)
    general = result.items.filter(kind="general").sort("position")
    assert general["checkin_id"].to_list() == [row["id"] for row in rows]
    lists = [json.loads(text)["tags"] for text in general["widget_metadata"]]
    interests = set(result.montages.filter(kind=INTEREST)["interest"])
    return lists, interests


def engine_normalizes(raw: list[str | None] | None) -> list[str]:
    return engine_tag_lists(raw)[0][0]


# --------------------------------------------------------------------------- explicit cases


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ([" Coffee\t"], ["coffee"]),
        (["\x1ccoffee\x1f"], ["coffee"]),  # information separators are str.isspace()
        (["\u3000coffee\u00a0"], ["coffee"]),
        (["\u2028Hiking\x85"], ["hiking"]),
        (["a b", " A  B "], ["a b", "a  b"]),  # inner whitespace is kept
        (["\u200bx"], ["\u200bx"]),  # ZERO WIDTH SPACE is not whitespace for Python
    ],
)
def test_rule2_tags_are_stripped_and_lowercased(raw: list[str], expected: list[str]) -> None:
    assert normalize_tags(raw) == expected
    assert engine_normalizes(raw) == expected


@pytest.mark.parametrize("raw", [[""], ["   "], ["\u3000"], ["\x1c\x1d\x1e\x1f"], ["\t\n\r\x0b\x0c"], [" ", ""]])
def test_rule2_empty_and_whitespace_only_tags_are_dropped(raw: list[str]) -> None:
    assert engine_normalizes(raw) == []


def test_rule2_null_tags_value_is_an_empty_list() -> None:
    assert engine_tag_lists(None, []) == ([[], []], set())


def test_rule2_null_elements_are_dropped() -> None:
    assert engine_normalizes([None, "A", None, " b"]) == ["a", "b"]
    assert engine_normalizes([None]) == []


def test_rule2_duplicates_count_once_first_occurrence_kept() -> None:
    assert engine_normalizes(["b", "A", " a", "B", "c", "\u212a", "k"]) == ["b", "a", "c", "k"]


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ("a" * 100, True),
        ("a" * 101, False),
        ("  " + "a" * 100 + "\u3000", True),  # length counts after stripping
        ("😀" * 100, True),  # code points, not bytes
        ("😀" * 101, False),
        ("é" * 100, True),
        ("e\u0301" * 50, True),  # 100 code points, 50 graphemes
        ("e\u0301" * 51, False),
        ("ß" * 100, True),  # 'ß'.lower() stays one code point
        ("İ" * 50, True),  # 'İ'.lower() is two code points: 100 after lower-casing
        ("İ" * 51, False),  # 51 code points raw, 102 after lower-casing
        ("A" * 99 + "İ", False),  # 101 after lower-casing
    ],
)
def test_rule2_tags_longer_than_100_code_points_after_normalising_are_dropped(raw: str, kept: bool) -> None:
    assert (normalize_tag(raw) is not None) is kept
    assert engine_normalizes([raw]) == ([raw.strip().lower()] if kept else [])


@pytest.mark.parametrize(
    "raw",
    [
        "İSTANBUL",
        "ΟΔΟΣ",
        "ΟΔΟΣ ΟΔΟΣ",
        "Σ",
        "ΑΣ.",
        "ΑΣ'Α",
        "ΣΑ",
        "STRASSE",
        "Straße",
        "ẞ",
        "\u212aELVIN",
        "ǅ",
        "ﬁ",
        "ǰ",
        "ΐ",
        "Ⅻ",
        "Ⓐ",
        "𐐀",
        "ᾈ",
    ],
)
def test_rule2_full_unicode_case_mapping_like_python(raw: str) -> None:
    assert engine_normalizes([raw]) == [raw.lower()]


def test_rule2_final_sigma_after_a_recent_case_ignorable_mark_matches_python() -> None:
    """U+10EFD (Unicode 15, Mn) is case-ignorable in newer Unicode but unassigned in Python 3.11's.

    Python: 'A\\U00010efdΣ'.lower() == 'a\\U00010efdσ' (Σ is not preceded by a cased letter).
    """
    raw = "A\U00010efdΣ"
    assert engine_normalizes([raw]) == [raw.lower()] == ["a\U00010efdσ"]


def test_rule2_final_sigma_before_a_recent_cased_letter_matches_python() -> None:
    """U+1DF25 (Unicode 15, Ll) is cased in newer Unicode but unassigned in Python 3.11's.

    Python: 'AΣ\\U0001df25'.lower() == 'aς\\U0001df25' (Σ is word-final for Python).
    """
    raw = "AΣ\U0001df25"
    assert engine_normalizes([raw]) == [raw.lower()] == ["aς\U0001df25"]


# --------------------------------------------------------------------------- sweeps and properties


def _all_code_points() -> list[str]:
    return [chr(code) for code in range(sys.maxunicode + 1) if not 0xD800 <= code <= 0xDFFF]


def _case_relevant_code_points() -> list[str]:
    """Planes 0, 1 and the start of 14: the rest holds only CJK ideographs (planes 2-3),
    nothing (4-13) or private use (15-16), none of them cased, case-ignorable or whitespace;
    `test_rule2_every_code_point_lowercases_like_python` still covers them one by one."""
    codes = [*range(0x20000), *range(0xE0000, 0xE1000)]
    return [chr(code) for code in codes if not 0xD800 <= code <= 0xDFFF]


def _disagreements(pattern: Callable[[str], str], code_points: list[str]) -> list[tuple[str, str]]:
    """(raw tag, Python's normalisation) for the first tags whose engine normalisation differs."""
    raw = [pattern(c) for c in code_points]
    (actual,), _ = engine_tag_lists(raw, with_interests=False)
    if actual == normalize_tags(raw):
        return []
    produced = set(actual)
    wrong = []
    for tag in raw:
        expected = normalize_tag(tag)
        if expected is not None and expected not in produced:
            wrong.append((tag.encode("unicode_escape").decode(), expected.encode("unicode_escape").decode()))
    return wrong[:5] or [("<order or duplicates differ>", "")]


@pytest.mark.slow
def test_rule2_every_code_point_lowercases_like_python() -> None:
    assert _disagreements(lambda c: c, _all_code_points()) == []


@pytest.mark.parametrize(
    "pattern",
    [lambda c: f" {c}\u3000", lambda c: f"{c}x", lambda c: f"x{c}"],
    ids=["padded", "before-letter", "after-letter"],
)
def test_rule2_every_code_point_in_context_normalises_like_python(pattern: Callable[[str], str]) -> None:
    assert _disagreements(pattern, _case_relevant_code_points()) == []


SIGMA_CONTEXTS: dict[str, Callable[[str], str]] = {
    "AcΣ": lambda c: f"A{c}Σ",
    "cΣ": lambda c: f"{c}Σ",
    "AΣc": lambda c: f"AΣ{c}",
    "AΣcA": lambda c: f"AΣ{c}A",
}


def test_rule2_final_sigma_next_to_every_code_point_normalises_like_python() -> None:
    """Σ lower-cases to ς or σ depending on its neighbours: try every code point as a neighbour."""
    code_points = _case_relevant_code_points()
    found = {name: _disagreements(pattern, code_points) for name, pattern in SIGMA_CONTEXTS.items()}
    assert {name: wrong for name, wrong in found.items() if wrong} == {}


@pytest.mark.slow
@property_settings(max_examples=150)
@given(st.lists(st.none() | st.lists(st.none() | ANY_TEXT | LONG_TEXT, max_size=6), min_size=1, max_size=6))
def test_rule2_property_engine_normalises_like_python(raw_lists: list[list[str | None] | None]) -> None:
    lists, interests = engine_tag_lists(*raw_lists)
    assert lists == [normalize_tags(raw) for raw in raw_lists]
    assert interests == {tag for raw in raw_lists for tag in normalize_tags(raw)}


def test_rule2_variants_in_different_checkins_count_toward_one_interest() -> None:
    rows = [checkin(n, tags=["X", "y"], created_at=AS_OF - timedelta(minutes=n)) for n in range(3)]
    rows.append(checkin(9, user=U1, tags=[" Y", "x "]))
    result = compute(rows, params=MontageParams(min_interest_occurrence=4))
    assert set(result.montages.filter(kind=INTEREST)["interest"]) == {"x", "y"}
