"""JSON-ready documents of the engine's results, for `explain --json`, `once --dry-run` and the realtime endpoint.

Times become ISO 8601 text, `widget_metadata` a JSON object, and each montage carries its
items, so that a document reads top to bottom without joining anything.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import polars as pl

from montage_vec.engine.diff import MontageDiff
from montage_vec.engine.explain import Explanation
from montage_vec.engine.montages import MontageSet
from montage_vec.engine.schema import MONTAGE_KEY


def explanation_document(explanation: Explanation) -> dict[str, Any]:
    """One user's explanation: check-ins, tags, the montages a run would store and the diff."""
    params = explanation.params
    return {
        "user_id": explanation.user_id,
        "as_of": _text(explanation.as_of),
        "window_start": _text(explanation.window_start),
        "params": {
            "max_items": params.max_items,
            "min_interest_occurrence": params.min_interest_occurrence,
            "interest_lookback_days": params.interest_lookback_days,
            "privacy_included": sorted(params.privacy_included),
        },
        "rejected": explanation.rejected,
        "checkins": _rows(explanation.checkins.drop("winner")),
        "tags": _rows(explanation.tags),
        "montages": montages_document(explanation.montages),
        "diff": diff_document(explanation.diff) if explanation.diff is not None else None,
    }


def montages_document(montage_set: MontageSet) -> list[dict[str, Any]]:
    """Each montage with its items nested, in key order."""
    items_by_montage: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for item in _rows(montage_set.items):
        item["widget_metadata"] = json.loads(item["widget_metadata"])
        key = tuple(item.pop(name) for name in MONTAGE_KEY)
        item.pop("montage_id", None)
        items_by_montage.setdefault(key, []).append(item)
    documents = []
    for montage in _rows(montage_set.montages):
        key = tuple(montage[name] for name in MONTAGE_KEY)
        documents.append({**montage, "items": items_by_montage.get(key, [])})
    return documents


def diff_document(diff: MontageDiff) -> dict[str, Any]:
    """The counts per status, then every montage that is not unchanged with its item changes."""
    changes_by_montage: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for change in _rows(diff.items):
        key = tuple(change.pop(name) for name in MONTAGE_KEY)
        changes_by_montage.setdefault(key, []).append(change)
    montages = [
        {**montage, "items": changes_by_montage.get(tuple(montage[name] for name in MONTAGE_KEY), [])}
        for montage in _rows(diff.montages.filter(pl.col("status") != "unchanged"))
    ]
    return {"counts": diff.counts(), "montages": montages}


def _rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return [{name: _jsonable(value) for name, value in row.items()} for row in frame.iter_rows(named=True)]


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return _text(value)
    if isinstance(value, list):
        return [_jsonable(element) for element in value]
    if isinstance(value, dict):
        return {name: _jsonable(element) for name, element in value.items()}
    return value


def _text(moment: datetime) -> str:
    return moment.isoformat()
