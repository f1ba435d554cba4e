"""Reading check-ins from the check-in service instead of the database (CHECKIN_SOURCE=http).

The service must offer these bulk endpoints (all JSON, header `X-API-Key`):

- `GET /internal/checkins/latest-update?not_after=<ISO>` -> `{"max_updated_at": <ISO or null>}`
- `GET /internal/checkins/changed-users?since=<ISO>&limit=N[&cursor=C]`
  -> `{"user_ids": [...], "next_cursor": C or null}`: users with a check-in updated after `since`
- `GET /internal/checkins/users?limit=N[&cursor=C]` -> same shape: every user with a check-in
- `POST /internal/checkins/query` with `{"user_ids": [...], "limit": N, "cursor": C or null}`
  -> `{"checkins": [{"id", "user_id", "created_at", "updated_at", "deleted_at", "privacy",
  "text_content", "media_url", "media_type", "thumbnail_url", "location_name", "tags"}],
  "next_cursor": C or null}`, timestamps as ISO 8601 with offset, `tags` a list or null.

Pages are followed until `next_cursor` is null. The rows feed the same engine as the database.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import polars as pl

from montage_vec.config import Settings
from montage_vec.engine.schema import CHECKIN_SCHEMA, OPTIONAL_CHECKIN_SCHEMA
from montage_vec.errors import ConfigError, InputDataError, ServiceResponseError
from montage_vec.services.http import ServiceClient

SERVICE_CHECKIN_SCHEMA = {**CHECKIN_SCHEMA, **OPTIONAL_CHECKIN_SCHEMA}
TIME_COLUMNS = tuple(name for name, dtype in SERVICE_CHECKIN_SCHEMA.items() if isinstance(dtype, pl.Datetime))
TEXT_CHECKIN_SCHEMA: dict[str, pl.DataType] = {
    name: (pl.String() if isinstance(dtype, pl.Datetime) else dtype) for name, dtype in SERVICE_CHECKIN_SCHEMA.items()
}


class CheckinService:
    """A CheckinSource backed by the check-in service; safe to share between threads."""

    def __init__(self, client: ServiceClient, page_size: int) -> None:
        self._client = client
        self._page_size = page_size

    @classmethod
    def from_settings(cls, settings: Settings) -> CheckinService:
        if not settings.checkin_service_url:
            raise ConfigError("CHECKIN_SERVICE_URL is not set")
        api_key = settings.checkin_service_api_key.get_secret_value() if settings.checkin_service_api_key else None
        client = ServiceClient(
            "check-in service", settings.checkin_service_url, api_key, settings.checkin_service_timeout, retries=3
        )
        return cls(client, settings.checkin_service_page_size)

    def latest_data_time(self, not_after: datetime) -> datetime | None:
        body = self._json("GET", "/internal/checkins/latest-update", params={"not_after": not_after.isoformat()})
        value = body.get("max_updated_at")
        return datetime.fromisoformat(value) if value else None

    def changed_users(self, since: datetime) -> pl.Series:
        pages = self._pages("GET", "/internal/checkins/changed-users", "user_ids", {"since": since.isoformat()})
        return _user_series(pages)

    def all_users(self) -> pl.Series:
        return _user_series(self._pages("GET", "/internal/checkins/users", "user_ids", {}))

    def extract_checkins(self, user_ids: pl.Series) -> pl.DataFrame:
        body = {"user_ids": user_ids.to_list()}
        try:
            frames = [
                pl.DataFrame(rows, schema=TEXT_CHECKIN_SCHEMA, strict=False)
                for rows in self._pages("POST", "/internal/checkins/query", "checkins", body)
            ]
        except (pl.exceptions.PolarsError, TypeError, ValueError) as exc:
            raise InputDataError(f"check-in service rows do not fit the check-in columns: {exc}") from None
        text = pl.concat(frames) if frames else pl.DataFrame(schema=TEXT_CHECKIN_SCHEMA)
        # Only the users asked for: rows of anyone else must not get montages written.
        return _parse_times(text.filter(pl.col("user_id").is_in(user_ids.implode())))

    def close(self) -> None:
        self._client.close()

    def _pages(self, method: str, path: str, key: str, request: dict[str, Any]) -> Iterator[list[Any]]:
        cursor: str | None = None
        while True:
            page = {**request, "limit": self._page_size}
            if cursor is not None:
                page["cursor"] = cursor
            body = self._json(method, path, params=page) if method == "GET" else self._json(method, path, json=page)
            items = body.get(key)
            if not isinstance(items, list):
                raise ServiceResponseError(f"check-in service {path}: answer lacks a {key!r} list")
            yield items
            cursor = body.get("next_cursor")
            if not cursor:
                return

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._client.request(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError:
            raise ServiceResponseError(f"check-in service {path}: answer is not JSON") from None
        if not isinstance(body, dict):
            raise ServiceResponseError(f"check-in service {path}: answer is not a JSON object")
        return body


def _user_series(pages: Iterator[list[Any]]) -> pl.Series:
    users = [pl.Series("user_id", page, dtype=pl.String) for page in pages]
    return pl.concat(users) if users else pl.Series("user_id", [], dtype=pl.String)


def _parse_times(text: pl.DataFrame) -> pl.DataFrame:
    """Timestamps parsed; a created_at or deleted_at that does not parse (or lies past year 9999)
    is named in "unsupported_time", which rejects its user as the database's extraction does."""
    parsed = text.with_columns(
        pl.col(name).str.to_datetime(time_zone="UTC", time_unit="us", strict=False) for name in TIME_COLUMNS
    )
    unparsed = [
        pl.when(text[name].is_not_null() & parsed[name].is_null()).then(pl.lit(f"{name} ") + text[name])
        for name in ("created_at", "deleted_at")
    ]
    return parsed.with_columns(unsupported_time=pl.coalesce(unparsed))
