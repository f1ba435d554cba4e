"""Plain-text views of stored montages for `show` and `demo`."""

from __future__ import annotations

import json

import polars as pl


def render_user_montages(user_id: str, montages: pl.DataFrame, items: pl.DataFrame) -> str:
    """A readable listing: one block per montage, one line per item."""
    if montages.is_empty():
        return f"user {user_id} has no montages"
    lines = [f"user {user_id}: {montages.height} montage(s)"]
    for montage in montages.iter_rows(named=True):
        title = "general" if montage["kind"] == "general" else f"interest '{montage['interest']}'"
        valid = f", valid until {montage['valid_until']:%Y-%m-%d %H:%M}" if montage["valid_until"] else ""
        lines.append(f"\n{title}: {montage['item_count']} item(s){valid}  [id {montage['id']}]")
        own_items = items.filter((pl.col("kind") == montage["kind"]) & (pl.col("interest") == montage["interest"]))
        for item in own_items.iter_rows(named=True):
            lines.append(_item_line(item))
    return "\n".join(lines)


def _item_line(item: dict[str, object]) -> str:
    metadata = json.loads(str(item["widget_metadata"]))
    detail = metadata.get("text") or metadata.get("location") or metadata.get("media_url") or ""
    tags = ",".join(metadata.get("tags", []))
    created = f"{item['checkin_created_at']:%Y-%m-%d %H:%M}"
    return f"  {item['position']:>3}  {created}  {item['widget_type']:<8} {str(detail)[:40]:<40} [{tags}]"
