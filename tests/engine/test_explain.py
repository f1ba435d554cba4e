"""explain_user against the contract: examples per reason, then every field against the naive reference."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from hypothesis import given

from montage_vec.engine import MontageParams
from montage_vec.engine.documents import explanation_document
from montage_vec.engine.explain import explain_user
from tests.engine.builders import AS_OF, CUT, LOOKBACK, U1, U2, US, checkin, cid, compute
from tests.engine.reference import (
    assert_same_outcome,
    from_engine,
    reference_checkin_verdicts,
    reference_montages,
    reference_tag_stats,
)
from tests.engine.strategies import property_settings, scenarios, to_frame

PROPERTY = property_settings(max_examples=60)


def _reasons(rows: list[dict[str, Any]], user: str = U1) -> dict[str, str | None]:
    explanation = explain_user(to_frame(rows), user, AS_OF)
    return dict(zip(explanation.checkins["id"].to_list(), explanation.checkins["reason"].to_list(), strict=True))


def test_each_ineligible_checkin_says_why() -> None:
    rows = [
        checkin(1),
        checkin(2, deleted_at=AS_OF - timedelta(days=1)),
        checkin(3, privacy=" Private"),
        checkin(4, privacy=None),
    ]
    assert _reasons(rows) == {
        cid(1): None,
        cid(2): "deleted",
        cid(3): "privacy 'private' is not one of friends, public",
        cid(4): "no privacy",
    }


def test_a_losing_copy_is_a_duplicate_and_the_winner_stays() -> None:
    rows = [checkin(1, text="old", updated_at=AS_OF - timedelta(days=2)), checkin(1, text="new", updated_at=AS_OF)]
    explanation = explain_user(to_frame(rows), U1, AS_OF)
    assert explanation.checkins["reason"].to_list() == [None, "duplicate: another row with this id wins (rule 8)"]
    [shown] = explanation.montages.items["widget_metadata"].to_list()
    assert '"new"' in shown


def test_a_row_without_created_at_rejects_the_user() -> None:
    broken = checkin(2)
    broken["created_at"] = None
    explanation = explain_user(to_frame([checkin(1), broken]), U1, AS_OF)
    assert _reasons([checkin(1), broken])[cid(2)] == "no created_at"
    assert explanation.rejected is not None and cid(2) in explanation.rejected
    assert explanation.montages.montages.is_empty()


def test_dropped_tags_say_why() -> None:
    long = "x" * 101
    rows = [checkin(1, tags=["Coffee", " coffee ", "", "   ", long, None, "tea"])]
    explanation = explain_user(to_frame(rows), U1, AS_OF)
    [row] = explanation.checkins.iter_rows(named=True)
    assert row["normalized_tags"] == ["coffee", "tea"]
    assert row["dropped_tags"] == [
        {"tag": " coffee ", "reason": "duplicate of 'coffee'"},
        {"tag": "", "reason": "empty"},
        {"tag": "   ", "reason": "empty"},
        {"tag": long, "reason": "longer than 100 characters"},
        {"tag": None, "reason": "null"},
    ]


def test_a_tag_short_of_the_threshold_says_how_many_more_it_needs() -> None:
    rows = [
        checkin(1, tags=["hiking"]),
        checkin(2, tags=["hiking"], created_at=CUT),  # exactly on the cut: outside the window
        checkin(3, tags=["hiking"], privacy="private"),
        checkin(4, tags=["coffee"], created_at=CUT + US),
        checkin(5, tags=["coffee"]),
        checkin(6, tags=["coffee"]),
    ]
    tags = {row["tag"]: row for row in explain_user(to_frame(rows), U1, AS_OF).tags.iter_rows(named=True)}
    assert tags["hiking"]["occurrences_in_window"] == 1
    assert tags["hiking"]["ineligible_occurrences"] == 1
    assert tags["hiking"]["qualifies"] is False
    assert tags["hiking"]["more_needed"] == 2
    assert tags["hiking"]["valid_until"] is None
    assert tags["coffee"]["qualifies"] is True
    assert tags["coffee"]["kth_newest_in_window"] == CUT + US
    assert tags["coffee"]["valid_until"] == CUT + US + LOOKBACK
    assert tags["coffee"]["window_start"] == CUT


def test_diff_against_stored_montages() -> None:
    rows = [checkin(n, tags=["coffee"]) for n in range(1, 4)]
    stored = compute(rows[:2])
    explanation = explain_user(to_frame(rows), U1, AS_OF, stored=stored)
    assert explanation.diff is not None
    assert explanation.diff.counts() == {"added": 1, "removed": 0, "changed": 1, "unchanged": 0}
    assert explain_user(to_frame(rows), U1, AS_OF, stored=compute(rows)).diff.counts()["unchanged"] == 2  # type: ignore[union-attr]


def test_the_document_is_json_with_the_documented_names() -> None:
    rows = [checkin(n, tags=["coffee"], text="hi") for n in range(1, 4)]
    document = explanation_document(explain_user(to_frame(rows), U1, AS_OF, stored=compute(rows[:1])))
    assert set(document) == {
        "user_id", "as_of", "window_start", "params", "rejected", "checkins", "tags", "montages", "diff",
    }  # fmt: skip
    assert set(document["tags"][0]) >= {
        "tag", "occurrences_in_window", "window_start", "qualifies", "kth_newest_in_window", "valid_until",
        "more_needed",
    }  # fmt: skip
    assert document["montages"][0]["items"][0]["widget_metadata"]["text"] == "hi"
    assert document["diff"]["counts"]["added"] == 1


# =========================================================================== against the reference


def check_explanations(rows: list[dict[str, Any]], as_of: datetime, params: Any) -> None:
    expected_outcome = reference_montages(rows, as_of, params)
    for user in sorted({row["user_id"] for row in rows}):
        explanation = explain_user(to_frame(rows), user, as_of, params)
        actual_checkins = Counter(
            (row["id"], row["eligible"], tuple(row["normalized_tags"]))
            for row in explanation.checkins.iter_rows(named=True)
        )
        assert actual_checkins == reference_checkin_verdicts(rows, user, params), f"check-ins of {user}"
        actual_tags = {
            row.pop("tag"): {name: value for name, value in row.items() if name != "window_start"}
            for row in explanation.tags.iter_rows(named=True)
        }
        assert actual_tags == reference_tag_stats(rows, user, as_of, params), f"tags of {user}"
        assert (explanation.rejected is not None) == (user in expected_outcome.rejected)
        assert_same_outcome(from_engine(explanation.montages), _only(expected_outcome, user))


def _only(outcome: Any, user: str) -> Any:
    from tests.engine.reference import Outcome

    return Outcome(
        montages={key: value for key, value in outcome.montages.items() if key[0] == user},
        items={key: value for key, value in outcome.items.items() if key[0] == user},
        rejected={rejected for rejected in outcome.rejected if rejected == user},
    )


def test_reference_check_on_a_hand_made_mix() -> None:
    rows = [checkin(n, user=U1 if n % 2 else U2, tags=["coffee", "Tea"]) for n in range(1, 12)]
    check_explanations(rows, AS_OF, MontageParams())


@PROPERTY
@given(scenarios())
def test_property_explanations_match_the_reference(
    scenario: tuple[list[dict[str, Any]], datetime, MontageParams],
) -> None:
    check_explanations(*scenario)
