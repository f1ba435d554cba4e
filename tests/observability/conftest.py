"""Fixtures of the observability tests: a real Pushgateway per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.servers import PUSHGATEWAY, pushgateway, pushgateway_binary


@pytest.fixture
def pushgateway_url() -> Iterator[str]:
    if pushgateway_binary() is None:
        pytest.skip(f"the {PUSHGATEWAY} binary is not on PATH (Debian: apt-get install {PUSHGATEWAY})")
    with pushgateway() as url:
        yield url
