"""Adopting an existing application database (MONTAGE_SOURCE, MONTAGE_SCHEMA, PGOPTIONS), against
real PostgreSQL (and DuckDB where the behaviour is shared); no mocks.

Covers:
- README's worked example (`app.posts`: another shape, jsonb tags and widgets, no deleted_at,
  no privacy, hard deletes only; the view `app.montage_checkins` mapping it), run verbatim, with the job's
  tables in their own schema: `migrate` creates nothing in `app` and no `checkins` anywhere,
  runs equal the engine's recompute, and a hard DELETE and an UPDATE of tags are reflected by
  the next incremental run; quoted, mixed-case names end to end;
- an application table named `montages`: `migrate` refuses it (exit 3) naming the table, the
  missing columns and MONTAGE_SCHEMA, and creates nothing; `health` fails naming it; with
  MONTAGE_SCHEMA the job lives beside it and never touches it;
- a source that does not exist, or lacks a contract column: `once`, `health` and `migrate`
  fail naming it (both backends); on DuckDB, MONTAGE_SCHEMA named like the database file;
- `migrate --source-indexes`: a no-op on a view; on a table it creates the recommended
  indexes (only those missing), reports them afterwards, silences `health`'s warnings, and
  rebuilds an index left invalid; writers of the table never wait while it runs (with the
  same harness proving that a plain CREATE INDEX does make them wait);
- `migrate --capture-triggers`: three triggers on a table, watermarks forgotten (next run is
  full), idempotent, a no-op on a view; an application role with no privilege on the job's
  schema keeps writing and its changes are captured (SECURITY DEFINER);
- PGOPTIONS: merged into the session (search_path resolves an unqualified source), TimeZone
  always UTC, options in DATABASE_URL win; `session_uri` itself.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import adbc_driver_postgresql.dbapi as pg
import pytest

from montage_vec.config import load_settings
from montage_vec.stores import open_store
from montage_vec.stores.backends.postgres import session_uri
from montage_vec.stores.change_sql import CAPTURE_TRIGGERS
from tests.support.cli import CliResult, RunCli, run_once
from tests.support.data import (
    AS_OF,
    JOB_TABLES,
    Rows,
    checkin,
    days,
    expected_from_frame,
    expected_montages,
    new_id,
    stored_montages,
)
from tests.support.database import admin_execute, execute, pg_host, query
from tests.support.database import sql_literal as literal
from tests.support.processes import JobProcess, job_env, wait_until

HANG_GUARD = 60.0  # seconds; only ever a guard against hanging, never a measurement
EXIT_SCHEMA = 3

JOB_SCHEMA = "montage"
VIEW = "app.montage_checkins"  # README, "Adopting an application's database"
ADOPT_VIEW = {"MONTAGE_SCHEMA": JOB_SCHEMA, "MONTAGE_SOURCE": VIEW}
ADOPT_TABLE = {"MONTAGE_SCHEMA": JOB_SCHEMA, "MONTAGE_SOURCE": "app.checkins"}
INDEX_NAMES = {"user_id": "checkins_montage_vec_user_id_idx", "updated_at": "checkins_montage_vec_updated_at_idx"}
README = Path(__file__).resolve().parents[2] / "README.md"

# -- an application's own schema ----------------------------------------------------------------


def readme_example() -> list[str]:
    """The statements of README's worked example ("Adopting an application's database"): another
    application's `app.posts` (jsonb tags and widgets, hard deletes only, no privacy levels) and
    the view `app.montage_checkins` that maps it to the contract. The tests run exactly that
    text, so the README's example is kept working."""
    section = README.read_text(encoding="utf-8").split("\n## Adopting an application's database\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    block = section.split("```sql\n", 1)[1].split("```", 1)[0]
    statements = [statement.strip() for statement in block.split(";\n") if statement.strip()]
    assert any(statement.startswith(f"CREATE VIEW {VIEW} ") for statement in statements), statements
    return statements


def app_posts_schema() -> list[str]:
    return ["CREATE SCHEMA app", *readme_example()]


def contract_table(relation: str, *, primary_key: bool = True) -> str:
    """A contract-shaped check-ins table of the application's (both backends), with no index but the key."""
    key = " PRIMARY KEY" if primary_key else ""
    return f"""CREATE TABLE {relation} (
        id uuid{key}, user_id uuid NOT NULL, created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL,
        deleted_at timestamptz, privacy text DEFAULT 'public', text_content text, media_url text, media_type text,
        thumbnail_url text, location_name text, tags text[]
    )"""


def insert_checkins(url: str, relation: str, rows: list[dict[str, Any]]) -> None:
    """Contract rows (tests.support.data.checkin) into an application's table, with plain SQL."""
    columns = list(rows[0])
    values = ", ".join("(" + ", ".join(literal(row[column]) for column in columns) + ")" for row in rows)
    execute(url, f"INSERT INTO {relation} ({', '.join(columns)}) VALUES {values}")


@dataclass
class Post:
    """One row of the README's app.posts; `photo` and `place` live in its `widgets` jsonb."""

    id: str
    author_id: str
    created_at: datetime
    updated_at: datetime
    body: str | None = None
    photo: str | None = None
    thumb: str | None = None
    place: str | None = None
    tags: list[str] = field(default_factory=list)

    def widgets(self) -> dict[str, Any] | None:
        widgets: dict[str, Any] = {}
        if self.photo is not None:
            widgets["photo"] = {"url": self.photo, "thumb": self.thumb}
        if self.place is not None:
            widgets["place"] = {"name": self.place, "lat": 38.7}
        return {**widgets, "layout": "card"} if widgets else None

    def as_checkin(self) -> dict[str, Any]:
        """What the view must show for this post, as the engine's input row."""
        return checkin(
            self.author_id,
            self.created_at,
            id=self.id,
            updated_at=self.updated_at,
            text_content=self.body,
            media_url=self.photo,
            media_type="image" if self.photo is not None else None,
            thumbnail_url=self.thumb,
            location_name=self.place,
            tags=list(self.tags),
        )


@dataclass
class AppPosts:
    """The application's posts, mirrored in Python; every write goes to app.posts with plain SQL."""

    url: str
    clock: datetime = AS_OF - days(40)
    posts: dict[str, Post] = field(default_factory=dict)

    def tick(self, not_before: datetime | None = None) -> datetime:
        """The application's clock: 7 minutes on, never before `not_before`, never backwards."""
        self.clock = max(self.clock + timedelta(minutes=7), not_before or self.clock)
        return self.clock

    def add(self, author_id: str, age_days: float, **fields: Any) -> Post:
        created_at = AS_OF - days(age_days)
        post = Post(new_id(), author_id, created_at, self.tick(not_before=created_at), **fields)
        widgets = post.widgets()
        execute(
            self.url,
            "INSERT INTO app.posts (id, author_id, created_at, updated_at, body, tags, widgets) VALUES ("
            f"{literal(post.id)}, {literal(post.author_id)}, {literal(post.created_at)}, {literal(post.updated_at)}, "
            f"{literal(post.body)}, {literal(json.dumps(post.tags))}::jsonb, "
            f"{literal(json.dumps(widgets)) if widgets else 'NULL'}::jsonb)",
        )
        self.posts[post.id] = post
        return post

    def delete(self, post_id: str) -> None:
        execute(self.url, f"DELETE FROM app.posts WHERE id = {literal(post_id)}")
        del self.posts[post_id]

    def retag(self, post_id: str, tags: list[str]) -> None:
        post = self.posts[post_id]
        post.tags, post.updated_at = tags, self.tick()
        execute(
            self.url,
            f"UPDATE app.posts SET tags = {literal(json.dumps(tags))}::jsonb, updated_at = {literal(post.updated_at)} "
            f"WHERE id = {literal(post_id)}",
        )

    def checkins(self) -> list[dict[str, Any]]:
        return [post.as_checkin() for post in self.posts.values()]


# -- reading the catalog --------------------------------------------------------------------------

APP_OBJECTS = """
SELECT 'relation' AS what, c.relname::text || ':' || c.relkind::text AS name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'app'
UNION ALL
SELECT 'index', indexname::text || ' ' || indexdef FROM pg_indexes WHERE schemaname = 'app'
UNION ALL
SELECT 'trigger', t.tgname::text
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'app'
UNION ALL
SELECT 'function', p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'app'
UNION ALL
SELECT 'column',
       table_name::text || '.' || column_name::text || ' ' || data_type::text || ' ' || coalesce(column_default, '')
FROM information_schema.columns WHERE table_schema = 'app'
"""


def rows_of(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Every row of a query, as sorted tuples."""
    return sorted(tuple(row) for row in query(url, sql).iter_rows())


def app_objects(url: str) -> list[tuple[Any, ...]]:
    """Everything in schema `app`: relations, indexes, triggers, functions, columns."""
    return rows_of(url, APP_OBJECTS)


def tables_by_schema(url: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    sql = """SELECT table_schema, table_name FROM information_schema.tables
             WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"""
    for schema, table in rows_of(url, sql):
        found.setdefault(schema, set()).add(table)
    return found


def relations_named(url: str, name: str) -> list[tuple[Any, ...]]:
    """(schema, kind) of every relation of that name, in any schema."""
    sql = f"""SELECT n.nspname::text, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relname = '{name}'"""
    return rows_of(url, sql)


def valid_index_leads(url: str, relation: str) -> dict[str, str]:
    """Index name -> leading column, for the valid indexes of `relation`."""
    sql = f"""SELECT ic.relname::text AS index, a.attname::text AS lead FROM pg_index i
              JOIN pg_class ic ON ic.oid = i.indexrelid
              JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
              WHERE i.indrelid = '{relation}'::regclass AND i.indisvalid"""
    return dict(rows_of(url, sql))


def index_definition(url: str, schema: str, index: str) -> str:
    frame = query(url, f"SELECT indexdef FROM pg_indexes WHERE schemaname = '{schema}' AND indexname = '{index}'")
    return str(frame["indexdef"][0])


def triggers_on(url: str, relation: str) -> list[str]:
    sql = f"SELECT tgname::text FROM pg_trigger WHERE tgrelid = '{relation}'::regclass AND NOT tgisinternal ORDER BY 1"
    return [name for (name,) in rows_of(url, sql)]


def in_schema(url: str, schema: str) -> str:
    """The same database, with `schema` first on the search_path (to read the job's tables unqualified)."""
    return url + "?options=" + quote("-c search_path=" + schema.replace(" ", "\\ "))


def job_tables_of(url: str, schema: str = JOB_SCHEMA) -> Rows:
    """stored_montages of the job's tables in `schema`."""
    return stored_montages(in_schema(url, schema))


def job_count(url: str, table: str, schema: str = JOB_SCHEMA) -> int:
    return int(query(url, f'SELECT count(*) AS n FROM "{schema}"."{table}"')["n"][0])


def summary(result: CliResult) -> dict[str, Any]:
    return result.log("Batch job completed")


def health_lines(result: CliResult, kind: str) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith(f"health check {kind}:")]


# -- 1. an application-shaped schema behind a view --------------------------------------------------

ALICE, BOB, CAROL, DAVE = (str(uuid.UUID(int=n, version=4)) for n in (0xA11CE, 0xB0B, 0xCA401, 0xDA7E))


def seed_posts(url: str) -> AppPosts:
    posts = AppPosts(url)
    for age in (1, 3, 5, 8, 13):  # interests coffee and travel
        posts.add(ALICE, age, body=f"day -{age}", tags=["Coffee", " travel ", "coffee"], place="Lisbon")
    posts.add(ALICE, 2, photo="https://cdn.example/alice.jpg", thumb="https://cdn.example/alice_t.jpg", tags=["travel"])
    posts.add(ALICE, 60, body="long ago", tags=["coffee"])  # outside the window, still an item
    for age in (2, 4):
        posts.add(BOB, age, body="espresso", tags=["coffee"])
    posts.add(BOB, 6, body="untagged")  # retagged later: Bob's third coffee
    for age in (1, 2, 3, 4):
        posts.add(CAROL, age, photo=f"https://cdn.example/c{age}.png", tags=["Hiking", "hiking"])
    posts.add(DAVE, 9, body="only post", place="Porto")
    return posts


@pytest.mark.postgres
def test_view_over_an_application_table_is_adopted_without_touching_the_application(
    postgres_url: str, run_cli: RunCli
) -> None:
    url = postgres_url
    execute(url, *app_posts_schema())
    posts = seed_posts(url)
    before = app_objects(url)

    migrated = run_cli("migrate", env={"DATABASE_URL": url, **ADOPT_VIEW})
    assert migrated.exit_code == 0, migrated.everything()
    assert "source/own_checkins" not in migrated.log("schema migrated")["applied"]
    assert app_objects(url) == before, "migrate changed something in the application's schema"
    assert relations_named(url, "checkins") == []
    tables = tables_by_schema(url)
    assert set(JOB_TABLES) <= tables[JOB_SCHEMA]
    assert tables.get("public", set()) == set()
    assert tables["app"] == {"posts", "montage_checkins"}  # information_schema lists views too

    health = run_cli("health")
    assert health.exit_code == 0, health.everything()
    assert "Health check passed" in health.stdout
    assert health_lines(health, "warning") == []  # a view: no index to recommend, no trigger possible

    full = run_once(run_cli, url, "--full")
    assert summary(full)["mode"] == "full"
    stored = job_tables_of(url)
    assert stored == expected_montages(posts.checkins(), AS_OF)
    interests = {(user, interest) for user, kind, interest, *_ in stored[0] if kind == "interest"}
    assert interests == {(ALICE, "coffee"), (ALICE, "travel"), (CAROL, "hiking")}

    # Hard deletes: one of Alice's shown posts, and Dave's only post (he must lose his montage).
    shown = next(post for post in posts.posts.values() if post.author_id == ALICE and post.photo)
    posts.delete(shown.id)
    posts.delete(next(post.id for post in posts.posts.values() if post.author_id == DAVE))
    incremental = run_once(run_cli, url)
    assert summary(incremental)["mode"] == "incremental"
    assert job_tables_of(url) == expected_montages(posts.checkins(), AS_OF)
    assert DAVE not in {row[0] for row in job_tables_of(url)[0]}

    # An UPDATE of the tags, with updated_at bumped as the application does.
    untagged = next(post.id for post in posts.posts.values() if post.author_id == BOB and not post.tags)
    posts.retag(untagged, ["COFFEE", "decaf"])
    retagged = run_once(run_cli, url)
    assert summary(retagged)["mode"] == "incremental"
    stored = job_tables_of(url)
    assert stored == expected_montages(posts.checkins(), AS_OF)
    assert (BOB, "interest", "coffee") in {row[:3] for row in stored[0]}

    assert app_objects(url) == before
    assert relations_named(url, "checkins") == []


@pytest.mark.postgres
def test_quoted_mixed_case_names_work_end_to_end(postgres_url: str, run_cli: RunCli) -> None:
    """A source and a job schema that need quoting: `"My App"."Check-ins"` and `"Montage Job"`."""
    url = postgres_url
    execute(url, 'CREATE SCHEMA "My App"', contract_table('"My App"."Check-ins"'))
    rows = [checkin(ALICE, AS_OF - days(n), tags=["Tea"]) for n in (1, 2, 3)] + [checkin(BOB, AS_OF - days(4))]
    insert_checkins(url, '"My App"."Check-ins"', rows)
    env = {"DATABASE_URL": url, "MONTAGE_SOURCE": '"My App"."Check-ins"', "MONTAGE_SCHEMA": '"Montage Job"'}

    migrated = run_cli("migrate", env=env)
    assert migrated.exit_code == 0, migrated.everything()
    run_once(run_cli, url, "--full", env=env)

    assert stored_montages(in_schema(url, '"Montage Job"')) == expected_montages(rows, AS_OF)
    assert set(tables_by_schema(url)) == {"My App", "Montage Job"}
    assert relations_named(url, "checkins") == []


# -- 2. an application table with the job's name -----------------------------------------------------

MONTAGE_COLUMNS = ("user_id", "kind", "interest", "item_count", "generated_at", "cache_expires_at", "valid_until",
                   "job_id")  # fmt: skip


def conflicting_montages(url: str) -> None:
    execute(
        url,
        "CREATE TABLE public.montages (id serial PRIMARY KEY, title text)",
        "INSERT INTO public.montages (title) VALUES ('summer'), ('winter')",
    )


def public_montages(url: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    columns = rows_of(
        url,
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name = 'montages'",
    )
    return columns, rows_of(url, "SELECT id, title FROM public.montages")


@pytest.mark.postgres
def test_application_table_named_montages_is_refused_and_nothing_is_created(postgres_url: str, run_cli: RunCli) -> None:
    url = postgres_url
    conflicting_montages(url)
    before = (tables_by_schema(url), public_montages(url), rows_of(url, "SELECT nspname FROM pg_namespace"))

    result = run_cli("migrate", env={"DATABASE_URL": url})

    assert result.exit_code == EXIT_SCHEMA, result.everything()
    message = result.stderr
    assert "montages" in message
    for column in MONTAGE_COLUMNS:
        assert column in message, f"missing column {column} not named:\n{message}"
    assert "MONTAGE_SCHEMA" in message
    after = (tables_by_schema(url), public_montages(url), rows_of(url, "SELECT nspname FROM pg_namespace"))
    assert after == before, "a refused migrate created or changed something"


@pytest.mark.postgres
def test_health_on_a_database_with_an_application_montages_table_names_it(postgres_url: str, run_cli: RunCli) -> None:
    """Before any migrate, `health` must point at the real obstacle: following a bare "run migrate
    first" leads the operator into the refusal above."""
    url = postgres_url
    conflicting_montages(url)

    result = run_cli("health", env={"DATABASE_URL": url})

    assert result.exit_code == 1, result.everything()
    [failed] = health_lines(result, "failed")
    assert failed.startswith("health check failed: schema migrated: ")
    assert "montages" in failed, failed
    assert "MONTAGE_SCHEMA" in failed, failed


@pytest.mark.postgres
def test_with_montage_schema_the_job_lives_beside_the_application_table(postgres_url: str, run_cli: RunCli) -> None:
    url = postgres_url
    conflicting_montages(url)
    untouched = public_montages(url)
    env = {"DATABASE_URL": url, **ADOPT_TABLE}
    execute(url, "CREATE SCHEMA app", contract_table("app.checkins"))
    rows = [checkin(CAROL, AS_OF - days(n), tags=["chess"]) for n in (1, 2, 3)]
    insert_checkins(url, "app.checkins", rows)

    migrated = run_cli("migrate", env=env)
    assert migrated.exit_code == 0, migrated.everything()
    run_once(run_cli, url, "--full", env=env)
    health = run_cli("health", env=env)

    assert health.exit_code == 0, health.everything()
    assert public_montages(url) == untouched
    assert job_tables_of(url) == expected_montages(rows, AS_OF)
    assert job_count(url, "montages") == 2
    assert tables_by_schema(url)["public"] == {"montages"}


@pytest.mark.postgres
def test_job_tables_refused_inside_montage_schema_too(postgres_url: str, run_cli: RunCli) -> None:
    """MONTAGE_SCHEMA naming a schema where the application already keeps a `montage_items` of its own."""
    url = postgres_url
    execute(url, f"CREATE SCHEMA {JOB_SCHEMA}", f"CREATE TABLE {JOB_SCHEMA}.montage_items (sku text, qty int)")
    execute(url, "CREATE SCHEMA app", contract_table("app.checkins"))

    result = run_cli("migrate", env={"DATABASE_URL": url, **ADOPT_TABLE})

    assert result.exit_code == EXIT_SCHEMA, result.everything()
    assert "montage_items" in result.stderr
    assert "montage_id" in result.stderr
    assert tables_by_schema(url)[JOB_SCHEMA] == {"montage_items"}


# -- 3. source problems --------------------------------------------------------------------------------


def prepare_app(url: str) -> dict[str, str]:
    """Schema `app` with a contract-shaped table `app.checkins` and a view lacking `privacy`; the job migrated."""
    execute(
        url,
        "CREATE SCHEMA app",
        contract_table("app.checkins"),
        "CREATE VIEW app.checkins_v1 AS SELECT id, user_id, created_at, updated_at, deleted_at, text_content, "
        "media_url, media_type, thumbnail_url, location_name, tags FROM app.checkins",
    )
    insert_checkins(url, "app.checkins", [checkin(ALICE, AS_OF - days(1))])
    # Not `montage`: on DuckDB that is also the catalog's name (see test_duckdb_job_schema_named_like_the_file).
    return {"DATABASE_URL": url, "MONTAGE_SCHEMA": "jobs", "MONTAGE_SOURCE": "app.checkins"}


@pytest.mark.parametrize(
    ("source", "named", "advice"),
    [("app.nothing", "app.nothing", "MONTAGE_SOURCE"), ("app.checkins_v1", "privacy", "view")],
)
def test_a_bad_source_fails_a_run_naming_it(
    database_url: str, run_cli: RunCli, source: str, named: str, advice: str
) -> None:
    """A missing source names it and MONTAGE_SOURCE; a source without `privacy` names the column."""
    env = prepare_app(database_url)
    assert run_cli("migrate", env=env).exit_code == 0

    result = run_cli("once", env={**env, "MONTAGE_SOURCE": source})

    assert result.exit_code == EXIT_SCHEMA, result.everything()
    assert source in result.stderr
    assert named in result.stderr
    assert advice in result.stderr
    assert result.log("Batch job failed")["error_type"] == "SchemaStoreError"


@pytest.mark.parametrize(("source", "named"), [("app.nothing", "app.nothing"), ("app.checkins_v1", "privacy")])
def test_health_fails_on_a_bad_source_naming_it(database_url: str, run_cli: RunCli, source: str, named: str) -> None:
    env = prepare_app(database_url)
    assert run_cli("migrate", env=env).exit_code == 0

    result = run_cli("health", env={**env, "MONTAGE_SOURCE": source})

    assert result.exit_code == 1, result.everything()
    [failed] = health_lines(result, "failed")
    assert failed.startswith("health check failed: schema migrated: ")
    assert named in failed


@pytest.mark.parametrize(("source", "named"), [("app.nothing", "app.nothing"), ("app.checkins_v1", "privacy")])
def test_migrate_fails_on_a_bad_source_naming_it(database_url: str, run_cli: RunCli, source: str, named: str) -> None:
    """The feature's contract: `migrate` fails (exit 3) when the source does not exist or lacks
    contract columns, like `once` and `health`, so that a deployment's migrate step catches it."""
    env = prepare_app(database_url)

    result = run_cli("migrate", env={**env, "MONTAGE_SOURCE": source})

    assert result.exit_code == EXIT_SCHEMA, result.everything()
    assert named in result.stderr


def test_duckdb_job_schema_named_like_the_file_is_refused_clearly(run_cli: RunCli) -> None:
    """The embedded default file is ./montage.duckdb, whose catalog DuckDB calls `montage`; with
    MONTAGE_SCHEMA=montage every `"montage"."t"` would be ambiguous, so configuration refuses it
    (exit 2, naming the variable) before anything is created, and another name works."""
    execute("duckdb:///montage.duckdb", "CREATE SCHEMA app", contract_table("app.checkins"))
    rows = [checkin(ALICE, AS_OF - days(n), tags=["tea"]) for n in (1, 2, 3)]
    insert_checkins("duckdb:///montage.duckdb", "app.checkins", rows)

    refused = run_cli("migrate", env={"MONTAGE_SCHEMA": JOB_SCHEMA, "MONTAGE_SOURCE": "app.checkins"})
    assert refused.exit_code == 2, refused.everything()
    assert "MONTAGE_SCHEMA" in refused.stderr and "montage.duckdb" in refused.stderr

    env = {"MONTAGE_SCHEMA": "jobs", "MONTAGE_SOURCE": "app.checkins"}  # no DATABASE_URL: the default file
    assert run_cli("migrate", env=env).exit_code == 0
    assert run_cli("once", "--full", "--as-of", AS_OF.isoformat(), env=env).exit_code == 0
    stored = query("duckdb:///montage.duckdb", "SELECT count(*) AS n FROM montage.jobs.montages")
    assert stored["n"][0] == 2


# -- 4. migrate --source-indexes --------------------------------------------------------------------


@pytest.mark.postgres
def test_source_indexes_on_a_view_is_a_clear_no_op(postgres_url: str, run_cli: RunCli) -> None:
    url = postgres_url
    execute(url, *app_posts_schema())
    before = app_objects(url)

    result = run_cli("migrate", "--source-indexes", env={"DATABASE_URL": url, **ADOPT_VIEW})

    assert result.exit_code == 0, result.everything()
    [note] = [message for message in result.messages() if message.startswith(VIEW)]
    assert "is a view" in note
    assert "nothing to index" in note
    assert app_objects(url) == before


@pytest.mark.postgres
def test_source_indexes_created_on_a_table_then_reported_existing(postgres_url: str, run_cli: RunCli) -> None:
    url = postgres_url
    execute(url, "CREATE SCHEMA app", contract_table("app.checkins"))
    insert_checkins(url, "app.checkins", [checkin(ALICE, AS_OF - days(n)) for n in range(5)])
    env = {"DATABASE_URL": url, **ADOPT_TABLE}
    assert run_cli("migrate", env=env).exit_code == 0
    assert valid_index_leads(url, "app.checkins") == {"checkins_pkey": "id"}, "a plain migrate indexed the source"
    assert triggers_on(url, "app.checkins") == []

    warned = run_cli("health", env=env)
    assert warned.exit_code == 0, warned.everything()
    warnings = health_lines(warned, "warning")
    assert len(warnings) == 2, warned.everything()
    for column, warning in zip(("user_id", "updated_at"), warnings, strict=True):
        assert warning.startswith(
            f"health check warning: check-in source: no index on app.checkins starts with {column}"
        )
        assert "--source-indexes" in warning
    assert "Health check passed" in warned.stdout

    created = run_cli("migrate", "--source-indexes", env=env)
    assert created.exit_code == 0, created.everything()
    assert f"created index {INDEX_NAMES['user_id']} on app.checkins (user_id first)" in created.messages()
    assert f"created index {INDEX_NAMES['updated_at']} on app.checkins (updated_at first)" in created.messages()
    leads = valid_index_leads(url, "app.checkins")
    assert leads == {"checkins_pkey": "id", INDEX_NAMES["user_id"]: "user_id", INDEX_NAMES["updated_at"]: "updated_at"}
    assert "(user_id, created_at DESC, id DESC)" in index_definition(url, "app", INDEX_NAMES["user_id"])

    again = run_cli("migrate", "--source-indexes", env=env)
    assert again.exit_code == 0, again.everything()
    assert "app.checkins already has an index led by user_id" in again.messages()
    assert "app.checkins already has an index led by updated_at" in again.messages()
    assert valid_index_leads(url, "app.checkins") == leads

    quiet = run_cli("health", env=env)
    assert quiet.exit_code == 0, quiet.everything()
    assert health_lines(quiet, "warning") == []


@pytest.mark.postgres
def test_source_indexes_skip_a_column_the_application_already_indexes(postgres_url: str, run_cli: RunCli) -> None:
    url = postgres_url
    execute(url, "CREATE SCHEMA app", contract_table("app.checkins"), "CREATE INDEX app_own ON app.checkins (user_id)")
    env = {"DATABASE_URL": url, **ADOPT_TABLE}

    result = run_cli("migrate", "--source-indexes", env=env)

    assert result.exit_code == 0, result.everything()
    assert "app.checkins already has an index led by user_id" in result.messages()
    assert valid_index_leads(url, "app.checkins") == {
        "checkins_pkey": "id",
        "app_own": "user_id",
        INDEX_NAMES["updated_at"]: "updated_at",
    }


@pytest.mark.postgres
def test_source_index_left_invalid_is_dropped_and_rebuilt(postgres_url: str, run_cli: RunCli) -> None:
    url = postgres_url
    name = INDEX_NAMES["user_id"]
    execute(
        url,
        "CREATE SCHEMA app",
        contract_table("app.checkins"),
        f"CREATE INDEX {name} ON app.checkins (user_id)",  # not the recommended definition: shows the rebuild
        # What an interrupted CREATE INDEX CONCURRENTLY leaves behind (as superuser).
        f"UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'app.{name}'::regclass",
    )
    [(stale_oid,)] = rows_of(url, f"SELECT 'app.{name}'::regclass::oid::bigint")
    env = {"DATABASE_URL": url, **ADOPT_TABLE}
    assert run_cli("migrate", env=env).exit_code == 0
    health = run_cli("health", env=env)
    assert any("starts with user_id" in line for line in health_lines(health, "warning")), health.everything()

    result = run_cli("migrate", "--source-indexes", env=env)

    assert result.exit_code == 0, result.everything()
    assert f"created index {name} on app.checkins (user_id first)" in result.messages()
    [(oid, valid)] = rows_of(
        url, f"SELECT indexrelid::bigint, indisvalid FROM pg_index WHERE indexrelid = 'app.{name}'::regclass"
    )
    assert valid
    assert oid != stale_oid
    assert "(user_id, created_at DESC, id DESC)" in index_definition(url, "app", name)
    assert health_lines(run_cli("health", env=env), "warning") == []


# -- 5. writers never wait for --source-indexes --------------------------------------------------

WRITES_WHILE_BLOCKED = 50
WRITER_USER = str(uuid.UUID(int=0xFEED, version=4))
WRITER_INSERT = (
    "INSERT INTO app.checkins (id, user_id, created_at, updated_at, tags) "
    f"VALUES (gen_random_uuid(), '{WRITER_USER}', now(), now(), '{{}}')"
)
LOCK_NOT_AVAILABLE = "55P03"
# An index build of this database waiting for a lock (CREATE INDEX [CONCURRENTLY] ...).
INDEX_BUILD_WAITS = """
SELECT count(*) AS n FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() AND a.query ILIKE 'CREATE INDEX%' AND NOT l.granted
"""


class Writer:
    """The application: a thread inserting one row per transaction, in a loop, on its own
    connection with `lock_timeout = 1s`, so that any wait on a lock becomes a counted error."""

    def __init__(self, url: str) -> None:
        self._url = url
        self.inserted = 0
        self.lock_timeouts = 0
        self.other_errors: list[str] = []
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Writer:
        self._thread.start()
        wait_until(lambda: self.inserted > 0 or self.other_errors, "the writer's first insert", HANG_GUARD)
        assert not self.other_errors, self.other_errors
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._halt.set()
        self._thread.join(HANG_GUARD)
        assert not self._thread.is_alive(), "the writer did not stop"

    def failures(self) -> int:
        return self.lock_timeouts + len(self.other_errors)

    def _loop(self) -> None:
        with pg.connect(self._url, autocommit=True) as connection, connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '1s'")
            while not self._halt.is_set():
                try:
                    cursor.execute(WRITER_INSERT)
                except pg.Error as exc:
                    if getattr(exc, "sqlstate", None) == LOCK_NOT_AVAILABLE:
                        self.lock_timeouts += 1
                        continue
                    self.other_errors.append(str(exc))
                    return
                self.inserted += 1


@contextmanager
def held_insert(url: str) -> Iterator[Any]:
    """A third connection with an open transaction that inserted one row (so it holds ROW EXCLUSIVE
    on app.checkins until committed); yields a callable that commits it."""
    connection = pg.connect(url, autocommit=True)
    cursor = connection.cursor()
    cursor.execute("BEGIN")
    cursor.execute(WRITER_INSERT.replace(WRITER_USER, ALICE))
    state = {"open": True}

    def commit() -> None:
        cursor.execute("COMMIT")
        state["open"] = False

    try:
        yield commit
    finally:
        if state["open"]:
            cursor.execute("ROLLBACK")
        cursor.close()
        connection.close()


def index_build_waits(url: str) -> bool:
    return bool(query(url, INDEX_BUILD_WAITS)["n"][0])


def writes_while_the_build_waits(url: str, writer: Writer) -> int:
    """Once an index build provably waits for the held transaction: how many inserts the writer
    completes before it either completes WRITES_WHILE_BLOCKED of them or fails once."""
    wait_until(lambda: index_build_waits(url), "the index build waits for the open transaction", HANG_GUARD)
    start = writer.inserted
    wait_until(
        lambda: writer.inserted >= start + WRITES_WHILE_BLOCKED or writer.failures(),
        "the writer neither progressed nor failed",
        HANG_GUARD,
    )
    return writer.inserted - start


def app_table_for_writers(url: str) -> None:
    execute(url, "CREATE SCHEMA app", contract_table("app.checkins"))
    insert_checkins(url, "app.checkins", [checkin(ALICE, AS_OF - days(n), tags=["x"]) for n in range(20)])


@pytest.mark.postgres
@pytest.mark.slow
def test_writers_never_wait_while_source_indexes_are_built(postgres_url: str, run_cli: RunCli) -> None:
    """CREATE INDEX CONCURRENTLY takes SHARE UPDATE EXCLUSIVE, which does not conflict with the
    writers' ROW EXCLUSIVE: while it waits for the held transaction to end, inserts go on.

    A plain CREATE INDEX would make this test fail: its SHARE lock conflicts with the held
    transaction's ROW EXCLUSIVE, so it queues behind it; the writer's next INSERT asks for
    ROW EXCLUSIVE, which conflicts with the queued SHARE request, so it queues behind the
    build and hits lock_timeout after a second: the writer makes no progress and counts a
    lock timeout. `test_plain_create_index_makes_the_same_writer_wait` runs that case.
    """
    url = postgres_url
    app_table_for_writers(url)
    env = {"DATABASE_URL": url, **ADOPT_TABLE}
    assert run_cli("migrate", env=env).exit_code == 0

    with Writer(url) as writer, held_insert(url) as commit_held:
        with JobProcess("migrate", "--source-indexes", env=job_env(**env)) as migrate:
            progressed = writes_while_the_build_waits(url, writer)

            assert writer.lock_timeouts == 0, "an insert waited for a lock while the indexes were built"
            assert writer.other_errors == []
            assert progressed >= WRITES_WHILE_BLOCKED
            # The build still waits: the held transaction is open, so every insert above
            # happened while `migrate --source-indexes` was blocked.
            assert index_build_waits(url)
            assert migrate.running()

            commit_held()
            exit_code = migrate.wait(HANG_GUARD)
            assert exit_code == 0, migrate.output()
        finished_at = writer.inserted
        wait_until(lambda: writer.inserted > finished_at + 5 or writer.failures(), "the writer goes on", HANG_GUARD)

    assert writer.lock_timeouts == 0
    assert writer.other_errors == []
    assert valid_index_leads(url, "app.checkins") == {
        "checkins_pkey": "id",
        INDEX_NAMES["user_id"]: "user_id",
        INDEX_NAMES["updated_at"]: "updated_at",
    }
    assert rows_of(url, "SELECT count(*) FROM pg_index WHERE NOT indisvalid OR NOT indisready") == [(0,)]
    messages = migrate.finished().messages()
    assert f"created index {INDEX_NAMES['updated_at']} on app.checkins (updated_at first)" in messages


@pytest.mark.postgres
@pytest.mark.slow
def test_plain_create_index_makes_the_same_writer_wait(postgres_url: str) -> None:
    """The harness above can fail: with a plain CREATE INDEX in place of `migrate --source-indexes`,
    the writer stops progressing and hits lock_timeout while the build waits."""
    url = postgres_url
    app_table_for_writers(url)
    errors: list[BaseException] = []

    def build() -> None:
        try:
            with pg.connect(url, autocommit=True) as connection, connection.cursor() as cursor:
                cursor.execute("CREATE INDEX plain_user_idx ON app.checkins (user_id)")
        except BaseException as exc:
            errors.append(exc)

    with Writer(url) as writer, held_insert(url) as commit_held:
        builder = threading.Thread(target=build, daemon=True)
        builder.start()
        progressed = writes_while_the_build_waits(url, writer)

        assert writer.lock_timeouts >= 1, "the writer never waited behind the plain CREATE INDEX"
        assert progressed <= 1  # at most the insert already past the lock queue when the build queued
        commit_held()
        builder.join(HANG_GUARD)
        assert not builder.is_alive()
    assert errors == []
    assert writer.other_errors == []


# -- 6. migrate --capture-triggers ----------------------------------------------------------------


@pytest.fixture
def app_role(postgres_url: str) -> Iterator[tuple[str, str]]:
    """A login role for the application, and its URL; dropped (with its grants) afterwards."""
    role = f"montage_app_{uuid.uuid4().hex[:10]}"
    admin_execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        yield role, postgres_url.replace("postgresql://root@", f"postgresql://{role}@", 1)
    finally:
        execute(
            postgres_url,
            f"SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE usename = '{role}'",
            f'DROP OWNED BY "{role}"',
        )
        admin_execute(f'DROP ROLE IF EXISTS "{role}"')


def changed_users(url: str) -> set[str]:
    return {user for (user,) in rows_of(url, f"SELECT user_id::text FROM {JOB_SCHEMA}.montage_changes")}


def table_checkins(url: str) -> Rows:
    """A full recompute at AS_OF of what app.checkins holds now."""
    frame = query(
        url,
        "SELECT id::text AS id, user_id::text AS user_id, created_at, updated_at, deleted_at, privacy, text_content, "
        "media_url, media_type, thumbnail_url, location_name, tags FROM app.checkins",
    )
    return expected_from_frame(frame, AS_OF)


@pytest.mark.postgres
def test_capture_triggers_on_a_table_source(postgres_url: str, run_cli: RunCli, app_role: tuple[str, str]) -> None:
    url = postgres_url
    role, role_url = app_role
    execute(
        url,
        "CREATE SCHEMA app",
        contract_table("app.checkins"),
        f'GRANT USAGE ON SCHEMA app TO "{role}"',
        f'GRANT SELECT, INSERT, UPDATE, DELETE ON app.checkins TO "{role}"',
    )
    rows = [checkin(user, AS_OF - days(n), tags=["run"]) for user in (ALICE, BOB, CAROL) for n in (1, 2, 3)]
    insert_checkins(url, "app.checkins", rows)
    env = {"DATABASE_URL": url, **ADOPT_TABLE}
    assert run_cli("migrate", env=env).exit_code == 0
    run_once(run_cli, url, "--full", env=env)
    assert job_count(url, "montage_job_watermarks") == 1

    installed = run_cli("migrate", "--capture-triggers", env=env)

    assert installed.exit_code == 0, installed.everything()
    assert any(message.startswith("installed the capture triggers on app.checkins") for message in installed.messages())
    assert triggers_on(url, "app.checkins") == sorted(CAPTURE_TRIGGERS)
    assert job_count(url, "montage_job_watermarks") == 0
    assert summary(run_once(run_cli, url, env=env))["mode"] == "full"

    again = run_cli("migrate", "--capture-triggers", env=env)
    assert again.exit_code == 0, again.everything()
    assert "the capture triggers are already installed on app.checkins" in again.messages()
    assert triggers_on(url, "app.checkins") == sorted(CAPTURE_TRIGGERS)
    assert job_count(url, "montage_job_watermarks") == 1  # a second call forgets nothing

    # The application's role: no privilege at all on the job's schema, yet its writes go through
    # and are captured (the trigger function runs as its owner).
    assert changed_users(url) == set()
    dave_row = checkin(DAVE, AS_OF - days(1), tags=["new"])
    with pg.connect(role_url, autocommit=True) as connection, connection.cursor() as cursor:
        with pytest.raises(pg.Error) as denied:
            cursor.execute(f"SELECT count(*) FROM {JOB_SCHEMA}.montage_changes")
        assert getattr(denied.value, "sqlstate", None) == "42501"
        cursor.execute(
            "INSERT INTO app.checkins (id, user_id, created_at, updated_at, tags) VALUES "
            f"('{dave_row['id']}', '{DAVE}', {literal(dave_row['created_at'])}, {literal(AS_OF - days(1))}, "
            "ARRAY['new'])"
        )
        cursor.execute(
            f"UPDATE app.checkins SET tags = ARRAY['walk'], updated_at = {literal(AS_OF - days(1))} "
            f"WHERE user_id = '{BOB}'"
        )
        cursor.execute(f"DELETE FROM app.checkins WHERE user_id = '{CAROL}'")

    assert changed_users(url) == {DAVE, BOB, CAROL}
    incremental = run_once(run_cli, url, env=env)
    assert summary(incremental)["mode"] == "incremental"
    assert job_tables_of(url) == table_checkins(url)


@pytest.mark.postgres
def test_capture_triggers_on_a_view_are_a_no_op(postgres_url: str, run_cli: RunCli) -> None:
    url = postgres_url
    execute(url, *app_posts_schema())
    seed_posts(url)
    env = {"DATABASE_URL": url, **ADOPT_VIEW}
    assert run_cli("migrate", env=env).exit_code == 0
    run_once(run_cli, url, "--full", env=env)
    before = app_objects(url)

    result = run_cli("migrate", "--capture-triggers", env=env)

    assert result.exit_code == 0, result.everything()
    [note] = [message for message in result.messages() if message.startswith(VIEW)]
    assert "is a view" in note
    assert "nothing was installed" in note
    assert app_objects(url) == before
    assert triggers_on(url, "app.posts") == []
    assert job_count(url, "montage_job_watermarks") == 1  # the view's watermark is still good


# -- 7. PGOPTIONS ------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_pgoptions_search_path_resolves_an_unqualified_source(postgres_url: str, run_cli: RunCli) -> None:
    url = postgres_url
    execute(url, "CREATE SCHEMA app", contract_table("app.checkins"))
    rows = [checkin(ALICE, AS_OF - days(n), tags=["Yoga"]) for n in (1, 2, 3, 4)] + [checkin(BOB, AS_OF - days(2))]
    insert_checkins(url, "app.checkins", rows)
    env = {"DATABASE_URL": url, "PGOPTIONS": "-c search_path=app,public", "MONTAGE_SCHEMA": JOB_SCHEMA}

    migrated = run_cli("migrate", env=env)
    assert migrated.exit_code == 0, migrated.everything()
    assert "source/own_checkins" not in migrated.log("schema migrated")["applied"]
    assert relations_named(url, "checkins") == [("app", "r")]

    run_once(run_cli, url, "--full", env=env)
    assert job_tables_of(url) == expected_montages(rows, AS_OF)
    health = run_cli("health", env=env)
    assert health.exit_code == 0, health.everything()
    assert any("app.checkins" in line for line in health_lines(health, "warning"))  # its indexes, not a default


def session_settings(url: str) -> list[tuple[Any, ...]]:
    """TimeZone, search_path and the time zone of now(), on a session opened by the job's store."""
    return session_query(
        url, "SELECT current_setting('TimeZone'), current_setting('search_path'), to_char(now(), 'TZH')"
    )


def session_query(url: str, sql: str) -> list[tuple[Any, ...]]:
    """A query on a session opened by the job's own store (settings from the environment)."""
    with open_store(load_settings(database_url=url).database()) as store, store.session() as session:
        return session.connection.execute(sql)


@pytest.mark.postgres
def test_session_time_zone_stays_utc_whatever_pgoptions_say(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGOPTIONS", "-c search_path=app,public -c TimeZone=America/New_York")
    assert session_settings(postgres_url) == [("UTC", "app,public", "+00")]


@pytest.mark.postgres
def test_sessions_run_without_jit_unless_the_operator_turns_it_on(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert session_query(postgres_url, "SELECT current_setting('jit')") == [("off",)]
    monkeypatch.setenv("PGOPTIONS", "-c jit=on")
    assert session_query(postgres_url, "SELECT current_setting('jit')") == [("on",)]


@pytest.mark.postgres
def test_read_replica_sessions_get_the_same_options(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGOPTIONS", "-c search_path=app,public -c TimeZone=America/New_York")
    monkeypatch.setenv("DB_READ_HOST", pg_host())
    with open_store(load_settings(database_url=postgres_url).database()) as store, store.session() as session:
        frame = session.connection.fetch_frame(
            "SELECT current_setting('TimeZone') AS tz, current_setting('search_path') AS path", replica=True
        )
    assert frame.rows() == [("UTC", "app,public")]


@pytest.mark.postgres
def test_options_in_database_url_win_over_pgoptions(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGOPTIONS", "-c search_path=app,public -c TimeZone=America/New_York -c statement_timeout=7s")
    assert session_query(postgres_url, "SELECT current_setting('statement_timeout')") == [
        ("7s",)
    ]  # PGOPTIONS alone: kept
    url = postgres_url + "?options=" + quote(f"-c search_path={JOB_SCHEMA} -c TimeZone=Asia/Tokyo")
    [(time_zone, search_path, offset)] = session_settings(url)
    assert search_path == JOB_SCHEMA
    assert (time_zone, offset) == ("UTC", "+00")
    # README: options in DATABASE_URL replace PGOPTIONS as a whole, as in libpq.
    assert session_query(url, "SELECT current_setting('statement_timeout')") == [("0",)]


# -- session_uri, without a server ----------------------------------------------------------------


def query_of(uri: str) -> dict[str, str]:
    """The URI's query parameters, decoded the way libpq decodes them (%XX only; '+' stays '+')."""
    raw = urlsplit(uri).query
    return {key: unquote(value) for key, _, value in (pair.partition("=") for pair in raw.split("&") if pair)}


BASE = "postgresql://app:s%40cret@db.internal:6432/appdb"


def test_session_uri_adds_jit_off_utc_and_an_application_name() -> None:
    uri = session_uri(BASE)
    assert query_of(uri) == {"options": "-c jit=off -c TimeZone=UTC", "application_name": "montage-vec"}
    assert uri.startswith(BASE + "?")


def test_session_uri_merges_operator_options_after_jit_off_and_before_utc() -> None:
    uri = session_uri(BASE, "-c search_path=app,public -c TimeZone=America/New_York -c jit=on")
    assert (
        query_of(uri)["options"]
        == "-c jit=off -c search_path=app,public -c TimeZone=America/New_York -c jit=on -c TimeZone=UTC"
    )


def test_session_uri_options_in_the_url_win_over_the_operator_options() -> None:
    uri = session_uri(BASE + "?options=" + quote("-c search_path=montage"), "-c search_path=app")
    assert query_of(uri)["options"] == "-c jit=off -c search_path=montage -c TimeZone=UTC"


@pytest.mark.parametrize("blank", [None, "", "   "])
def test_session_uri_without_operator_options(blank: str | None) -> None:
    assert query_of(session_uri(BASE, blank))["options"] == "-c jit=off -c TimeZone=UTC"


def test_session_uri_keeps_other_parameters_and_a_given_application_name() -> None:
    uri = session_uri(BASE + "?sslmode=require&connect_timeout=10&application_name=nightly", "-c work_mem=64MB")
    assert query_of(uri) == {
        "sslmode": "require",
        "connect_timeout": "10",
        "application_name": "nightly",
        "options": "-c jit=off -c work_mem=64MB -c TimeZone=UTC",
    }
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc, parts.path) == ("postgresql", "app:s%40cret@db.internal:6432", "/appdb")


def test_session_uri_encodes_spaces_as_percent_20_and_keeps_plus_signs() -> None:
    """libpq decodes %20 but not '+' as a space, and a literal '+' must survive."""
    uri = session_uri(BASE, "-c search_path=a+b")
    raw = urlsplit(uri).query
    assert "+" not in raw
    assert "%20" in raw
    assert query_of(uri)["options"] == "-c jit=off -c search_path=a+b -c TimeZone=UTC"
