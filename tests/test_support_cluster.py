"""The test session's own PostgreSQL server (tests.support.session_cluster), and what the
support code says when a program the tests run is not installed: the line that installs it."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.support import cluster, servers, session_cluster
from tests.support.database import ADMIN_URL_VARIABLE, admin_url, pg_host, pg_port, query
from tests.support.processes import MissingProgram


@pytest.fixture
def nothing_installed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No PostgreSQL server binaries anywhere, and an empty PATH."""
    monkeypatch.setattr(cluster, "server_bin_directory", lambda: None)
    monkeypatch.setenv("PATH", str(tmp_path))


def controller_config() -> Any:
    """What pytest_configure reads of a controller's (not a worker's) pytest.Config."""
    return SimpleNamespace(option=SimpleNamespace(help=False), stash=pytest.Stash())


@pytest.mark.postgres
def test_the_session_server_is_the_one_the_tests_use() -> None:
    assert admin_url() == os.environ[ADMIN_URL_VARIABLE]
    assert query(admin_url(), "SELECT current_setting('port') AS port")["port"][0] == str(pg_port())
    assert pg_host() in admin_url()


def test_without_server_binaries_the_session_fails_at_once_saying_what_to_install(
    nothing_installed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ADMIN_URL_VARIABLE)
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    config = controller_config()

    with pytest.raises(pytest.UsageError) as raised:
        session_cluster.pytest_configure(config)

    message = str(raised.value)
    assert "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install -y postgresql\n" in message
    assert f"{ADMIN_URL_VARIABLE}=postgresql://root@HOST:PORT/postgres" in message
    assert ADMIN_URL_VARIABLE not in os.environ
    assert config.stash.get(session_cluster.CLUSTER, None) is None


def test_a_given_server_needs_no_binaries(nothing_installed: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ADMIN_URL_VARIABLE, "postgresql://root@db.example:6543/postgres")
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    config = controller_config()

    session_cluster.pytest_configure(config)

    assert os.environ[ADMIN_URL_VARIABLE] == "postgresql://root@db.example:6543/postgres"
    assert (pg_host(), pg_port()) == ("db.example", 6543)
    assert config.stash.get(session_cluster.CLUSTER, None) is None


def test_a_cluster_of_a_tests_own_says_what_to_install(nothing_installed: None) -> None:
    with pytest.raises(MissingProgram, match=r"\(initdb, pg_ctl\) not found: apt-get install -y postgresql$"):
        cluster.TemporaryCluster()


def test_psql_missing_says_what_to_install(nothing_installed: None) -> None:
    with pytest.raises(MissingProgram, match=r"psql not found: apt-get install -y postgresql-client$"):
        cluster.client_program("psql")


def test_the_pushgateway_missing_says_what_to_install(nothing_installed: None) -> None:
    with (
        pytest.raises(
            MissingProgram,
            match=r"prometheus-pushgateway not found on PATH: apt-get install -y prometheus-pushgateway$",
        ),
        servers.pushgateway(),
    ):
        pass
