"""The test session's PostgreSQL server: a cluster of its own unless MONTAGE_TEST_PG_URL names one.

A pytest plugin (registered by tests/conftest.py). The controlling pytest process, the one
that runs `-n 0` tests itself or spawns the pytest-xdist workers, starts one TemporaryCluster
from the installed server binaries before any test runs, and exports its admin URL as
MONTAGE_TEST_PG_URL, which tests.support.database reads and the workers inherit. It stops
and removes the cluster when pytest ends, also after Ctrl-C or a failed run.

With MONTAGE_TEST_PG_URL already set, the tests use that server instead (a superuser role
named `root` that logs in without a password, as the tests build URLs for it), and nothing
is started. Without it and without the server binaries, the session fails at once saying
what to install.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import pytest

from tests.support.cluster import TemporaryCluster
from tests.support.database import ADMIN_URL_VARIABLE
from tests.support.processes import MissingProgram

# A job opens the lock's connection plus one per chunk in flight and some tests run four jobs
# at once; measured with connection logging, two workers peaked at 10 client sessions in
# tests/stores and 8 in tests/job + tests/runtime. Debian's default 100 would do; 200 leaves
# room for more workers (`-n 8`).
SETTINGS = {"max_connections": "200"}
ATTEMPTS = 3  # a free port can be taken by another process before the server binds it
CLUSTER = pytest.StashKey[TemporaryCluster]()


def _is_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput") and "PYTEST_XDIST_WORKER" not in os.environ


def pytest_configure(config: pytest.Config) -> None:
    if not _is_controller(config) or os.environ.get(ADMIN_URL_VARIABLE) or config.option.help:
        return
    cluster = _started_cluster()
    config.stash[CLUSTER] = cluster
    os.environ[ADMIN_URL_VARIABLE] = cluster.url


def pytest_unconfigure(config: pytest.Config) -> None:
    cluster = config.stash.get(CLUSTER, None)
    if cluster is None:
        return
    del config.stash[CLUSTER]
    if os.environ.get(ADMIN_URL_VARIABLE) == cluster.url:
        del os.environ[ADMIN_URL_VARIABLE]
    _discard(cluster)


def _started_cluster() -> TemporaryCluster:
    failure = ""
    for _ in range(ATTEMPTS):
        try:
            cluster = TemporaryCluster(SETTINGS)
        except MissingProgram as exc:
            raise pytest.UsageError(
                f"{exc}\n(or set {ADMIN_URL_VARIABLE}=postgresql://root@HOST:PORT/postgres to use a running server)"
            ) from None
        try:
            cluster.start()
        except subprocess.CalledProcessError as exc:
            failure = f"{' '.join(map(str, exc.cmd))} failed ({exc.returncode}):\n{exc.stderr}\n{cluster.log_tail()}"
            _discard(cluster)
            continue
        except BaseException:  # Ctrl-C while starting: leave nothing running
            _discard(cluster)
            raise
        return cluster
    raise pytest.UsageError(f"the test session's PostgreSQL cluster did not start:\n{failure}")


def _discard(cluster: TemporaryCluster) -> None:
    """Stop the server (ending the sessions still open), however far it got, and delete its files."""
    with _no_keyboard_interrupt():
        try:
            cluster.stop("fast")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            with suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
                cluster.stop("immediate")
        cluster.remove()


@contextmanager
def _no_keyboard_interrupt() -> Iterator[None]:
    """Ctrl-C ignored for a moment: a second one while pg_ctl stops the server must not leave it
    running with its directory deleted (pg_ctl ignores it too, inheriting the setting)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
