"""Fixtures of the observability tests: a real Pushgateway per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.runtime._procs import pushgateway


@pytest.fixture
def pushgateway_url() -> Iterator[str]:
    with pushgateway() as url:
        yield url
