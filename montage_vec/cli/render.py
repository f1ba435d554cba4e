"""Views of stored montages: the plain-text listing of `show` and `demo`, and `show --json`'s document."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import polars as pl

# The minutes of a timestamp the database wrote as text ("10000-01-01 00:00:00+00").
_TO_THE_MINUTE = re.compile(r"\d{4,}-\d\d-\d\d[ T]\d\d:\d\d")


def render_user_montages(user_id: str, montages: pl.DataFrame, items: pl.DataFrame) -> str:
    """A readable listing: one block per montage, one line per item."""
    if montages.is_empty():
        return f"user {user_id} has no montages"
    lines = [f"user {user_id}: {montages.height} montage(s)"]
    for montage in montages.iter_rows(named=True):
        title = "general" if montage["kind"] == "general" else f"interest '{montage['interest']}'"
        valid = f", valid until {_moment(montage['valid_until'])}" if montage["valid_until"] else ""
        lines.append(f"\n{title}: {montage['item_count']} item(s){valid}  [id {montage['id']}]")
        own_items = items.filter((pl.col("kind") == montage["kind"]) & (pl.col("interest") == montage["interest"]))
        for item in own_items.iter_rows(named=True):
            lines.append(_item_line(item))
    return "\n".join(lines)


def user_montages_document(user_id: str, montages: pl.DataFrame, items: pl.DataFrame) -> dict[str, Any]:
    """`show --json`: the user, and each montage with its items nested, in the order of the listing.

    Timestamps are ISO 8601 text in UTC; one that no Python datetime holds ('infinity', a year
    past 9999, a BC date) is the database's own text. `widget_metadata` is a JSON object.
    """
    own_items: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for item in items.iter_rows(named=True):
        own_items.setdefault((item["kind"], item["interest"]), []).append(
            {
                "position": item["position"],
                "checkin_id": item["checkin_id"],
                "checkin_created_at": _iso(item["checkin_created_at"]),
                "widget_type": item["widget_type"],
                "widget_metadata": json.loads(str(item["widget_metadata"])),
            }
        )
    documents = []
    for montage in montages.iter_rows(named=True):
        moments = {name: _iso(montage[name]) for name in ("generated_at", "cache_expires_at", "valid_until")}
        documents.append(
            {
                "id": montage["id"],
                "kind": montage["kind"],
                "interest": montage["interest"],
                "item_count": montage["item_count"],
                **moments,
                "job_id": montage["job_id"],
                "items": own_items.get((montage["kind"], montage["interest"]), []),
            }
        )
    return {"user_id": user_id, "montages": documents}


def _iso(value: object) -> str | None:
    """ISO 8601 in UTC, from a datetime or from the database's text, which is kept as it is when
    Python cannot read it ('infinity', '10000-01-01 00:00:00+00', '0044-03-15 00:00:00+00 BC')."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    text = str(value)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    return moment.astimezone(UTC).isoformat() if moment.tzinfo is not None else moment.isoformat()


def _item_line(item: dict[str, object]) -> str:
    metadata = json.loads(str(item["widget_metadata"]))
    detail = metadata.get("text") or metadata.get("location") or metadata.get("media_url") or ""
    tags = ",".join(metadata.get("tags", []))
    created = _moment(item["checkin_created_at"])
    return f"  {item['position']:>3}  {created}  {item['widget_type']:<8} {str(detail)[:40]:<40} [{tags}]"


def _moment(value: object) -> str:
    """A timestamp to the minute, from a datetime or from the database's text (`show`), which
    may be 'infinity' or a year past 9999: printed as the database wrote it."""
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M}"
    text = str(value)
    minutes = _TO_THE_MINUTE.match(text)
    if minutes is None:
        return text
    return minutes.group() + (" BC" if text.endswith(" BC") else "")
