"""User-set queries both backends run as written; each backend only says how to fetch ids."""

from __future__ import annotations

from abc import abstractmethod
from datetime import datetime

import polars as pl

from montage_vec.stores import queries
from montage_vec.stores.base import StoreSession


class SqlStoreSession(StoreSession):
    """A StoreSession whose candidate-user queries are the shared SQL in `queries`."""

    def changed_users(self, since: datetime) -> pl.Series:
        return self._users(queries.CHANGED_USERS.format(since=queries.timestamp_literal(since)))

    def all_users(self) -> pl.Series:
        return self._users(queries.CHECKIN_USERS)

    def revisit_users(self, as_of: datetime) -> pl.Series:
        return self._users(queries.REVISIT_USERS.format(as_of=queries.timestamp_literal(as_of)))

    def montage_users(self) -> pl.Series:
        return self._users(queries.MONTAGE_USERS)

    @abstractmethod
    def _users(self, sql: str) -> pl.Series:
        """The `user_id` column of a query's result."""
