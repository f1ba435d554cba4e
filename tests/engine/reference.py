"""A deliberately naive reference implementation of the montage contract, for the engine tests.

Written from the contract text alone (not from the engine): plain Python, one user at a
time, `sorted()` for ordering and `str.strip().lower()` for tags. It is slow and obvious on
purpose. `from_engine` brings a `MontageSet` into the same plain shape, so a test can compare
the two with `==` and get a readable diff from `assert_same_outcome`.

Interpretation notes (where the contract text leaves a choice):

* "media_url is set" / "if text_content" / "if location_name" mean IS NOT NULL, like the
  metadata rule ("keys whose value is NULL are left out"); an empty string counts as set.
* rule 8 leaves one row per id, so rule 3 is a total order. Rows without an id are not
  copies of each other: each one rejects its user.
* `updated_at` is optional: a row without the key counts as NULL.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

# The contract's defaults, spelled out here rather than imported from the engine.
MAX_ITEMS = 20
MIN_INTEREST_OCCURRENCE = 3
INTEREST_LOOKBACK_DAYS = 30
PRIVACY_INCLUDED = frozenset({"public", "friends"})
MAX_TAG_CHARS = 100

GENERAL = "general"
INTEREST = "interest"

# (user_id, kind, interest)
MontageKey = tuple[str, str, str]
# (position, checkin_id, checkin_created_at, widget_type, widget_metadata as a dict)
Item = tuple[int, str, datetime, str, dict[str, Any]]


@dataclass(frozen=True)
class RefParams:
    """The four contract parameters; any object with these attributes (e.g. MontageParams) works."""

    max_items: int = MAX_ITEMS
    min_interest_occurrence: int = MIN_INTEREST_OCCURRENCE
    interest_lookback_days: int = INTEREST_LOOKBACK_DAYS
    privacy_included: frozenset[str] = PRIVACY_INCLUDED


@dataclass
class Outcome:
    """Montages, items and rejected users in plain Python form.

    montages: key -> (item_count, valid_until)
    items:    key -> list of items in position order
    rejected: user ids
    """

    montages: dict[MontageKey, tuple[int, datetime | None]] = field(default_factory=dict)
    items: dict[MontageKey, list[Item]] = field(default_factory=dict)
    rejected: set[str] = field(default_factory=set)


# --------------------------------------------------------------------------- rule 8

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(instant: datetime) -> int:
    return (instant - EPOCH) // timedelta(microseconds=1)


def _latest(instant: datetime | None) -> tuple[int, int]:
    """Sorts the latest instant first and NULL last."""
    return (1, 0) if instant is None else (0, -_micros(instant))


def _smallest(value: Any) -> tuple[int, Any]:
    """Sorts the smallest value first and NULL last; `value` is a str or a datetime."""
    if value is None:
        return (1, "")
    return (0, _micros(value) if isinstance(value, datetime) else value)


def _smallest_tags(tags: list[str | None] | None) -> tuple[int, list[tuple[int, str]]]:
    """Lists compare element by element, a prefix first; a NULL element before any text; a NULL list last."""
    if tags is None:
        return (1, [])
    return (0, [(0, "") if tag is None else (1, tag) for tag in tags])


def winner_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """Rule 8: the copy with the smallest key wins."""
    scalars = ("user_id", "created_at", "privacy", "text_content", "media_url", "media_type", "thumbnail_url",
               "location_name")  # fmt: skip
    return (
        _latest(row.get("updated_at")),
        _latest(row["deleted_at"]),
        *(_smallest(row[name]) for name in scalars),
        _smallest_tags(row["tags"]),
    )


def one_row_per_id(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Rule 8: of the rows sharing an id, the winner only (whatever its user); rows without id all stay."""
    winners: dict[str, Mapping[str, Any]] = {}
    kept: list[Mapping[str, Any]] = []
    for row in rows:
        if row["id"] is None:
            kept.append(row)
        elif row["id"] not in winners or winner_key(row) < winner_key(winners[row["id"]]):
            winners[row["id"]] = row
    return kept + list(winners.values())


# --------------------------------------------------------------------------- rule 2


def normalize_tag(tag: str) -> str | None:
    """One tag per rule 2, or None when it is dropped."""
    normalized = tag.strip().lower()
    if normalized == "" or len(normalized) > MAX_TAG_CHARS:
        return None
    return normalized


def normalize_tags(tags: Iterable[str | None] | None) -> list[str]:
    """The normalised tag list of one check-in: NULLs, empties and over-long tags out, first occurrence kept."""
    result: list[str] = []
    seen: set[str] = set()
    if tags is None:
        return result
    for tag in tags:
        if tag is None:
            continue
        normalized = normalize_tag(tag)
        if normalized is not None and normalized not in seen:
            seen.add(normalized)
            result.append(normalized)
    return result


# --------------------------------------------------------------------------- rule 6


def widget_type(row: Mapping[str, Any]) -> str:
    if row["media_url"] is not None:
        return "media"
    if row["text_content"] is not None:
        return "text"
    if row["location_name"] is not None:
        return "location"
    return "activity"


def widget_metadata(row: Mapping[str, Any]) -> dict[str, Any]:
    candidates = {
        "media_url": row["media_url"],
        "media_type": row["media_type"],
        "thumbnail_url": row["thumbnail_url"],
        "text": row["text_content"],
        "location": row["location_name"],
        "tags": normalize_tags(row["tags"]),
        "privacy": normalize_privacy(row["privacy"]),
    }
    return {key: value for key, value in candidates.items() if value is not None}


def _item(position: int, row: Mapping[str, Any]) -> Item:
    return (position, row["id"], row["created_at"], widget_type(row), widget_metadata(row))


# --------------------------------------------------------------------------- rules 1-5, 7


def normalize_privacy(privacy: str | None) -> str | None:
    return None if privacy is None else privacy.strip().lower()


def is_eligible(row: Mapping[str, Any], params: Any) -> bool:
    privacy = normalize_privacy(row["privacy"])
    included = {level.strip().lower() for level in params.privacy_included}
    return row["deleted_at"] is None and privacy is not None and privacy in included


def reference_montages(rows: Iterable[Mapping[str, Any]], as_of: datetime, params: Any | None = None) -> Outcome:
    """All montages of every user in `rows` (dicts with the check-in columns) at `as_of`."""
    params = params if params is not None else RefParams()
    lookback = timedelta(days=params.interest_lookback_days)
    cut = as_of - lookback
    outcome = Outcome()

    rows_by_user: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in one_row_per_id(rows):
        rows_by_user[row["user_id"]].append(row)

    for user_id, user_rows in rows_by_user.items():
        if any(row["id"] is None or row["created_at"] is None for row in user_rows):
            outcome.rejected.add(user_id)
            continue

        eligible = [row for row in user_rows if is_eligible(row, params)]
        if not eligible:
            continue
        # Rule 3: created_at DESC, then id DESC.
        eligible = sorted(eligible, key=lambda row: (row["created_at"], row["id"]), reverse=True)

        # Rule 4.
        general_key = (user_id, GENERAL, "")
        general_items = [_item(pos, row) for pos, row in enumerate(eligible[: params.max_items])]
        outcome.items[general_key] = general_items
        outcome.montages[general_key] = (len(general_items), None)

        # Rule 5.
        all_tags: list[str] = []
        for row in eligible:
            for tag in normalize_tags(row["tags"]):
                if tag not in all_tags:
                    all_tags.append(tag)
        for tag in all_tags:
            carrying = [row for row in eligible if tag in normalize_tags(row["tags"])]
            in_window = [row for row in carrying if row["created_at"] > cut]
            if len(in_window) < params.min_interest_occurrence:
                continue
            newest_first = sorted((row["created_at"] for row in in_window), reverse=True)
            valid_until = newest_first[params.min_interest_occurrence - 1] + lookback
            key = (user_id, INTEREST, tag)
            interest_items = [_item(pos, row) for pos, row in enumerate(carrying[: params.max_items])]
            outcome.items[key] = interest_items
            outcome.montages[key] = (len(interest_items), valid_until)

    return outcome


# --------------------------------------------------------------------------- explain


def reference_tag_stats(
    rows: list[dict[str, Any]], user: str, as_of: datetime, params: Any
) -> dict[str, dict[str, Any]]:
    """Rule 5 per normalised tag of `user`'s usable rows (`explain`'s tag table), counted naively."""
    cut = as_of - timedelta(days=params.interest_lookback_days)
    winners = one_row_per_id(rows)
    usable = [
        row
        for row in rows
        if row["user_id"] == user
        and any(row is winner for winner in winners)
        and row["id"] is not None
        and row["created_at"] is not None
    ]
    stats: dict[str, dict[str, Any]] = {}
    for row in usable:
        for tag in normalize_tags(row["tags"]):
            entry = stats.setdefault(tag, {"in_window": [], "eligible": 0, "ineligible": 0})
            if is_eligible(row, params):
                entry["eligible"] += 1
                if row["created_at"] > cut:
                    entry["in_window"].append(row["created_at"])
            else:
                entry["ineligible"] += 1
    expected = {}
    needed = params.min_interest_occurrence
    for tag, entry in stats.items():
        newest = sorted(entry["in_window"], reverse=True)
        qualifies = len(newest) >= needed
        expected[tag] = {
            "occurrences_in_window": len(newest),
            "eligible_occurrences": entry["eligible"],
            "ineligible_occurrences": entry["ineligible"],
            "qualifies": qualifies,
            "kth_newest_in_window": newest[needed - 1] if qualifies else None,
            "valid_until": newest[needed - 1] + timedelta(days=params.interest_lookback_days) if qualifies else None,
            "more_needed": max(0, needed - len(newest)),
        }
    return expected


def reference_checkin_verdicts(rows: list[dict[str, Any]], user: str, params: Any) -> Counter[tuple[Any, ...]]:
    """(id, eligible, normalised tags) of every row of `user` (`explain`'s check-in table), as a multiset."""
    winners = one_row_per_id(rows)
    return Counter(
        (
            row["id"],
            any(row is winner for winner in winners)
            and row["id"] is not None
            and row["created_at"] is not None
            and is_eligible(row, params),
            tuple(normalize_tags(row["tags"])),
        )
        for row in rows
        if row["user_id"] == user
    )


# --------------------------------------------------------------------------- engine -> plain


def from_engine(result: Any) -> Outcome:
    """A MontageSet in the reference's plain form; checks that every widget_metadata is a JSON object."""
    outcome = Outcome()
    for row in result.montages.iter_rows(named=True):
        key = (row["user_id"], row["kind"], row["interest"])
        assert key not in outcome.montages, f"duplicate montage {key}"
        outcome.montages[key] = (row["item_count"], row["valid_until"])

    for row in result.items.iter_rows(named=True):
        key = (row["user_id"], row["kind"], row["interest"])
        raw = row["widget_metadata"]
        assert isinstance(raw, str), f"widget_metadata is not text: {raw!r}"
        try:
            metadata = json.loads(raw)
        except json.JSONDecodeError as exc:  # pragma: no cover - only on an engine bug
            raise AssertionError(f"widget_metadata is not valid JSON: {raw!r}") from exc
        assert isinstance(metadata, dict), f"widget_metadata is not a JSON object: {raw!r}"
        item = (row["position"], row["checkin_id"], row["checkin_created_at"], row["widget_type"], metadata)
        outcome.items.setdefault(key, []).append(item)
    for items in outcome.items.values():
        items.sort(key=lambda item: item[0])

    rejected_ids = result.rejected["user_id"].to_list()
    assert len(rejected_ids) == len(set(rejected_ids)), f"user rejected twice: {rejected_ids}"
    assert result.rejected["error"].null_count() == 0, "rejected user without an error"
    outcome.rejected = set(rejected_ids)
    return outcome


def assert_same_outcome(actual: Outcome, expected: Outcome) -> None:
    """Compare piecewise so that a failure points at the first differing montage."""
    assert actual.rejected == expected.rejected, "rejected users differ"
    missing = sorted(set(expected.montages) - set(actual.montages))
    extra = sorted(set(actual.montages) - set(expected.montages))
    assert not missing and not extra, f"montages missing from engine: {missing}; unexpected: {extra}"
    assert set(actual.items) == set(expected.items), (
        f"items reference montages {sorted(set(actual.items) ^ set(expected.items))} inconsistently"
    )
    for key in sorted(expected.montages):
        assert actual.items[key] == expected.items[key], f"items of montage {key} differ"
        assert actual.montages[key] == expected.montages[key], f"montage {key}: (item_count, valid_until) differ"
