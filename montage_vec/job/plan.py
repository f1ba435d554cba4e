"""What a run will do: its mode, reference time, watermark window and chunks of users."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import polars as pl

from montage_vec.config.shard import Shard
from montage_vec.stores.interfaces import CheckinSource, JobStore

CandidateMode = Literal["incremental", "full", "users"]


@dataclass(frozen=True)
class RunOptions:
    """The per-run choices of `montage-vec once` (everything else comes from Settings)."""

    full: bool = False
    user_ids: tuple[str, ...] = ()
    as_of: datetime | None = None
    dry_run: bool = False


def new_job_id(now: datetime, kind: str = "batch") -> str:
    """`batch_<unix seconds>` as the old job wrote it, plus a random suffix so two runs never collide."""
    return f"{kind}_{int(now.timestamp())}_{secrets.token_hex(3)}"


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class CandidatePlan:
    """Which users a run processes and why (README, "Which users a run processes")."""

    mode: CandidateMode
    as_of: datetime
    since: datetime | None = None
    user_ids: tuple[str, ...] = ()


def plan_candidates(
    options: RunOptions, as_of: datetime, watermark: datetime | None, overlap: timedelta
) -> CandidatePlan:
    """Incremental from the watermark (minus the overlap for late commits), or full, or named users."""
    mode: CandidateMode
    if options.user_ids:
        mode = "users"
    elif options.full or watermark is None:
        mode = "full"
    else:
        mode = "incremental"
    since = watermark - overlap if mode == "incremental" and watermark is not None else None
    return CandidatePlan(mode=mode, as_of=as_of, since=since, user_ids=options.user_ids)


def find_candidates(plan: CandidatePlan, source: CheckinSource, store: JobStore, shard: Shard) -> pl.Series:
    """Sorted distinct users of this shard: changed check-ins plus montages to revisit, or everyone."""
    if plan.mode == "users":
        # Named users are processed exactly as asked, whatever shard they fall in.
        return pl.Series("user_id", plan.user_ids, dtype=pl.String).unique().sort()
    if plan.mode == "full" or plan.since is None:
        found = pl.concat([source.all_users(), store.montage_users()])
    else:
        found = pl.concat([source.changed_users(plan.since), store.revisit_users(plan.as_of)])
    return shard.owns(found.rename("user_id").unique().sort())


def chunked(user_ids: pl.Series, size: int) -> Iterator[pl.Series]:
    """Consecutive slices of at most `size` users (zero-copy)."""
    for offset in range(0, len(user_ids), size):
        yield user_ids.slice(offset, size)
