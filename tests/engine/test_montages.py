"""compute_montages against the montage contract: one example per rule, then properties vs the reference."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from typing import Any

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from montage_vec.engine import (
    CHECKIN_SCHEMA,
    ITEM_SCHEMA,
    MONTAGE_SCHEMA,
    OPTIONAL_CHECKIN_SCHEMA,
    MontageParams,
    MontageSet,
    compute_montages,
)
from montage_vec.engine.duplicates import WINNER_ORDER
from tests.engine.builders import AS_OF, CUT, LOOKBACK, U1, U2, U3, US, checkin, cid, compute, item_ids, run
from tests.engine.reference import (
    GENERAL,
    INTEREST,
    assert_same_outcome,
    from_engine,
    reference_montages,
)
from tests.engine.strategies import property_settings, scenarios, to_arrow, to_frame

PROPERTY = property_settings(max_examples=100)


def tagged(n: int, tag: str = "coffee", **kwargs: Any) -> dict[str, Any]:
    return checkin(n, tags=[tag], **kwargs)


# =========================================================================== rule 1: eligibility


def test_rule1_deleted_checkin_is_neither_item_nor_counted() -> None:
    rows = [tagged(1), tagged(2), tagged(3, deleted_at=AS_OF - timedelta(days=1))]
    out = run(rows)
    assert item_ids(out, U1, GENERAL) == [cid(1), cid(2)]
    assert (U1, INTEREST, "coffee") not in out.montages


@pytest.mark.parametrize("privacy", ["private", None, " Private", "unknown", "pub lic", "", "PUBL\u0130C"])
def test_rule1_only_public_and_friends_privacy_is_eligible(privacy: str | None) -> None:
    rows = [tagged(1, privacy="public"), tagged(2, privacy="friends"), tagged(3, privacy=privacy)]
    out = run(rows)
    assert item_ids(out, U1, GENERAL) == [cid(1), cid(2)]
    assert (U1, INTEREST, "coffee") not in out.montages


def test_rule1_privacy_is_compared_after_strip_and_lower() -> None:
    """Stored levels are re-cased and padded, with whitespace Unicode does not call White_Space;
    they count as the configured ones, and items show them normalised (rule 6)."""
    variants = ["Public", " public", "FRIENDS\u3000", "\x1cpublic\t"]
    rows = [tagged(n, privacy=privacy) for n, privacy in enumerate(variants, start=1)]
    out = run(rows)
    assert item_ids(out, U1, INTEREST, "coffee") == [cid(1), cid(2), cid(3), cid(4)]
    shown = [item[4]["privacy"] for item in out.items[(U1, GENERAL, "")]]
    assert shown == ["public", "public", "friends", "public"]


def test_rule1_configured_privacy_levels_are_normalised_too() -> None:
    params = MontageParams(privacy_included=frozenset({" Friends "}))
    rows = [tagged(1, privacy="friends"), tagged(2, privacy="FRIENDS"), tagged(3, privacy="public")]
    assert item_ids(run(rows, params=params), U1, GENERAL) == [cid(1), cid(2)]


def test_rule1_ineligible_checkins_never_appear_in_interest_items() -> None:
    rows = [tagged(n) for n in (1, 2, 3)] + [
        tagged(4, privacy="private"),
        tagged(5, deleted_at=AS_OF),
        tagged(6, privacy=None),
    ]
    out = run(rows)
    assert item_ids(out, U1, INTEREST, "coffee") == [cid(1), cid(2), cid(3)]


def test_rule1_user_with_only_ineligible_checkins_gets_no_montages() -> None:
    rows = [checkin(1, user=U1), checkin(2, user=U2, privacy="private"), checkin(3, user=U2, deleted_at=AS_OF)]
    out = run(rows)
    assert set(out.montages) == {(U1, GENERAL, "")}
    assert out.rejected == set()


# =========================================================================== rule 2: tags (see test_tags.py)


def test_rule2_case_and_whitespace_variants_form_one_interest() -> None:
    rows = [tagged(1, " Coffee "), tagged(2, "COFFEE"), tagged(3, "\u3000coffee\x1c")]
    out = run(rows)
    assert set(out.montages) == {(U1, GENERAL, ""), (U1, INTEREST, "coffee")}
    assert item_ids(out, U1, INTEREST, "coffee") == [cid(1), cid(2), cid(3)]


def test_rule2_duplicate_tags_in_one_checkin_count_once() -> None:
    rows = [checkin(1, tags=["coffee", "Coffee", " COFFEE"]), tagged(2)]
    out = run(rows)
    assert (U1, INTEREST, "coffee") not in out.montages


def test_rule2_interest_is_named_by_full_unicode_lowercase() -> None:
    rows = [tagged(1, "İSTANBUL"), tagged(2, "İstanbul"), tagged(3, "i̇stanbul")]
    out = run(rows)
    assert (U1, INTEREST, "i\u0307stanbul") in out.montages
    assert "istanbul" not in {key[2] for key in out.montages}


# =========================================================================== rule 3: item order


def test_rule3_items_are_newest_first() -> None:
    rows = [tagged(1, days_ago=3), tagged(2, days_ago=1), tagged(3, days_ago=2)]
    out = run(rows)
    assert item_ids(out, U1, GENERAL) == [cid(2), cid(3), cid(1)]
    assert item_ids(out, U1, INTEREST, "coffee") == [cid(2), cid(3), cid(1)]


def test_rule3_created_at_ties_are_broken_by_id_descending() -> None:
    same = AS_OF - timedelta(days=1)
    ids = [
        "0fffffff-ffff-4fff-bfff-ffffffffffff",
        "f0000000-0000-4000-8000-000000000000",
        "f0000000-0000-4000-8000-00000000000a",
        "f0000000-0000-4000-8000-000000000009",
    ]
    rows = [tagged(n, created_at=same, checkin_id=ident) for n, ident in enumerate(ids)]
    rows.append(tagged(99, created_at=same + US, checkin_id="00000000-0000-4000-8000-000000000000"))
    out = run(rows)
    expected = [
        "00000000-0000-4000-8000-000000000000",  # newest, despite the smallest id
        "f0000000-0000-4000-8000-00000000000a",
        "f0000000-0000-4000-8000-000000000009",
        "f0000000-0000-4000-8000-000000000000",
        "0fffffff-ffff-4fff-bfff-ffffffffffff",
    ]
    assert item_ids(out, U1, GENERAL) == expected
    assert item_ids(out, U1, INTEREST, "coffee") == expected
    assert [item[0] for item in out.items[(U1, GENERAL, "")]] == [0, 1, 2, 3, 4]


# =========================================================================== rule 4: general montage


def test_rule4_general_montage_holds_the_first_max_items_checkins() -> None:
    rows = [checkin(n) for n in range(25)]
    random.Random(4).shuffle(rows)
    out = run(rows)
    items = out.items[(U1, GENERAL, "")]
    assert [item[0] for item in items] == list(range(20))
    assert [item[1] for item in items] == [cid(n) for n in range(20)]
    assert out.montages[(U1, GENERAL, "")] == (20, None)


def test_rule4_every_user_with_an_eligible_checkin_has_exactly_one_general_montage() -> None:
    future = AS_OF + timedelta(days=400)
    ancient = AS_OF - timedelta(days=4000)
    rows = [
        checkin(1, user=U1, created_at=future),
        checkin(2, user=U1, created_at=ancient),
        checkin(3, user=U2, created_at=ancient, privacy="friends"),
        checkin(4, user=U3, privacy="private"),
    ]
    out = run(rows)
    generals = {key: value for key, value in out.montages.items() if key[1] == GENERAL}
    assert generals == {(U1, GENERAL, ""): (2, None), (U2, GENERAL, ""): (1, None)}
    assert item_ids(out, U1, GENERAL) == [cid(1), cid(2)]


def test_rule4_max_items_parameter_caps_the_general_montage() -> None:
    out = run([checkin(n) for n in range(5)], params=MontageParams(max_items=2))
    assert item_ids(out, U1, GENERAL) == [cid(0), cid(1)]


# =========================================================================== rule 5: interest montages


def test_rule5_checkin_exactly_on_cut_does_not_count() -> None:
    rows = [tagged(1, days_ago=1), tagged(2, days_ago=2), tagged(3, created_at=CUT)]
    out = run(rows)
    assert (U1, INTEREST, "coffee") not in out.montages


def test_rule5_checkin_one_microsecond_inside_cut_counts() -> None:
    rows = [tagged(1, days_ago=1), tagged(2, days_ago=2), tagged(3, created_at=CUT + US)]
    out = run(rows)
    assert out.montages[(U1, INTEREST, "coffee")] == (3, CUT + US + LOOKBACK)


def test_rule5_checkin_one_microsecond_outside_cut_does_not_count() -> None:
    rows = [tagged(1, days_ago=1), tagged(2, days_ago=2), tagged(3, created_at=CUT - US)]
    assert (U1, INTEREST, "coffee") not in run(rows).montages


def test_rule5_checkins_after_as_of_count() -> None:
    rows = [tagged(1, created_at=AS_OF + timedelta(days=5)), tagged(2, created_at=AS_OF + US), tagged(3)]
    out = run(rows)
    assert item_ids(out, U1, INTEREST, "coffee") == [cid(1), cid(2), cid(3)]
    # the third newest in the window is check-in 3, three hours before AS_OF
    assert out.montages[(U1, INTEREST, "coffee")] == (3, AS_OF - timedelta(hours=3) + LOOKBACK)


def test_rule5_items_include_tagged_checkins_outside_the_window() -> None:
    rows = [
        tagged(1, days_ago=1),
        tagged(2, days_ago=2),
        tagged(3, days_ago=3),
        tagged(4, created_at=CUT),
        tagged(5, days_ago=400),
        checkin(6, days_ago=1.5, tags=["tea"]),
    ]
    out = run(rows)
    assert item_ids(out, U1, INTEREST, "coffee") == [cid(1), cid(2), cid(3), cid(4), cid(5)]
    assert out.montages[(U1, INTEREST, "coffee")] == (5, AS_OF - timedelta(days=3) + LOOKBACK)


def test_rule5_interest_items_are_capped_at_max_items() -> None:
    rows = [tagged(n, days_ago=n / 2) for n in range(1, 26)]
    out = run(rows)
    assert item_ids(out, U1, INTEREST, "coffee") == [cid(n) for n in range(1, 21)]
    assert out.montages[(U1, INTEREST, "coffee")][0] == 20


def test_rule5_valid_until_is_the_min_occurrence_th_newest_in_window_plus_lookback() -> None:
    rows = [
        tagged(1, created_at=AS_OF + timedelta(days=1)),
        tagged(2, days_ago=1),
        tagged(3, days_ago=2),
        tagged(4, days_ago=5),
        tagged(5, days_ago=60),
    ]
    out = run(rows)
    assert out.montages[(U1, INTEREST, "coffee")] == (5, AS_OF - timedelta(days=2) + LOOKBACK)


def test_rule5_valid_until_with_created_at_ties() -> None:
    same = AS_OF - timedelta(days=7)
    rows = [tagged(n, created_at=same) for n in range(4)]
    out = run(rows)
    assert out.montages[(U1, INTEREST, "coffee")] == (4, same + LOOKBACK)


def test_rule5_below_min_occurrence_there_is_no_interest_montage() -> None:
    rows = [tagged(1), tagged(2), checkin(3, user=U2, tags=["coffee"])]
    out = run(rows)
    assert {key[1] for key in out.montages} == {GENERAL}


def test_rule5_occurrences_are_counted_per_user() -> None:
    rows = [tagged(1), tagged(2), tagged(3, user=U2), tagged(4, user=U2), tagged(5, user=U2)]
    out = run(rows)
    assert (U1, INTEREST, "coffee") not in out.montages
    assert item_ids(out, U2, INTEREST, "coffee") == [cid(3), cid(4), cid(5)]


def test_rule5_zero_lookback_counts_only_checkins_after_as_of() -> None:
    params = MontageParams(min_interest_occurrence=1, interest_lookback_days=0)
    rows = [tagged(1, "now", created_at=AS_OF), tagged(2, "later", created_at=AS_OF + US)]
    out = run(rows, params=params)
    assert (U1, INTEREST, "now") not in out.montages
    assert out.montages[(U1, INTEREST, "later")] == (1, AS_OF + US)


def test_rule5_min_occurrence_and_lookback_parameters() -> None:
    params = MontageParams(max_items=2, min_interest_occurrence=2, interest_lookback_days=3)
    rows = [tagged(1, days_ago=1), tagged(2, days_ago=2.9), tagged(3, days_ago=3), tagged(4, days_ago=4)]
    out = run(rows, params=params)
    assert out.montages[(U1, INTEREST, "coffee")] == (2, AS_OF - timedelta(days=2.9) + timedelta(days=3))
    assert item_ids(out, U1, INTEREST, "coffee") == [cid(1), cid(2)]


def test_rule5_one_checkin_feeds_several_interests() -> None:
    rows = [checkin(n, tags=["a", "b"]) for n in range(3)] + [checkin(3, tags=["b"])]
    out = run(rows)
    assert item_ids(out, U1, INTEREST, "a") == [cid(0), cid(1), cid(2)]
    assert item_ids(out, U1, INTEREST, "b") == [cid(0), cid(1), cid(2), cid(3)]


# =========================================================================== rule 6: items (see test_widgets.py)


def test_rule6_item_carries_checkin_id_time_widget_and_metadata() -> None:
    created = AS_OF - timedelta(days=2, microseconds=7)
    rows = [checkin(1, created_at=created, privacy="friends", text="hi", location="Oslo", tags=[" A ", "b"])]
    out = run(rows, params=MontageParams(min_interest_occurrence=1))
    expected_item = (
        0,
        cid(1),
        created,
        "text",
        {"text": "hi", "location": "Oslo", "tags": ["a", "b"], "privacy": "friends"},
    )
    assert out.items[(U1, GENERAL, "")] == [expected_item]
    assert out.items[(U1, INTEREST, "a")] == [expected_item]
    assert out.items[(U1, INTEREST, "b")] == [expected_item]


# =========================================================================== rule 7: item_count


def test_rule7_item_count_is_the_number_of_items() -> None:
    rows = [tagged(n, days_ago=n) for n in range(1, 8)] + [checkin(9, tags=None)]
    result = compute(rows, params=MontageParams(max_items=5))
    counted = result.items.group_by("user_id", "kind", "interest").agg(n=pl.len())
    joined = result.montages.join(counted, on=["user_id", "kind", "interest"], how="full", coalesce=True)
    assert joined.height == 2
    assert (joined["item_count"] == joined["n"]).all()
    assert sorted(joined["item_count"].to_list()) == [5, 5]


# =========================================================================== rule 8: one row per check-in id


def test_rule8_a_duplicated_checkin_is_shown_and_counted_once_the_latest_copy_wins() -> None:
    old, new = AS_OF - timedelta(days=2), AS_OF - timedelta(days=1)
    rows = [
        tagged(1, text="old", updated_at=old),
        tagged(1, text="new", updated_at=new),
        tagged(1, text="no stamp", updated_at=None),  # NULL loses to any updated_at
        tagged(2),
    ]
    out = run(rows)
    assert item_ids(out, U1, GENERAL) == [cid(1), cid(2)]
    assert out.items[(U1, GENERAL, "")][0][4]["text"] == "new"
    assert (U1, INTEREST, "coffee") not in out.montages  # two check-ins, not four


def test_rule8_without_updated_at_the_winner_does_not_depend_on_row_order() -> None:
    """No updated_at column at all (a minimal source): a deleted copy wins, then the smallest values."""
    live_copies = [tagged(1, text="b"), tagged(1, text="a"), tagged(1, text=None)]
    deleted_copy = tagged(2, deleted_at=AS_OF - timedelta(days=1))
    rows = [*live_copies, tagged(2), deleted_copy, tagged(3)]
    outcomes = []
    for seed in range(6):
        shuffled = list(rows)
        random.Random(seed).shuffle(shuffled)
        outcomes.append(from_engine(compute_montages(to_frame(shuffled, updated_at=False), AS_OF)))
    assert all(outcome == outcomes[0] for outcome in outcomes)
    assert item_ids(outcomes[0], U1, GENERAL) == [cid(1), cid(3)]
    assert outcomes[0].items[(U1, GENERAL, "")][0][4]["text"] == "a"


def test_rule8_a_copy_under_another_user_belongs_to_the_winner() -> None:
    """A check-in moved between users shows up under both; it is the latest copy's user's only."""
    moved = [
        tagged(1, user=U1, updated_at=AS_OF - timedelta(days=3)),
        tagged(1, user=U2, updated_at=AS_OF - timedelta(days=1)),
    ]
    out = run([*moved, tagged(2, user=U1), tagged(3, user=U2)])
    assert item_ids(out, U1, GENERAL) == [cid(2)]
    assert item_ids(out, U2, GENERAL) == [cid(1), cid(3)]


def test_rule8_tie_break_covers_every_engine_column() -> None:
    """A column left out of the order would let row order pick among copies differing only there."""
    ordered = [name for name, _ in WINNER_ORDER]
    assert sorted(ordered) == sorted(set(CHECKIN_SCHEMA) - {"id"} | set(OPTIONAL_CHECKIN_SCHEMA))


def test_rule8_a_losing_copy_without_created_at_does_not_reject_its_user() -> None:
    broken = tagged(1, updated_at=AS_OF - timedelta(days=2))
    broken["created_at"] = None
    out = run([broken, tagged(1, updated_at=AS_OF - timedelta(days=1)), tagged(2)])
    assert out.rejected == set()
    assert item_ids(out, U1, GENERAL) == [cid(1), cid(2)]


# =========================================================================== input handling


def test_output_frames_follow_the_output_schemas() -> None:
    result = compute([tagged(n) for n in range(3)])
    assert dict(result.montages.schema) == MONTAGE_SCHEMA
    assert dict(result.items.schema) == ITEM_SCHEMA
    assert result.rejected.columns == ["user_id", "error"]


def test_empty_input_gives_empty_result() -> None:
    result = compute([])
    assert result.montages.is_empty()
    assert result.items.is_empty()
    assert result.rejected.is_empty()
    assert dict(result.montages.schema) == MONTAGE_SCHEMA
    assert dict(result.items.schema) == ITEM_SCHEMA


def test_updated_at_is_optional_and_conformed_like_created_at() -> None:
    stamps = [AS_OF - timedelta(days=1), AS_OF - timedelta(days=2)]
    rows = [tagged(1, text="kept", updated_at=stamps[0]), tagged(1, text="lost", updated_at=stamps[1])]
    naive = to_frame(rows).with_columns(pl.col("updated_at").dt.replace_time_zone(None))
    assert item_ids(from_engine(compute_montages(naive, AS_OF)), U1, GENERAL) == [cid(1)]
    assert from_engine(compute_montages(naive, AS_OF)) == run(rows)


def test_untyped_all_null_columns_are_accepted() -> None:
    rows = [tagged(n) for n in range(3)]
    for row in rows:
        for name in ("deleted_at", "text_content", "media_url", "media_type", "thumbnail_url", "location_name"):
            row[name] = None
    inferred = pl.DataFrame(rows)  # all-NULL columns get the Null dtype
    assert inferred.schema["deleted_at"] == pl.Null
    assert from_engine(compute_montages(inferred, AS_OF)) == reference_montages(rows, AS_OF)
    no_tags = pl.DataFrame([{**row, "tags": None} for row in rows])
    assert no_tags.schema["tags"] == pl.Null
    out = from_engine(compute_montages(no_tags, AS_OF))
    assert set(out.montages) == {(U1, GENERAL, "")}


def test_naive_created_at_is_taken_as_utc_and_zoned_is_converted() -> None:
    rows = [tagged(1, created_at=CUT + US), tagged(2, created_at=CUT), tagged(3), tagged(4)]
    expected = run(rows)
    frame = to_frame(rows)
    naive = frame.with_columns(pl.col("created_at", "deleted_at").dt.replace_time_zone(None))
    zoned = frame.with_columns(pl.col("created_at", "deleted_at").dt.convert_time_zone("America/St_Johns"))
    assert from_engine(compute_montages(naive, AS_OF)) == expected
    assert from_engine(compute_montages(zoned, AS_OF)) == expected
    assert expected.montages[(U1, INTEREST, "coffee")][1] == CUT + US + LOOKBACK


def test_as_of_in_another_time_zone_is_the_same_instant() -> None:
    rows = [tagged(1, created_at=CUT + US), tagged(2, created_at=CUT), tagged(3), tagged(4)]
    elsewhere = AS_OF.astimezone(timezone(timedelta(hours=-3, minutes=-30)))
    assert run(rows, as_of=elsewhere) == run(rows)


def test_naive_as_of_is_taken_as_utc() -> None:
    """All times are UTC: a naive as_of means UTC, as naive check-in columns do.

    (At 07e0f01 this raised a raw polars SchemaError from the window comparison.)
    """
    rows = [tagged(1, created_at=CUT + US), tagged(2, created_at=CUT), tagged(3), tagged(4)]
    assert run(rows, as_of=AS_OF.replace(tzinfo=None)) == run(rows)


# =========================================================================== rejected users


@pytest.mark.parametrize("missing", ["id", "created_at"])
def test_user_with_a_row_lacking_id_or_created_at_is_rejected_whole(missing: str) -> None:
    bad = tagged(9, user=U1)
    bad[missing] = None
    rows = [tagged(1, user=U1), tagged(2, user=U1), tagged(3, user=U1), bad, tagged(4, user=U2)]
    result = compute(rows)
    assert result.rejected["user_id"].to_list() == [U1]
    assert result.rejected["error"].null_count() == 0
    out = from_engine(result)
    assert set(out.montages) == {(U2, GENERAL, "")}
    assert all(user != U1 for user, _, _ in out.items)


@pytest.mark.parametrize("ineligible", [{"privacy": "private"}, {"deleted_at": AS_OF}, {"privacy": None}])
def test_rejection_applies_even_when_the_bad_row_is_ineligible(ineligible: dict[str, Any]) -> None:
    bad = tagged(9, **ineligible)
    bad["created_at"] = None
    result = compute([tagged(1), bad])
    assert result.rejected["user_id"].to_list() == [U1]
    assert result.montages.is_empty()
    assert result.items.is_empty()


# =========================================================================== properties


def _check_against_reference(rows: list[dict[str, Any]], as_of: datetime, params: MontageParams) -> MontageSet:
    result = compute_montages(to_frame(rows), as_of, params)
    assert dict(result.montages.schema) == MONTAGE_SCHEMA
    assert dict(result.items.schema) == ITEM_SCHEMA
    assert_same_outcome(from_engine(result), reference_montages(rows, as_of, params))
    return result


@PROPERTY
@given(scenarios())
def test_property_engine_matches_reference(scenario: tuple[list[dict[str, Any]], datetime, MontageParams]) -> None:
    _check_against_reference(*scenario)


@PROPERTY
@given(scenarios(focused=True, max_users=2))
def test_property_engine_matches_reference_on_shared_tags(
    scenario: tuple[list[dict[str, Any]], datetime, MontageParams],
) -> None:
    _check_against_reference(*scenario)


@PROPERTY
@given(scenarios(vary_params=True))
def test_property_engine_matches_reference_with_varied_params(
    scenario: tuple[list[dict[str, Any]], datetime, MontageParams],
) -> None:
    _check_against_reference(*scenario)


@PROPERTY
@given(scenarios(vary_params=True, focused=True, max_users=3))
def test_property_engine_matches_reference_with_varied_params_on_shared_tags(
    scenario: tuple[list[dict[str, Any]], datetime, MontageParams],
) -> None:
    _check_against_reference(*scenario)


@pytest.mark.slow
@PROPERTY
@given(scenarios(vary_params=True, broken=True))
def test_property_engine_matches_reference_with_rejected_users(
    scenario: tuple[list[dict[str, Any]], datetime, MontageParams],
) -> None:
    _check_against_reference(*scenario)


def _assert_same_result(actual: MontageSet, expected: MontageSet) -> None:
    """Same montages and items (order included: the engine sorts them); the same rejected users."""
    assert_frame_equal(actual.montages, expected.montages)
    assert_frame_equal(actual.items, expected.items)
    assert set(actual.rejected["user_id"]) == set(expected.rejected["user_id"])


@pytest.mark.slow
@PROPERTY
@given(scenarios(vary_params=True, broken=True), st.randoms(use_true_random=False))
def test_property_shuffling_input_rows_does_not_change_the_result(
    scenario: tuple[list[dict[str, Any]], datetime, MontageParams], rnd: random.Random
) -> None:
    rows, as_of, params = scenario
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    _assert_same_result(
        compute_montages(to_frame(shuffled), as_of, params), compute_montages(to_frame(rows), as_of, params)
    )


def _share_chunks_of_copies(rows: list[dict[str, Any]], chunk_of: dict[str, int]) -> None:
    """Users holding copies of one check-in id go to one chunk (the smallest of theirs).

    Rule 8 can only choose among the copies the engine is given: a chunk must hold every
    copy of its check-ins, as the job's extraction must.
    """
    users_of: dict[str, set[str]] = {}
    for row in rows:
        if row["id"] is not None:
            users_of.setdefault(row["id"], set()).add(row["user_id"])
    changed = True
    while changed:
        changed = False
        for sharing in users_of.values():
            smallest = min(chunk_of[user] for user in sharing)
            for user in sharing:
                if chunk_of[user] != smallest:
                    chunk_of[user], changed = smallest, True


def _sorted_result(montages: pl.DataFrame, items: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    return (
        montages.sort("user_id", "kind", "interest"),
        items.sort("user_id", "kind", "interest", "position"),
    )


@pytest.mark.slow
@PROPERTY
@given(scenarios(vary_params=True, broken=True), st.data())
def test_property_user_chunks_concatenate_to_the_one_shot_result(
    scenario: tuple[list[dict[str, Any]], datetime, MontageParams], data: st.DataObject
) -> None:
    rows, as_of, params = scenario
    users = sorted({row["user_id"] for row in rows})
    chunk_of = {user: data.draw(st.integers(0, 3), label=f"chunk of {user}") for user in users}
    _share_chunks_of_copies(rows, chunk_of)
    parts = [
        compute_montages(to_frame([row for row in rows if chunk_of[row["user_id"]] == chunk]), as_of, params)
        for chunk in sorted(set(chunk_of.values()))
    ]
    whole = compute_montages(to_frame(rows), as_of, params)
    if not parts:  # no rows at all
        assert whole.montages.is_empty()
        assert whole.items.is_empty()
        return
    montages, items = _sorted_result(
        pl.concat([part.montages for part in parts]), pl.concat([part.items for part in parts])
    )
    assert_frame_equal(montages, whole.montages.sort("user_id", "kind", "interest"))
    assert_frame_equal(items, whole.items.sort("user_id", "kind", "interest", "position"))
    assert {user for part in parts for user in part.rejected["user_id"]} == set(whole.rejected["user_id"])


@pytest.mark.slow
@PROPERTY
@given(scenarios(vary_params=True, broken=True))
def test_property_arrow_table_input_equals_polars_input(
    scenario: tuple[list[dict[str, Any]], datetime, MontageParams],
) -> None:
    rows, as_of, params = scenario
    _assert_same_result(
        compute_montages(to_arrow(rows), as_of, params), compute_montages(to_frame(rows), as_of, params)
    )


@pytest.mark.slow
@PROPERTY
@given(scenarios(vary_params=True), st.randoms(use_true_random=False))
def test_property_extra_columns_are_ignored(
    scenario: tuple[list[dict[str, Any]], datetime, MontageParams], rnd: random.Random
) -> None:
    rows, as_of, params = scenario
    frame = to_frame(rows)
    # Names the engine might use internally, with junk content, in random column positions.
    junk = {
        "row_nr": pl.Series([rnd.randint(-5, 5) for _ in rows], dtype=pl.Int64),
        "rank": pl.Series([rnd.random() for _ in rows], dtype=pl.Float64),
        "tag": pl.Series([rnd.choice(["coffee", None]) for _ in rows], dtype=pl.String),
        "problem": pl.Series([json.dumps(rnd.random()) for _ in rows], dtype=pl.String),
        "normalized_tags": pl.Series([["x"] for _ in rows], dtype=pl.List(pl.String)),
        "checkin_id": pl.Series(["nope" for _ in rows], dtype=pl.String),
    }
    widened = frame.with_columns(**junk)
    columns = widened.columns
    rnd.shuffle(columns)
    widened = widened.select(columns)
    _assert_same_result(compute_montages(widened, as_of, params), compute_montages(frame, as_of, params))
    _assert_same_result(compute_montages(widened.to_arrow(), as_of, params), compute_montages(frame, as_of, params))
