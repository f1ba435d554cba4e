"""What a run will do: its mode, how it finds changes, its reference time and chunks of users."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

import polars as pl

from montage_vec.config.durations import format_duration
from montage_vec.config.settings import Settings
from montage_vec.config.shard import Shard
from montage_vec.errors import ConfigError, SchemaStoreError
from montage_vec.stores.interfaces import CheckinSource, JobStore
from montage_vec.stores.render import Snapshot

if TYPE_CHECKING:
    from montage_vec.job.summary import RunSummary

CandidateMode = Literal["incremental", "full", "users"]
CaptureMode = Literal["trigger", "watermark"]


@dataclass(frozen=True)
class RunOptions:
    """The per-run choices of `montage-vec once` (everything else comes from Settings)."""

    full: bool = False
    user_ids: tuple[str, ...] = ()
    as_of: datetime | None = None
    dry_run: bool = False
    allow_future: bool = False  # an as_of beyond MONTAGE_MAX_CLOCK_SKEW ahead of the clock
    # Chosen by the caller when lines logged before the run (its configuration) must carry it.
    job_id: str | None = None


# Before the Unix epoch no check-in exists, and as_of minus the interest window would soon
# leave the dates Python can represent.
EARLIEST_AS_OF = datetime(1970, 1, 1, tzinfo=UTC)


def check_as_of(as_of: datetime, now: datetime, max_skew: timedelta, allow_future: bool) -> None:
    """ConfigError for a reference time the job must not run at."""
    if as_of < EARLIEST_AS_OF:
        raise ConfigError(f"--as-of {as_of.isoformat()}: must not be before {EARLIEST_AS_OF.date().isoformat()}")
    if as_of > now + max_skew and not allow_future:
        raise ConfigError(
            f"--as-of {as_of.isoformat()} is more than MONTAGE_MAX_CLOCK_SKEW ({format_duration(max_skew)}) "
            "ahead of the clock: interests still current would be removed as aged out; "
            "pass --allow-future to run it anyway"
        )


def new_job_id(now: datetime, kind: str = "batch") -> str:
    """`batch_<unix seconds>` as the old job wrote it, plus a random suffix so two runs never collide."""
    return f"{kind}_{int(now.timestamp())}_{secrets.token_hex(3)}"


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ChangeCapture:
    """How an incremental run finds changed users (README, "Change capture"), and why."""

    mode: CaptureMode
    reason: str
    # The snapshot whose captured changes the run consumes (PostgreSQL, both modes: the job's
    # own tables capture deletes by others even when the source has no triggers).
    snapshot: Snapshot | None = None


# A plan made without the database's capture state (e.g. in tests): the watermark alone.
WATERMARK_ONLY = ChangeCapture("watermark", "no change capture was chosen")


def choose_capture(requested: str, installed: bool, database_source: bool) -> ChangeCapture:
    """MONTAGE_CHANGE_CAPTURE (`auto`, `trigger`, `watermark`) against what the database has."""
    if not database_source:
        return ChangeCapture("watermark", "check-ins come from the check-in service")
    if requested == "watermark":
        return ChangeCapture("watermark", "MONTAGE_CHANGE_CAPTURE=watermark")
    if installed:
        return ChangeCapture("trigger", "the capture triggers are installed on the source")
    if requested == "trigger":
        raise SchemaStoreError(
            "MONTAGE_CHANGE_CAPTURE=trigger, but the capture triggers are not installed on the source; they "
            "exist for PostgreSQL table sources only: run `montage-vec migrate --capture-triggers` there"
        )
    return ChangeCapture("watermark", "no capture triggers on the source (`migrate --capture-triggers` adds them)")


@dataclass(frozen=True)
class CandidatePlan:
    """Which users a run processes and why (README, "Which users a run processes")."""

    mode: CandidateMode
    as_of: datetime
    since: datetime | None = None
    user_ids: tuple[str, ...] = ()
    capture: ChangeCapture = WATERMARK_ONLY
    # Reconciliation needs the check-ins in the database (not behind the check-in service).
    reconcile: bool = True
    privacy_included: tuple[str, ...] = ()
    # Full because a run since the shard's last full one had a later as_of (see _rewinds).
    rewound: bool = False
    # Full because runs under another shard count came since the shard's last run (see _recounted).
    recounted: bool = False


def plan_candidates(
    options: RunOptions,
    as_of: datetime,
    watermark: datetime | None,
    overlap: timedelta,
    capture: ChangeCapture = WATERMARK_ONLY,
    reconcile: bool = True,
    privacy_included: tuple[str, ...] = (),
) -> CandidatePlan:
    """Incremental from the watermark (minus the overlap for clock skew), or full, or named users."""
    mode: CandidateMode
    if options.user_ids:
        mode = "users"
    elif options.full or watermark is None:
        mode = "full"
    else:
        mode = "incremental"
    since = watermark - overlap if mode == "incremental" and watermark is not None else None
    return CandidatePlan(
        mode=mode,
        as_of=as_of,
        since=since,
        user_ids=options.user_ids,
        capture=capture,
        reconcile=reconcile,
        privacy_included=privacy_included,
    )


def plan_run(
    store: JobStore, settings: Settings, options: RunOptions, summary: RunSummary, shard: Shard, database_source: bool
) -> CandidatePlan:
    """The run's plan: its mode, how it finds changes (and why), and whether it reconciles.

    `database_source`: check-ins come from the database itself, not the check-in service.
    """
    installed = database_source and store.capture_installed()
    capture = choose_capture(settings.montage_change_capture, installed, database_source)
    if database_source and not options.user_ids:
        capture = replace(capture, snapshot=store.capture_snapshot())
    every = settings.reconcile_every(capture.mode)
    reconcile = database_source and (every == 1 or store.runs_since_reconciled(shard.key) + 1 >= every)
    rewound = not options.user_ids and _rewinds(store.furthest_as_of(shard.key), summary.as_of)
    recounted = not options.user_ids and _recounted(store.shards_run_since(shard.key), shard)
    if rewound or recounted:
        options = replace(options, full=True)
    plan = plan_candidates(
        options,
        summary.as_of,
        summary.watermark_from,
        settings.watermark_overlap,
        capture=capture,
        reconcile=reconcile,
        privacy_included=tuple(sorted(settings.montage_params().privacy_included)),
    )
    return replace(plan, rewound=rewound, recounted=recounted)


def plan_warnings(plan: CandidatePlan, settings: Settings) -> list[str]:
    """What the run's log should warn about its plan."""
    warnings = []
    if plan.rewound:
        warnings.append(
            "as_of is earlier than a run's since the shard's last full run; running in full to restore what it aged out"
        )
    if plan.recounted:
        warnings.append("runs under another shard count came since this shard's last run; running in full")
    if plan.capture.mode == "watermark" and settings.montage_max_items < settings.montage_min_interest_occurrence:
        warnings.append(
            "MONTAGE_MAX_ITEMS < MONTAGE_MIN_INTEREST_OCCURRENCE: in watermark mode a hard delete can leave "
            "an interest that no longer qualifies (README, Reconciliation); the capture triggers see it"
        )
    return warnings


def _rewinds(furthest_as_of: datetime | None, as_of: datetime) -> bool:
    """Whether a run since the shard's last full one wrote at a later as_of than this run's.

    That run (an `--as-of` in the future, even one that died after a few chunks) aged out
    interests that are current again now, and an incremental run revisits only users with
    changes: a full run restores everyone's.
    """
    return furthest_as_of is not None and as_of < furthest_as_of


def _recounted(shards_since: list[str], shard: Shard) -> bool:
    """Whether runs under another shard count started since this shard's last completed run.

    A shard's history (its watermark, the as_ofs _rewinds compares, its reconciliation count)
    is kept under its own key, and another count's shards own other slices of the users: an
    `--as-of` ahead of the clock under the other count aged out interests this shard's
    history knows nothing of. A full run needs no history, so a shard starts over in full.
    """
    return any(Shard.parse(key).count != shard.count for key in shards_since)


def find_candidates(
    plan: CandidatePlan, source: CheckinSource, store: JobStore, shard: Shard, consumed: pl.Series
) -> pl.Series:
    """Sorted distinct users of this shard: changed users, montages to revisit and reconciled
    users (incremental), or everyone (full), or the named users.

    `consumed` are this shard's captured users (`consumed_changes`), read once per run.
    """
    if plan.mode == "users":
        # Named users are processed exactly as asked, whatever shard they fall in.
        return pl.Series("user_id", plan.user_ids, dtype=pl.String).unique().sort()
    if plan.mode == "full" or plan.since is None:
        found = [source.all_users(), store.montage_users()]
    else:
        found = [consumed]
        if plan.capture.mode == "watermark":
            found.append(source.changed_users(plan.since))
        found.append(store.revisit_users(plan.as_of))
        if plan.reconcile:
            found.append(store.reconcile_users(plan.privacy_included))
    return owned_users(found, shard)


def consumed_changes(plan: CandidatePlan, store: JobStore, shard: Shard) -> pl.Series:
    """This shard's users among the captured changes the run's snapshot sees (pruned when it completes)."""
    if plan.capture.snapshot is None:
        return pl.Series("user_id", [], dtype=pl.String)
    return owned_users([store.captured_users(plan.capture.snapshot)], shard)


def owned_users(found: list[pl.Series], shard: Shard) -> pl.Series:
    return shard.owns(pl.concat([users.rename("user_id").cast(pl.String) for users in found]).unique().sort())


def next_watermark(
    previous: datetime | None, data_time: datetime | None, open_since: datetime | None
) -> datetime | None:
    """The newest change seen, held back to the start of the oldest open transaction, never backwards.

    A transaction open at the run's start may commit rows stamped as early as its start
    after this run read the source; the next run must still find them.
    """
    # `updated_at > watermark` selects changes, and a transaction's now() equals its start:
    # stop just before it, so that rows stamped exactly then are read.
    held_back = open_since - timedelta(microseconds=1) if open_since is not None else None
    seen = [moment for moment in (data_time, held_back) if moment is not None]
    if not seen:
        return previous
    return max(min(seen), previous) if previous else min(seen)


def chunk_size(candidates: int, settings: Settings) -> int:
    """MONTAGE_BATCH_SIZE users per chunk, or fewer where that leaves a worker idle.

    A run smaller than one chunk per worker is split evenly across the workers: an incremental
    run of 1,000 users on two workers runs two chunks of 500 at once, not one of 1,000 alone.
    """
    workers = settings.chunk_workers()
    return max(1, min(settings.montage_batch_size, -(-candidates // workers)))


def chunked(user_ids: pl.Series, size: int) -> Iterator[pl.Series]:
    """Consecutive slices of at most `size` users (zero-copy)."""
    for offset in range(0, len(user_ids), size):
        yield user_ids.slice(offset, size)
