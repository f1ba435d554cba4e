"""Plain-text views of stored montages for `show` and `demo`."""

from __future__ import annotations

import json
import re
from datetime import datetime

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
