"""Fixtures of the observability tests: a real Pushgateway per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.servers import pushgateway


@pytest.fixture
def pushgateway_url() -> Iterator[str]:
    """Fails (never skips) when the binary is missing, naming the apt-get line that installs it."""
    with pushgateway() as url:
        yield url
