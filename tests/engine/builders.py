"""Small builders for hand-written engine examples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from montage_vec.engine import MontageParams, MontageSet, compute_montages
from tests.engine.reference import Outcome, from_engine
from tests.engine.strategies import to_frame

AS_OF = datetime(2024, 3, 31, 12, 0, tzinfo=UTC)
LOOKBACK = timedelta(days=30)
CUT = AS_OF - LOOKBACK
US = timedelta(microseconds=1)

U1 = "11111111-1111-4111-8111-111111111111"
U2 = "22222222-2222-4222-8222-222222222222"
U3 = "33333333-3333-4333-8333-333333333333"


def cid(n: int, prefix: str = "00000000-0000-4000-8000-") -> str:
    """A check-in id as lower-case uuid text; larger n sorts later."""
    return f"{prefix}{n:012x}"


def checkin(
    n: int,
    *,
    user: str = U1,
    created_at: datetime | None = None,
    days_ago: float | None = None,
    privacy: str | None = "public",
    deleted_at: datetime | None = None,
    tags: list[str | None] | None = None,
    text: str | None = None,
    media_url: str | None = None,
    media_type: str | None = None,
    thumbnail_url: str | None = None,
    location: str | None = None,
    checkin_id: str | None = "",
    updated_at: datetime | None = None,
) -> dict[str, Any]:
    """One check-in row; created_at defaults to `n` hours before AS_OF."""
    if created_at is None:
        created_at = AS_OF - (timedelta(days=days_ago) if days_ago is not None else timedelta(hours=n))
    return {
        "id": cid(n) if checkin_id == "" else checkin_id,
        "user_id": user,
        "created_at": created_at,
        "deleted_at": deleted_at,
        "privacy": privacy,
        "text_content": text,
        "media_url": media_url,
        "media_type": media_type,
        "thumbnail_url": thumbnail_url,
        "location_name": location,
        "tags": tags,
        "updated_at": updated_at,
    }


def compute(rows: list[dict[str, Any]], as_of: datetime = AS_OF, params: MontageParams | None = None) -> MontageSet:
    return compute_montages(to_frame(rows), as_of, params)


def run(rows: list[dict[str, Any]], as_of: datetime = AS_OF, params: MontageParams | None = None) -> Outcome:
    """The engine's result in the reference's plain form."""
    return from_engine(compute(rows, as_of, params))


def item_ids(outcome: Outcome, user: str, kind: str, interest: str = "") -> list[str]:
    return [item[1] for item in outcome.items[(user, kind, interest)]]
