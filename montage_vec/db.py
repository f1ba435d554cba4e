"""The library's entry object: one montage-vec database, as a notebook or a program uses it.

    import montage_vec
    db = montage_vec.connect("duckdb:///montage.duckdb", read_only=True)
    stored = db.read()                      # every stored montage and item, as Polars frames
    why = db.explain(stored.montages["user_id"][0])

`connect` builds the settings the command line would (environment variables, then the
arguments given here), and each method is what a command does: `run` is `once`, `explain`
is `explain`, `read` is `show`. Nothing is logged unless the caller enables it
(`loguru.logger.enable("montage_vec")`), and nothing is written except by `run` and `migrate`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from types import TracebackType
from typing import Any

import polars as pl
import pyarrow as pa

from montage_vec.config import Settings, load_settings
from montage_vec.config.moments import as_utc, parse_moment
from montage_vec.engine import MontageParams, MontageSet, compute_montages
from montage_vec.engine.conform import split_unsupported_times
from montage_vec.engine.explain import Explanation, explain_user
from montage_vec.engine.schema import GENERAL, INTEREST, REJECTED_SCHEMA
from montage_vec.errors import ConfigError, InputDataError
from montage_vec.job.control import RunControl
from montage_vec.job.plan import RunOptions, utc_now
from montage_vec.job.summary import RunSummary
from montage_vec.stores import CheckinSource, SqlSession, Store, open_store

KINDS = (GENERAL, INTEREST)


def connect(url: str | None = None, read_only: bool = False, create: bool = False, **settings: Any) -> Database:
    """The database at `url` (a DATABASE_URL: `duckdb:///path` or `postgresql://...`).

    Without `url`, the environment decides, as for the command line (DATABASE_URL, DB_HOST,
    else `montage.duckdb` here). `settings` override other variables by their lower-case
    names, e.g. `montage_max_items=10`. `read_only` opens an embedded file read-only, so
    that a notebook can read it beside other readers and `run` can only be a dry run. A
    missing DuckDB file is an error unless `create` (then `migrate()` sets it up): a typo in
    a path must not become a new, empty database.
    """
    unknown = sorted(set(settings) - set(Settings.model_fields))
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(unknown)}: settings are the variables' lower-case names, "
            "e.g. montage_max_items"
        )
    if url is not None and "://" not in url:
        url = f"duckdb:///{url}"  # a plain path names an embedded file, as the default does
    return Database(load_settings(database_url=url, **settings), read_only=read_only, create=create)


class Database:
    """A montage-vec database: compute, read, explain and run. Use it as a context manager, or `close()` it."""

    def __init__(self, settings: Settings, read_only: bool = False, create: bool = False) -> None:
        self.settings = settings
        self.read_only = read_only
        self._store: Store = open_store(settings.database(), read_only=read_only, create=create)

    # -- the engine, with this database's contract settings ----------------------------------

    def params(self) -> MontageParams:
        """The montage contract's numbers as configured (MONTAGE_MAX_ITEMS and the others)."""
        return self.settings.montage_params()

    def compute(
        self,
        checkins: pl.DataFrame | pl.LazyFrame | pa.Table,
        as_of: datetime | str | None = None,
        params: MontageParams | Mapping[str, Any] | None = None,
    ) -> MontageSet:
        """Montages of any check-ins at `as_of` (now): a Polars frame (lazy or not) or an Arrow table.

        Only `id`, `user_id` and `created_at` are required, but a check-in is eligible only with a
        `privacy` in MONTAGE_PRIVACY_INCLUDED (rule 1). `params` (MontageParams, or a dict of
        its fields) defaults to the configured contract.
        """
        return compute_montages(_checkin_frame(checkins), _moment(as_of), self._params(params))

    # -- reading ---------------------------------------------------------------------------

    def read(self, user_ids: Iterable[str] | None = None, kinds: Sequence[str] | None = None) -> MontageSet:
        """The stored montages and items (all users by default; the user filter runs in the database).

        Besides the engine's columns, montages carry `generated_at`, `cache_expires_at` and
        `job_id`; `rejected` is empty (it names users a computation could not process).
        """
        wanted = _user_series(user_ids)
        with self._session() as session:
            session.ensure_migrated()
            montages, items = session.stored_montages(wanted)
        if kinds is not None:
            unknown = sorted(set(kinds) - set(KINDS))
            if unknown:
                raise ConfigError(f"kinds: unknown montage kind(s) {unknown}; known: {list(KINDS)}")
            montages = montages.filter(pl.col("kind").is_in(list(kinds)))
            items = items.filter(pl.col("kind").is_in(list(kinds)))
        order = ["user_id", "kind", "interest"]
        return MontageSet(
            montages=montages.sort(order),
            items=items.sort([*order, "position"]),
            rejected=pl.DataFrame(schema=REJECTED_SCHEMA),
        )

    def checkins(self, user_ids: Iterable[str] | None = None) -> pl.DataFrame:
        """The source's check-ins in the engine's columns (all users by default), as the job reads them.

        A check-in whose time lies outside the years 1-9999 has that time NULL and the
        reason in an extra `unsupported_time` column (the job sets its user aside).
        """
        wanted = _user_series(user_ids)
        with self._reading() as (session, source):
            if wanted is not None:
                return source.extract_checkins(wanted)
            return session.source_checkins() if source is session else source.extract_checkins(source.all_users())

    def explain(self, user_id: str, as_of: datetime | str | None = None) -> Explanation:
        """Why `user_id`'s montages are what they are at `as_of` (now), and how they differ from the stored ones."""
        user = _user_series([user_id])
        assert user is not None  # a list was given
        with self._reading() as (session, source):
            session.ensure_migrated()
            extracted = source.extract_checkins(user)
            montages, items = session.stored_montages(user)
        stored = MontageSet(montages=montages, items=items, rejected=pl.DataFrame(schema=REJECTED_SCHEMA))
        checkins, set_aside = split_unsupported_times(extracted)
        explanation = explain_user(checkins, user[0], _moment(as_of), self.params(), stored)
        if set_aside.is_empty():
            return explanation
        # The job puts such a user on the retry list and leaves its stored montages as they are.
        unchanged = MontageSet(montages.clear(), items.clear(), set_aside)
        return replace(explanation, rejected=set_aside["error"][0], montages=unchanged, diff=None)

    # -- the job ---------------------------------------------------------------------------

    def run(
        self,
        *,
        full: bool = False,
        user_ids: Sequence[str] | None = None,
        as_of: datetime | str | None = None,
        dry_run: bool = False,
        allow_future: bool = False,
        control: RunControl | None = None,
        job_id: str | None = None,
        progress: bool = False,
    ) -> RunSummary:
        """Run the job once, as `montage-vec once` does; the summary says how it ended (it does not raise).

        `control` lets another thread stop it; `job_id` names the run (default: a new id);
        `progress` draws a progress bar on stderr instead of logging a line per chunk.
        """
        from montage_vec.observability.metrics import JobMetrics
        from montage_vec.runtime.wiring import run_once

        if self.read_only and not dry_run:
            raise ConfigError("this database was opened read_only: only a dry run (dry_run=True) can run")
        if full and user_ids:
            raise ConfigError("full and user_ids contradict each other: a run is either full or for named users")
        if user_ids is not None and len(user_ids) == 0:
            raise ConfigError("user_ids is empty: name at least one user, or leave it out for the whole run")
        canonical = _user_series(user_ids)
        options = RunOptions(
            full=full,
            user_ids=tuple(canonical.to_list()) if canonical is not None else (),
            as_of=_moment(as_of) if as_of is not None else None,
            dry_run=dry_run,
            allow_future=allow_future,
            job_id=job_id,
        )
        return run_once(self.settings, options, control or RunControl(), JobMetrics(), self._store, progress)

    def migrate(self) -> list[str]:
        """Apply the pending migrations of the job's own tables; the names of those applied now."""
        with self._session() as session:
            return session.migrate()

    def install_capture_triggers(self) -> str:
        """Install the change-capture triggers on the check-in source table (PostgreSQL); what was done."""
        with self._session() as session:
            return session.install_capture_triggers()

    def create_source_indexes(self) -> list[str]:
        """Create the recommended indexes on the check-in source table, CONCURRENTLY; what was done."""
        with self._session() as session:
            return session.create_source_indexes()

    def _params(self, params: MontageParams | Mapping[str, Any] | None) -> MontageParams:
        if params is None or isinstance(params, MontageParams):
            return params or self.params()
        try:
            return replace(self.params(), **params)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"params: {exc}") from None

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = ", read_only" if self.read_only else ""
        return f"<montage_vec.Database {self.settings.database().display}{mode}>"

    @contextmanager
    def _session(self) -> Iterator[SqlSession]:
        with self._store.session() as session:
            yield session

    @contextmanager
    def _reading(self) -> Iterator[tuple[SqlSession, CheckinSource]]:
        """A session, and where the job reads check-ins: that session, or the check-in service
        (CHECKIN_SOURCE=http), closed afterwards."""
        with self._session() as session:
            if self.settings.checkin_source != "http":
                yield session, session
                return
            from montage_vec.services.checkin_service import CheckinService

            service = CheckinService.from_settings(self.settings)
            try:
                yield session, service
            finally:
                service.close()


def _user_series(user_ids: Iterable[str] | None) -> pl.Series | None:
    """Canonical uuid text of each user id (ConfigError naming the first that is none)."""
    if user_ids is None:
        return None
    if isinstance(user_ids, str):
        raise ConfigError("user_ids: give a list of user ids, not one string")
    canonical = []
    for user_id in user_ids:
        try:
            canonical.append(str(uuid.UUID(str(user_id))))
        except ValueError:
            raise ConfigError(f"not a user id (a uuid): {user_id!r}") from None
    return pl.Series("user_id", canonical, dtype=pl.String)


def _moment(as_of: datetime | str | None) -> datetime:
    """A reference time: now, a datetime (naive means UTC), or ISO 8601 text as `--as-of` takes it."""
    if as_of is None:
        return utc_now()
    if isinstance(as_of, str):
        try:
            return parse_moment(as_of)
        except ValueError:
            raise ConfigError(f"as_of: not an ISO 8601 timestamp: {as_of!r}") from None
    if not isinstance(as_of, datetime):
        raise ConfigError(f"as_of: expected a datetime or ISO 8601 text, got {type(as_of).__name__}")
    return as_utc(as_of)


def _checkin_frame(checkins: object) -> pl.DataFrame | pa.Table:
    if isinstance(checkins, pl.LazyFrame):
        return checkins.collect()
    if isinstance(checkins, pl.DataFrame | pa.Table):
        return checkins
    raise InputDataError(
        f"check-ins must be a Polars DataFrame or LazyFrame or an Arrow table, got {type(checkins).__name__} "
        "(a list of dicts becomes one with pl.DataFrame(rows))"
    )
