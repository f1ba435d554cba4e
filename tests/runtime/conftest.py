"""Fixtures of the runtime tests: a PostgreSQL copy of ~30k synthetic users per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import polars as pl
import pytest

from montage_vec.config import load_settings
from montage_vec.datagen import SyntheticSpec, generate_checkins
from montage_vec.stores import open_store
from tests.helpers import expected_montages
from tests.runtime._procs import admin_execute, database_url, postgres_database

SYNTHETIC_USERS = 30_000
# Few check-ins per user keep a full run of 30k users in a few seconds while chunks of 500
# users still take a noticeable fraction of a second each.
SYNTHETIC_SPEC = SyntheticSpec(
    users=SYNTHETIC_USERS, seed=7, as_of=datetime(2026, 1, 1, tzinfo=UTC), mean_checkins_per_user=3.0
)


@cache
def synthetic_checkins() -> pl.DataFrame:
    """SYNTHETIC_SPEC's check-ins (generation is deterministic)."""
    return pl.DataFrame(generate_checkins(SYNTHETIC_SPEC))


@cache
def synthetic_expected() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """What a full recompute at SYNTHETIC_SPEC.as_of gives, in tests.helpers.stored_montages' form."""
    return expected_montages(synthetic_checkins().to_dicts(), SYNTHETIC_SPEC.as_of)


@dataclass(frozen=True)
class SyntheticDatabase:
    url: str
    spec: SyntheticSpec

    def users(self) -> list[str]:
        """Every user id, in a run's candidate order (distinct, sorted as text)."""
        return sorted(synthetic_checkins()["user_id"].unique().to_list())

    def expected(self, users: list[str] | None = None) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """The full-recompute montages and items of `users` (default: everyone).

        A user's montages depend only on that user's check-ins, so a subset's recompute is the
        full recompute restricted to the subset."""
        montages, items = synthetic_expected()
        if users is None:
            return montages, items
        wanted = set(users)
        return [row for row in montages if row[0] in wanted], [row for row in items if row[0] in wanted]


@pytest.fixture(scope="session")
def synthetic_template() -> Iterator[str]:
    """A migrated database holding SYNTHETIC_SPEC's check-ins, loaded once and copied per test."""
    name = f"montage_rt_template_{uuid.uuid4().hex[:8]}"
    admin_execute(f'CREATE DATABASE "{name}"')
    try:
        with open_store(load_settings(database_url=database_url(name)).database()) as store:
            session = store.session()
            try:
                session.migrate()
                session.load_checkins(synthetic_checkins())
            finally:
                session.close()
        yield name
    finally:
        admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def synthetic_db(synthetic_template: str) -> Iterator[SyntheticDatabase]:
    """A fresh copy of the synthetic database: nothing computed yet, no watermark, no runs."""
    with postgres_database(template=synthetic_template) as url:
        yield SyntheticDatabase(url, SYNTHETIC_SPEC)
