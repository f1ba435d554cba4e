"""One chunk of users: extract, compute, write in one transaction, isolating bad users.

When a chunk fails on its data (a constraint or trigger rejects a row, a check-in breaks
the engine's assumptions), the chunk is split in halves and each half is processed again,
down to single users. A user that fails alone is reported with its error; every other user
of the chunk is written. Only classified data errors split a chunk: anything else (a bug,
an unexpected driver error) fails the run, and so does a split chunk whose every user
failed, since bad data does not strike every user at once, a bug does.
Transient errors (lost connection, serialization failure) are not handled here: they
propagate so that the runner retries the whole chunk on a new session.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import polars as pl
from loguru import logger

from montage_vec.config.secrets import redact
from montage_vec.engine import MontageParams, compute_montages
from montage_vec.engine.conform import split_unsupported_times
from montage_vec.errors import ChunkFailedWhole, DataStoreError, InputDataError
from montage_vec.stores.interfaces import ChunkCheckins, JobStore
from montage_vec.stores.records import ChunkDiff, ChunkWrite, Lease

# Errors classified as caused by the rows themselves: splitting the chunk isolates the users
# behind them. Generic ValueError, PolarsError or ArrowException are not among them: a bug
# raises those for every user, and must fail the run rather than fill the retry list.
DATA_ERRORS = (DataStoreError, InputDataError)


# A chunk this small whose every user fails may just hold bad users, e.g. on a quiet night
# when the retry list's users are the only candidates; the run's failed fraction still counts.
MIN_USERS_TO_JUDGE_A_CHUNK = 10


@dataclass(frozen=True)
class ChunkContext:
    job_id: str
    as_of: datetime
    params: MontageParams
    generated_at: datetime
    cache_ttl: timedelta
    dry_run: bool = False
    analytics: bool = True
    lease: Lease | None = None  # the run's hold on its shard, checked by every write
    checkin_budget: int | None = None  # check-ins a chunk may hold within MONTAGE_MEMORY_BUDGET


@dataclass
class ChunkResult:
    """What processing a chunk (or a piece of one) achieved; results of pieces add up.

    A real run counts what it wrote (`montages_written`, `montages_removed`, `items_written`),
    a dry run what the same write would have (`*_would_*`), each leaving the other's at 0;
    `users_changed` counts the users whose montages changed, or in a dry run would.
    """

    users: int = 0
    successful: int = 0
    checkins: int = 0
    general_montages: int = 0
    interest_montages: int = 0
    montages_written: int = 0
    montages_removed: int = 0
    items_written: int = 0
    montages_would_write: int = 0
    montages_would_remove: int = 0
    items_would_write: int = 0
    users_changed: int = 0
    changed_users: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: {"extract": 0.0, "compute": 0.0, "write": 0.0})

    def counts_only(self) -> ChunkResult:
        """This result without its user list: a run's totals must not grow with every changed user."""
        return replace(self, changed_users=[])

    def add(self, other: ChunkResult) -> None:
        self.users += other.users
        self.successful += other.successful
        self.checkins += other.checkins
        self.general_montages += other.general_montages
        self.interest_montages += other.interest_montages
        self.montages_written += other.montages_written
        self.montages_removed += other.montages_removed
        self.items_written += other.items_written
        self.montages_would_write += other.montages_would_write
        self.montages_would_remove += other.montages_would_remove
        self.items_would_write += other.items_would_write
        self.users_changed += other.users_changed
        self.changed_users.extend(other.changed_users)
        self.failures.extend(other.failures)
        for stage, spent in other.seconds.items():
            self.seconds[stage] = self.seconds.get(stage, 0.0) + spent


def process_chunk(store: JobStore, source: ChunkCheckins, user_ids: pl.Series, context: ChunkContext) -> ChunkResult:
    """Process `user_ids`, splitting on data errors until the failing users stand alone.

    ChunkFailedWhole when the chunk had to be split and not one of its (at least
    MIN_USERS_TO_JUDGE_A_CHUNK) users succeeded.
    """
    try:
        return _process_once(store, source, user_ids, context)
    except DATA_ERRORS as exc:
        if len(user_ids) == 1:
            return _failed_user(user_ids[0], exc)
        result = _split(store, source, user_ids, context, exc)
        if result.successful == 0 and len(user_ids) >= MIN_USERS_TO_JUDGE_A_CHUNK:
            logger.opt(exception=exc).error(
                "every user of a split chunk failed: a systematic error, not bad data", users=len(user_ids)
            )
            raise ChunkFailedWhole(
                f"all {len(user_ids)} users of a chunk failed, which bad data alone does not explain; "
                f"first error: {_describe(exc)}"
            ) from None
        return result


def _bisect(store: JobStore, source: ChunkCheckins, user_ids: pl.Series, context: ChunkContext) -> ChunkResult:
    try:
        return _process_once(store, source, user_ids, context)
    except DATA_ERRORS as exc:
        if len(user_ids) == 1:
            return _failed_user(user_ids[0], exc)
        return _split(store, source, user_ids, context, exc)


def _split(
    store: JobStore, source: ChunkCheckins, user_ids: pl.Series, context: ChunkContext, error: Exception
) -> ChunkResult:
    logger.info("chunk failed on its data; splitting it", users=len(user_ids), error=_describe(error))
    half = len(user_ids) // 2
    result = _bisect(store, source, user_ids.slice(0, half), context)
    result.add(_bisect(store, source, user_ids.slice(half), context))
    return result


def _failed_user(user_id: str, exc: Exception) -> ChunkResult:
    error = _describe(exc)
    logger.warning("user failed and goes to the retry list", user_id=user_id, error=error)
    return ChunkResult(users=1, failures=[(user_id, error)])


def _describe(exc: Exception) -> str:
    return redact(f"{type(exc).__name__}: {exc}")


def _process_once(store: JobStore, source: ChunkCheckins, user_ids: pl.Series, context: ChunkContext) -> ChunkResult:
    result = ChunkResult(users=len(user_ids))
    started = time.perf_counter()
    checkins, unsupported = split_unsupported_times(source.extract_checkins(user_ids))
    extracted = time.perf_counter()
    if context.checkin_budget is not None and checkins.height > context.checkin_budget:
        logger.bind(job_id=context.job_id).warning(
            "this chunk holds more check-ins than MONTAGE_MEMORY_BUDGET allows for (README, Memory); "
            "lower MONTAGE_BATCH_SIZE if the process runs out of memory",
            users=len(user_ids),
            checkins=checkins.height,
            checkin_budget=context.checkin_budget,
        )
    montage_set = compute_montages(checkins, context.as_of, context.params)
    computed = time.perf_counter()
    result.checkins = checkins.height
    result.seconds.update(extract=extracted - started, compute=computed - extracted)

    rejected = pl.concat([unsupported, montage_set.rejected.filter(pl.col("user_id").is_not_null())])
    result.failures = list(zip(rejected["user_id"].to_list(), rejected["error"].to_list(), strict=True))
    for user_id, error in result.failures:
        logger.warning("user's check-ins cannot be processed; it goes to the retry list", user_id=user_id, error=error)
    writable = user_ids.filter(~user_ids.is_in(rejected["user_id"].implode()))
    result.successful = len(writable)
    result.general_montages = montage_set.general_count
    result.interest_montages = montage_set.interest_count
    chunk = ChunkWrite(
        job_id=context.job_id,
        generated_at=context.generated_at,
        cache_ttl=context.cache_ttl,
        analytics=context.analytics,
        lease=context.lease,
        user_ids=writable,
        montages=montage_set.montages,
        items=montage_set.items,
    )
    if context.dry_run:
        _count_diff(result, store.diff_chunk(chunk))
        result.seconds["diff"] = time.perf_counter() - computed
        return result

    outcome = store.write_chunk(chunk)
    result.seconds["write"] = time.perf_counter() - computed
    result.montages_written = outcome.montages_written
    result.montages_removed = outcome.montages_removed
    result.items_written = outcome.items_written
    result.users_changed = outcome.users_changed
    result.changed_users = outcome.changed_users
    return result


def _count_diff(result: ChunkResult, diff: ChunkDiff) -> None:
    """A dry run's counts: what writing the chunk now would change."""
    result.montages_would_write = diff.montages_written
    result.montages_would_remove = diff.montages_removed
    result.items_would_write = diff.items_written
    result.users_changed = diff.users_changed
