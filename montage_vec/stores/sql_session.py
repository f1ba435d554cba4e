"""User-set queries both backends run as written; each backend only says how to fetch ids."""

from __future__ import annotations

from abc import abstractmethod
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

import polars as pl

from montage_vec.stores import queries
from montage_vec.stores.base import StoreSession
from montage_vec.stores.migrations import migration_files, split_statements


class SqlStoreSession(StoreSession):
    """A StoreSession whose migrations and candidate-user queries are shared SQL."""

    backend: str  # the folder of its DDL under sql/

    def migrate(self) -> list[str]:
        applied = []
        with self._transaction():
            for path in migration_files(self.backend):
                for statement in split_statements(path.read_text()):
                    self._execute(statement)
                applied.append(path.name)
        return applied

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

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[None]:
        """Commit on success, roll back and raise a classified StoreError on failure."""

    @abstractmethod
    def _execute(self, sql: str, parameters: list[Any] | None = None) -> Any:
        """Run one statement."""
