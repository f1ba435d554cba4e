"""The benchmark's "CPU" table: a finished child process's server work counts (its backend has exited by
the second snapshot), and a server elsewhere is not guessed at. No timings are asserted: only that work
the test made the server do shows up as server CPU."""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchmarks.cpu_stats import CpuTimes, cpu_times, is_local, render_cpu

# A child whose session makes the server sum ten million numbers, then ends (so does its backend).
CHILD = """
import sys
import adbc_driver_postgresql.dbapi as pg
with pg.connect(sys.argv[1], autocommit=True) as connection, connection.cursor() as cursor:
    cursor.execute("SELECT sum(x) FROM generate_series(1, 10000000) AS x")
    cursor.fetchall()
"""


@pytest.mark.postgres
def test_an_ended_sessions_server_work_is_counted(postgres_url: str) -> None:
    before = cpu_times(local_server=True)
    subprocess.run([sys.executable, "-c", CHILD, postgres_url], check=True, timeout=120)
    spent = cpu_times(local_server=True).minus(before)
    assert spent.server is not None
    assert spent.server >= 0.1  # the sum runs in the backend, which exited before the snapshot
    assert spent.client > 0  # the waited-for child's own start-up and driver work
    assert spent.busy <= spent.capacity


def test_a_remote_server_is_not_counted() -> None:
    assert cpu_times(local_server=False).server is None
    assert is_local("postgresql://root@127.0.0.1:5432/db")
    assert is_local("postgresql:///db?host=/var/run/postgresql")
    assert not is_local("postgresql://app@db.internal:5432/db")


def test_the_table_gives_the_least_wall_time_the_cpu_allows() -> None:
    run = CpuTimes(wall=10.0, client=6.0, server=8.0, busy=18.0, capacity=20.0)
    duck = CpuTimes(wall=4.0, client=3.0, server=None, busy=3.5, capacity=8.0)
    lines = render_cpu([("full", run), ("duck", duck)], cores=2)
    assert "| full | 10.00 s | 6.0 s | 8.0 s | 7.00 s | 90% |" in lines
    assert "| duck | 4.00 s | 3.0 s | - | 1.50 s | 44% |" in lines
    assert render_cpu([], cores=2) == []
