"""The job under the least-privileged role that sql/postgresql/roles.sql sets up, and what a
run says when the database refuses it something (PostgreSQL, real roles, no mocks).

Each test gets a throwaway database, migrated by the owner (root), in which PUBLIC keeps
none of PostgreSQL's default grants (CONNECT and TEMPORARY on the database, USAGE on schema
public): whatever the job's role can do there, roles.sql granted it. The role is created by
roles.sql itself, with a unique name, and dropped afterwards.

- The role runs everything an operator runs: `migrate` with nothing to do (no CREATE
  anywhere), a full and an incremental `once` (capture triggers on), `health` and `show`.
- Without TEMPORARY on the database, a run fails at once with exit 77 naming the privilege
  and the database, and never retries it as a connection problem.
- Without SELECT on one of the job's tables (or USAGE on its schema), a run fails with exit
  77 naming the table (or schema) and the privilege, not "run migrate" (exit 3).
- A worker connection the server terminates mid-statement: the retry's log line carries the
  server's cause, not the driver's echo of the statement.
"""

from __future__ import annotations

import re
import subprocess
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import adbc_driver_postgresql.dbapi as pg
import pytest

from montage_vec.stores.migrations import MIGRATIONS_TABLE
from montage_vec.stores.tables import JOB_TABLES
from tests.support.cli import RunCli, run_once
from tests.support.cluster import client_program
from tests.support.data import (
    AS_OF,
    Checkins,
    checkin,
    days,
    expected_montages,
    load_checkins,
    new_id,
    stored_montages,
    watermark,
)
from tests.support.database import admin_execute, execute, query
from tests.support.interference import HANG_GUARD, terminate, waiting_job_connections
from tests.support.processes import wait_until

pytestmark = pytest.mark.postgres

ROLES_SQL = Path(__file__).resolve().parents[2] / "sql" / "postgresql" / "roles.sql"
EXIT_PERMISSION = 77
RETRYING = "transient error; retrying the chunk on a new connection"
TERMINATED = "terminating connection due to administrator command"


@dataclass(frozen=True)
class JobRole:
    name: str
    url: str  # DATABASE_URL as the role
    owner_url: str  # the same database as its owner
    database: str


def apply_roles_sql(owner_url: str, role: str) -> None:
    """roles.sql as an operator runs it: psql, as the owner, naming the role (the rest defaulted)."""
    psql = client_program("psql")  # MissingProgram saying what to install
    completed = subprocess.run(
        [str(psql), "-X", "-q", owner_url, "-v", f"role={role}", "-f", str(ROLES_SQL)],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        check=False,
    )
    assert completed.returncode == 0, f"roles.sql failed:\n{completed.stdout}\n{completed.stderr}"


@pytest.fixture
def job_role(postgres_url: str) -> Iterator[JobRole]:
    """A migrated database with no grants to PUBLIC, and a login role set up by roles.sql."""
    database = postgres_url.rsplit("/", 1)[1]
    role = f"montage_job_{uuid.uuid4().hex[:10]}"
    load_checkins(postgres_url, [])  # migrates, as the owner
    execute(
        postgres_url,
        f'REVOKE ALL ON DATABASE "{database}" FROM PUBLIC',
        'REVOKE ALL ON SCHEMA "public" FROM PUBLIC',
    )
    try:
        apply_roles_sql(postgres_url, role)
        yield JobRole(role, postgres_url.replace("root@", f"{role}@", 1), postgres_url, database)
    finally:
        admin_execute(f"SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE usename = '{role}'")
        if query(postgres_url, f"SELECT count(*) AS n FROM pg_roles WHERE rolname = '{role}'")["n"][0]:
            execute(postgres_url, f'DROP OWNED BY "{role}"')
            admin_execute(f'DROP ROLE "{role}"')


def coffee_drinkers(url: str, users: int = 3) -> list[dict[str, object]]:
    rows = [
        checkin(user, AS_OF - days(i + 1), tags=["coffee"])
        for user in sorted(new_id() for _ in range(users))
        for i in range(3)
    ]
    load_checkins(url, rows)
    return rows


# -- the role roles.sql sets up ---------------------------------------------------------------------


def test_roles_sql_names_every_job_table() -> None:
    """roles.sql grants on the job's tables by name: every table the job has must be listed."""
    listed = re.search(r"^\\set job_tables '\{(?P<names>[^}]*)\}'$", ROLES_SQL.read_text(), re.MULTILINE)
    assert listed is not None, "roles.sql lists the job's tables in `\\set job_tables '{...}'`"
    assert set(JOB_TABLES) <= set(listed["names"].split(","))
    assert MIGRATIONS_TABLE not in listed["names"].split(","), "the job only reads the migrations table"


def test_the_role_runs_migrate_once_health_and_show(job_role: JobRole, run_cli: RunCli) -> None:
    rows = coffee_drinkers(job_role.owner_url)
    env = {"DATABASE_URL": job_role.url}
    privileges = query(
        job_role.owner_url,
        f"""SELECT has_database_privilege('{job_role.name}', current_database(), 'CREATE') AS on_database,
                   has_schema_privilege('{job_role.name}', 'public', 'CREATE') AS on_schema""",
    ).row(0)
    assert privileges == (False, False), "the role may create nothing"

    migrated = run_cli("migrate", env=env)
    assert migrated.exit_code == 0, migrated.everything()
    assert migrated.log("schema migrated")["applied"] == []

    full = run_once(run_cli, job_role.url, "--full")
    assert full.log("Batch job completed")["processed"] == 3
    assert stored_montages(job_role.owner_url) == expected_montages(rows, AS_OF)

    # The application writes (as the owner); the capture triggers record it for the role's run.
    changed = str(rows[0]["user_id"])
    newer = [checkin(changed, AS_OF - days(0.5), tags=["tea"])]
    load_checkins(job_role.owner_url, newer)
    incremental = run_once(run_cli, job_role.url)
    summary = incremental.log("Batch job completed")
    assert (summary["mode"], summary["processed"]) == ("incremental", 1)
    assert stored_montages(job_role.owner_url) == expected_montages(rows + newer, AS_OF)

    healthy = run_cli("health", env=env)
    assert healthy.exit_code == 0, healthy.everything()
    assert "Health check passed" in healthy.stdout

    shown = run_cli("show", "--user-id", changed, env=env)
    assert shown.exit_code == 0, shown.everything()
    assert f"user {changed}: 2 montage(s)" in shown.stdout, (
        shown.stdout
    )  # general, and coffee (tea once is no interest)
    assert "interest 'coffee': 3 item(s), valid until " in shown.stdout, shown.stdout


# -- what a refused privilege says ------------------------------------------------------------------


def test_without_temporary_the_run_fails_with_exit_77_naming_it(job_role: JobRole, run_cli: RunCli) -> None:
    """Chunks stage rows in temporary tables: without TEMPORARY the first write is refused.
    That is final (exit 77), not a connection problem to retry."""
    coffee_drinkers(job_role.owner_url)
    execute(job_role.owner_url, f'REVOKE TEMPORARY ON DATABASE "{job_role.database}" FROM "{job_role.name}"')

    result = run_cli("once", "--full", "--as-of", AS_OF.isoformat(), env={"DATABASE_URL": job_role.url})

    assert result.exit_code == EXIT_PERMISSION, result.everything()
    assert "TEMPORARY" in result.stderr and job_role.database in result.stderr, result.stderr
    assert "(42501)" in result.stderr, result.stderr
    assert RETRYING not in result.messages()
    assert result.log("Batch job failed")["error_type"] == "PermissionStoreError", result.everything()
    assert watermark(job_role.owner_url) is None


@pytest.mark.parametrize(
    ("revoke", "named"),
    [
        ('REVOKE SELECT ON "montage_items" FROM "{role}"', ("SELECT", "montage_items")),
        (f'REVOKE SELECT ON "{MIGRATIONS_TABLE}" FROM "{{role}}"', ("SELECT", MIGRATIONS_TABLE)),
        ('REVOKE USAGE ON SCHEMA "public" FROM "{role}"', ("USAGE", "schema")),
    ],
    ids=["a job table", "the migrations table", "the job's schema"],
)
def test_an_unreadable_job_table_fails_with_exit_77_not_run_migrate(
    job_role: JobRole, run_cli: RunCli, revoke: str, named: tuple[str, str]
) -> None:
    """The table is there but the role may not read it: that is a grant to fix (exit 77, naming
    the table and the privilege), not a migration to run (exit 3)."""
    coffee_drinkers(job_role.owner_url)
    execute(job_role.owner_url, revoke.format(role=job_role.name))

    result = run_cli("once", "--full", "--as-of", AS_OF.isoformat(), env={"DATABASE_URL": job_role.url})

    assert result.exit_code == EXIT_PERMISSION, result.everything()
    for word in named:
        assert word in result.stderr, result.stderr
    assert "migrate" not in result.stderr and "missing" not in result.stderr, result.stderr
    assert result.log("Batch job failed")["error_type"] == "PermissionStoreError"
    assert watermark(job_role.owner_url) is None
    health = run_cli("health", env={"DATABASE_URL": job_role.url})
    assert health.exit_code == 1 and named[1] in health.stdout, health.everything()


# -- a connection the server terminates -------------------------------------------------------------


def test_a_terminated_worker_is_logged_with_the_servers_cause(postgres_url: str, run_cli: RunCli) -> None:
    """The worker is killed inside its write, while a statement waits on a row lock (so in the
    statement's execution, where the driver's text starts with the statement, newline first).
    The retry's log line says why the server ended it, and shows no SQL."""
    data = Checkins(postgres_url)
    user = new_id()
    for age in (3, 2):
        data.add(user, AS_OF - days(age), tags=["coffee"])
    run_once(run_cli, postgres_url, "--full")
    data.add(user, AS_OF - days(1), tags=["coffee"])  # the montages change: their items are replaced

    holder = pg.connect(postgres_url, autocommit=True)
    cursor = holder.cursor()
    released = threading.Event()

    def release() -> None:
        if not released.is_set():
            released.set()
            cursor.execute("ROLLBACK")

    def kill_the_waiting_worker() -> int:
        try:
            wait_until(lambda: waiting_job_connections(postgres_url) > 0, "the chunk waiting on the items' row locks")
            return terminate(postgres_url, "workers")
        finally:
            release()  # the retry must get through

    try:
        cursor.execute("BEGIN")
        cursor.execute('SELECT 1 FROM "montage_items" FOR UPDATE')
        cursor.fetchall()
        with ThreadPoolExecutor(1, thread_name_prefix="interference") as pool:
            killing = pool.submit(kill_the_waiting_worker)
            result = run_cli(
                "once", "--user-id", user, "--as-of", AS_OF.isoformat(), env={"DATABASE_URL": postgres_url}
            )
        assert killing.result(timeout=HANG_GUARD) == 1, "exactly the worker (the lock holder keeps its session)"
    finally:
        release()
        cursor.close()
        holder.close()

    assert result.exit_code == 0, result.everything()
    error = result.log(RETRYING)["error"]
    assert TERMINATED in error, error
    assert "Failed to execute query '" not in error and "DELETE" not in error, error
    assert stored_montages(postgres_url) == expected_montages(data.all(), AS_OF)
