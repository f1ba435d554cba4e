"""Fixtures of the runtime tests: a PostgreSQL copy of a synthetic data set per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.data import SyntheticDatabase, load_frame, synthetic
from tests.support.database import postgres_database

# Enough users for several chunks of a few hundred; the tests hold chunks at a WriteGate
# instead of counting on a run being slow, so the data set can stay small.
SYNTHETIC = {"users": 1200, "seed": 7, "mean_checkins_per_user": 3.0}


@pytest.fixture(scope="session")
def synthetic_template() -> Iterator[str]:
    """A migrated database holding SYNTHETIC's check-ins, loaded once per session (per xdist
    worker) and copied for each test."""
    with postgres_database(prefix="montage_rt_template") as url:
        load_frame(url, synthetic(**SYNTHETIC))
        yield url.rsplit("/", 1)[1]


@pytest.fixture
def synthetic_db(synthetic_template: str) -> Iterator[SyntheticDatabase]:
    """A fresh copy of the synthetic database: nothing computed yet, no watermark, no runs."""
    with postgres_database(template=synthetic_template, prefix="montage_rt") as url:
        yield SyntheticDatabase(url, **SYNTHETIC)
