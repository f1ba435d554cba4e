"""Rendering SQL: every statement the stores run, filled with awkward names, and run for real.

Covers: each statement constant (statements, chunk_sql, migrations and the backends'
dialects) rendered with identifiers full of braces, quotes, double quotes and backslashes,
checked against an independently built expectation (exact quoting, one pass, no placeholder
left); the values `render` refuses; and real DuckDB and PostgreSQL databases where a schema
and tables with such names are created, written and read through rendered statements,
including a whole session's work on that schema.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import adbc_driver_postgresql.dbapi as pg
import duckdb
import polars as pl
import pytest

from montage_vec.config import load_settings
from montage_vec.config.relation import RelationName
from montage_vec.engine import compute_montages
from montage_vec.engine.schema import REJECTED_SCHEMA
from montage_vec.errors import InputDataError
from montage_vec.stores import ChunkWrite, RunRecord, Store, Tables, chunk_sql, migrations, statements
from montage_vec.stores.backends.base import Backend, Connection, Dialect
from montage_vec.stores.backends.duckdb import DUCKDB, DuckDBBackend
from montage_vec.stores.backends.postgres import POSTGRES, PostgresBackend
from montage_vec.stores.render import (
    PLACEHOLDER,
    Identifier,
    Keyword,
    RenderError,
    SqlValue,
    Timestamp,
    UuidArray,
    render,
)
from tests.support.data import checkin, checkin_frame

DIALECTS: dict[str, Dialect] = {"duckdb": DUCKDB, "postgresql": POSTGRES}
WEIRD_SCHEMA = 'we{ir}d"s\\chema'
WEIRD_TABLE = "t{0}'x\"\\"
MOMENT = datetime(2026, 1, 1, 12, 30, 15, 250000, tzinfo=UTC)
U1 = "6f9d6a52-2c1e-4f7b-8d0e-1a2b3c4d5e6f"
U2 = "0b7c1d7e-3a39-4f0e-9a52-5f0c8a1b2c3d"

# What a session offers every statement (its tables and the dialect's JSON names), plus the
# values single calls add: `since` (changed_users), `as_of` (revisit_users), `user_ids`.
TABLE_PLACEHOLDERS = frozenset(Tables().placeholders())
SESSION_PLACEHOLDERS = TABLE_PLACEHOLDERS | {"json", "json_object", "since", "as_of", "user_ids"}


# -- an independent expectation ----------------------------------------------------------------


def quoted(name: str) -> str:
    """SQL's delimited identifier: wrapped in double quotes, each double quote doubled."""
    return '"' + name.replace('"', '""') + '"'


def awkward_table(placeholder: str) -> str:
    """A table name per placeholder with braces (also another placeholder's), quotes and a backslash."""
    return f"{placeholder}{{0}}{{montages}}'x\"\\"


def awkward_values() -> dict[str, SqlValue]:
    values: dict[str, SqlValue] = {p: Identifier(awkward_table(p), WEIRD_SCHEMA) for p in TABLE_PLACEHOLDERS}
    values.update(since=Timestamp(MOMENT), as_of=Timestamp(MOMENT), user_ids=UuidArray.of([U1, U2]))
    return values


def expected_text(placeholder: str, dialect: str) -> str:
    """What a placeholder must become, written out here rather than asked of `render`."""
    if placeholder in TABLE_PLACEHOLDERS:
        return quoted(WEIRD_SCHEMA) + "." + quoted(awkward_table(placeholder))
    fixed = {
        ("json", "duckdb"): "JSON",
        ("json", "postgresql"): "jsonb",
        ("json_object", "duckdb"): "json_object",
        ("json_object", "postgresql"): "jsonb_build_object",
        ("user_ids", "duckdb"): f"['{U1}','{U2}']::UUID[]",
        ("user_ids", "postgresql"): f"'{{{U1},{U2}}}'::uuid[]",
    }
    if placeholder in ("since", "as_of"):
        return "TIMESTAMPTZ '2026-01-01T12:30:15.250000+00:00'"
    return fixed[(placeholder, dialect)]


def expected_render(template: str, dialect: str) -> str:
    """The template with each placeholder replaced once, by splitting on the placeholders."""
    parts = re.split(PLACEHOLDER.pattern, template)  # literal, name, literal, name, ..., literal
    return "".join(part if index % 2 == 0 else expected_text(part, dialect) for index, part in enumerate(parts))


# -- every statement -------------------------------------------------------------------------


def statement_templates() -> list[tuple[str, str, tuple[str, ...]]]:
    """(id, template, dialects) for every statement constant the stores render."""
    found: list[tuple[str, str, tuple[str, ...]]] = []
    for module in (statements, chunk_sql, migrations):
        short = module.__name__.rsplit(".", 1)[-1]
        for name, value in vars(module).items():
            texts = [value] if isinstance(value, str) else list(value) if isinstance(value, tuple) else []
            for index, text in enumerate(texts):
                if name.isupper() and isinstance(text, str) and PLACEHOLDER.search(text):
                    suffix = f"[{index}]" if isinstance(value, tuple) else ""
                    found.append((f"{short}.{name}{suffix}", text, tuple(DIALECTS)))
    for dialect_name, dialect in DIALECTS.items():
        by_field = {
            "mark_changed_items": [dialect.mark_changed_items],
            "delete_replaced_items": [dialect.delete_replaced_items],
            "prepare_staged_chunk": list(dialect.prepare_staged_chunk),
            "analyze_chunk_tables": list(dialect.analyze_chunk_tables),
        }
        for field, statements_of_field in by_field.items():
            for index, text in enumerate(statements_of_field):
                found.append((f"{dialect_name}.{field}[{index}]", text, (dialect_name,)))
    return found


TEMPLATES = statement_templates()


def test_the_collection_finds_the_statements_that_matter() -> None:
    """Guards the parametrisation below: an empty or partial collection would prove nothing."""
    ids = {template_id for template_id, _, _ in TEMPLATES}
    for expected in (
        "statements.EXTRACT_CHECKINS_OF_ARRAY",
        "statements.RECORD_RUN",
        "statements.UPSERT_CHECKINS",
        "statements.RECORD_FAILURES",
        "chunk_sql.CREATE_CHUNK_MONTAGES",
        "chunk_sql.INSERT_GENERATED_EVENTS",
        "migrations.CREATE_MIGRATIONS_TABLE",
        "migrations.RECORD_MIGRATION",
        "duckdb.mark_changed_items[0]",
        "postgresql.delete_replaced_items[0]",
    ):
        assert expected in ids
    assert len(TEMPLATES) >= 30


@pytest.mark.parametrize(("template", "dialects"), [t[1:] for t in TEMPLATES], ids=[t[0] for t in TEMPLATES])
def test_every_placeholder_is_one_a_session_provides(template: str, dialects: tuple[str, ...]) -> None:
    """A statement naming a placeholder no session fills would fail only when it first runs."""
    assert set(PLACEHOLDER.findall(template)) <= SESSION_PLACEHOLDERS


@pytest.mark.parametrize(("template", "dialects"), [t[1:] for t in TEMPLATES], ids=[t[0] for t in TEMPLATES])
def test_statement_renders_awkward_identifiers_exactly_once(template: str, dialects: tuple[str, ...]) -> None:
    """Each placeholder becomes its value's text exactly once per occurrence, identifiers quoted
    with doubled double quotes, and nothing in a value is read as another placeholder."""
    for dialect in dialects:
        values: dict[str, SqlValue] = {
            **awkward_values(),
            "json": DIALECTS[dialect].json_type,
            "json_object": DIALECTS[dialect].json_object,
        }
        rendered = render(template, dialect, values)

        assert rendered == expected_render(template, dialect)
        residue = rendered
        for placeholder in set(PLACEHOLDER.findall(template)):
            text = expected_text(placeholder, dialect)
            assert rendered.count(text) == template.count("{" + placeholder + "}"), (placeholder, dialect)
            residue = residue.replace(text, "")
        assert not PLACEHOLDER.search(residue), residue
        assert residue == PLACEHOLDER.sub("", template)


def test_identifier_quoting_is_written_out() -> None:
    """The exact text for the awkward schema and table (and with no schema)."""
    assert Identifier(WEIRD_TABLE, WEIRD_SCHEMA).sql("postgresql") == '"we{ir}d""s\\chema"."t{0}\'x""\\"'
    assert Identifier(WEIRD_TABLE, WEIRD_SCHEMA).sql("duckdb") == '"we{ir}d""s\\chema"."t{0}\'x""\\"'
    assert Identifier('a"b').sql("duckdb") == '"a""b"'
    assert render("SELECT count(*) FROM {montages}", "postgresql", {"montages": Identifier('"')}) == (
        'SELECT count(*) FROM """"'
    )


def test_a_value_that_looks_like_a_placeholder_is_not_filled_again() -> None:
    """One pass: `{b}` inside a's value stays as it is, and format-style `{0}` / `{}` do not break it."""
    values: dict[str, SqlValue] = {"a": Identifier("{b}"), "b": Identifier("x"), "c": Identifier("{0}{}{")}
    assert render("SELECT {a}, {b}, {c}", "duckdb", values) == 'SELECT "{b}", "x", "{0}{}{"'


# -- what render refuses ----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["checkins", 'x"; DROP TABLE "checkins"; --', 42, None, b"checkins"])
def test_values_that_are_not_sql_values_are_refused(value: Any) -> None:
    """A plain str (or anything but the four value types) never enters SQL, whatever it holds."""
    with pytest.raises(RenderError, match="checkins"):
        render("SELECT * FROM {checkins}", "postgresql", {"checkins": value})


def test_missing_value_is_refused_by_name() -> None:
    with pytest.raises(RenderError, match="montagez"):
        render("SELECT * FROM {checkins} JOIN {montagez} USING (id)", "duckdb", {"checkins": Identifier("c")})


def test_identifiers_and_keywords_are_validated() -> None:
    """Empty names and NUL bytes are no identifiers; a keyword is a bare name only."""
    for bad in ("", "a\x00b"):
        with pytest.raises(ValueError, match="identifier"):
            Identifier(bad)
        with pytest.raises(ValueError, match="identifier"):
            Identifier("montages", schema=bad)
    for word in ("jsonb; DROP TABLE x", "json object", '"jsonb"', "jsonb()", ""):
        with pytest.raises(ValueError, match="bare SQL name"):
            Keyword(word)
    assert Keyword("jsonb_build_object").sql("postgresql") == "jsonb_build_object"


def test_timestamp_refuses_naive_datetimes_and_renders_utc() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Timestamp(datetime(2026, 1, 1, 12, 0))
    plus_two = datetime(2026, 1, 1, 14, 30, tzinfo=timezone(timedelta(hours=2)))
    for dialect in DIALECTS:
        assert Timestamp(plus_two).sql(dialect) == "TIMESTAMPTZ '2026-01-01T12:30:00+00:00'"


@pytest.mark.parametrize(
    "bad",
    [
        U1.upper(),
        U1.replace("-", ""),
        "{" + U1 + "}",
        f" {U1}",
        f"{U1}'; DROP TABLE checkins; --",
        "",
        "not-a-uuid",
    ],
)
def test_uuid_array_refuses_non_canonical_ids(bad: str) -> None:
    """Only lower-case hyphenated uuids may enter the literal; the error names the offender."""
    with pytest.raises(InputDataError) as raised:
        UuidArray.of([U2, bad])
    assert repr(bad) in str(raised.value)
    assert U2 not in str(raised.value)


def test_uuid_array_refuses_nulls() -> None:
    with pytest.raises(InputDataError):
        UuidArray.of(pl.Series([U1, None], dtype=pl.String))


def test_uuid_array_renders_per_dialect() -> None:
    ids = UuidArray.of(pl.Series([U1, U2]))
    assert ids.sql("postgresql") == f"'{{{U1},{U2}}}'::uuid[]"
    assert ids.sql("duckdb") == f"['{U1}','{U2}']::UUID[]"
    assert UuidArray.of([]).sql("postgresql") == "'{}'::uuid[]"
    assert UuidArray.of([]).sql("duckdb") == "[]::UUID[]"


# -- real databases ---------------------------------------------------------------------------


def backend_for(url: str) -> Backend:
    target = load_settings(database_url=url).database()
    if target.kind == "duckdb":
        return DuckDBBackend(target.location)
    return PostgresBackend(target.location)


@contextmanager
def connection_to(url: str) -> Iterator[Connection]:
    backend = backend_for(url)
    connection = backend.connect()
    try:
        yield connection
    finally:
        connection.close()
        backend.close()


def raw(url: str, sql: str) -> list[tuple[Any, ...]]:
    """A query through the driver itself, no montage-vec code (no store may hold the file open)."""
    if url.startswith("duckdb:"):
        with duckdb.connect(url[len("duckdb:///") :]) as connection:
            return connection.execute(sql).fetchall()
    with pg.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(sql)
        return [tuple(row) for row in cursor.fetchall()]


def test_rendered_statements_run_in_an_awkward_schema(database_url: str) -> None:
    """A schema `we{ir}d"s\\chema` and a table `t{0}'x"\\` created, written and read by rendered text."""
    dialect = "duckdb" if database_url.startswith("duckdb:") else "postgresql"
    table = {"t": Identifier(WEIRD_TABLE, WEIRD_SCHEMA)}
    tracking = {"schema_migrations": Identifier(migrations.MIGRATIONS_TABLE, WEIRD_SCHEMA)}
    montages = {"montages": Identifier("montages", schema=WEIRD_SCHEMA)}

    with connection_to(database_url) as connection:
        with connection.transaction(write=True):
            connection.execute(render("CREATE SCHEMA {s}", dialect, {"s": Identifier(WEIRD_SCHEMA)}))
            connection.execute(render('CREATE TABLE {t} ("id" INTEGER, "note" VARCHAR)', dialect, table))
            connection.execute(render('CREATE TABLE {montages} ("id" INTEGER)', dialect, montages))
            connection.execute(render("INSERT INTO {t} VALUES ($1, $2), ($3, $4)", dialect, table), [1, "{t}", 2, "b"])
            connection.execute(render(migrations.CREATE_MIGRATIONS_TABLE, dialect, tracking))
            connection.execute(render(migrations.RECORD_MIGRATION, dialect, tracking), [7, "007_odd", "abc", MOMENT])
        with connection.transaction(write=False):
            counted = connection.execute(render("SELECT count(*) FROM {t}", dialect, table))
            notes = connection.execute(render('SELECT "note" FROM {t} ORDER BY "id"', dialect, table))
            no_montages = connection.execute(render("SELECT count(*) FROM {montages}", dialect, montages))
            applied = connection.execute(render(migrations.APPLIED_MIGRATIONS, dialect, tracking))

    assert counted == [(2,)]
    assert notes == [("{t}",), ("b",)]
    assert no_montages == [(0,)]
    assert applied == [(7, "007_odd", "abc")]
    created = raw(
        database_url,
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_schema NOT IN ('information_schema', 'pg_catalog') ORDER BY table_name",
    )
    assert sorted(created) == sorted(
        [(WEIRD_SCHEMA, migrations.MIGRATIONS_TABLE), (WEIRD_SCHEMA, "montages"), (WEIRD_SCHEMA, WEIRD_TABLE)]
    ), "the names must arrive exactly, in the awkward schema and nowhere else"


def checkin_rows(user_id: str, as_of: datetime, count: int, tags: list[str]) -> list[dict[str, Any]]:
    """`count` daily check-ins of one user before `as_of`."""
    return [checkin(user_id, as_of - timedelta(days=index + 1), tags=tags) for index in range(count)]


def create_job_tables_in(connection: Connection, schema: str) -> None:
    """The package's DDL files, run with `schema` as the current schema (they name tables unqualified)."""
    dialect = connection.dialect.name
    schema_sql = Identifier(schema).sql(dialect)
    with connection.transaction(write=True):
        connection.execute(f"CREATE SCHEMA {schema_sql}")
        connection.execute(f"USE {schema_sql}" if dialect == "duckdb" else f"SET LOCAL search_path TO {schema_sql}")
        for migration in migrations.package_migrations(dialect):
            for statement in migration.statements():
                connection.execute(statement)
        for statement in migrations.source_ddl(dialect, "own_checkins"):
            connection.execute(statement.replace("{checkins}", '"checkins"'))


def test_a_session_does_all_its_work_in_an_awkward_schema(database_url: str) -> None:
    """Every session operation, with the job's tables in `we{ir}d"s\\chema`: loading, planning,
    extraction, a chunk write (both dialects' chunk statements), failures, runs and watermarks."""
    as_of = datetime(2026, 1, 1, tzinfo=UTC)
    checkins = checkin_frame(checkin_rows(U1, as_of, 5, ["coffee"]) + checkin_rows(U2, as_of, 4, ["tea"]))
    computed = compute_montages(checkins.drop("updated_at"), as_of)
    assert computed.montages.height >= 4  # general and interest montages of both users

    with connection_to(database_url) as connection:
        create_job_tables_in(connection, WEIRD_SCHEMA)

    tables = Tables(schema=WEIRD_SCHEMA, source=RelationName("checkins", WEIRD_SCHEMA))
    with Store(backend_for(database_url), tables) as store, store.session() as session:
        assert session.load_checkins(checkins) == 9
        assert sorted(session.all_users().to_list()) == sorted([U1, U2])
        assert sorted(session.changed_users(as_of - timedelta(days=2)).to_list()) == sorted([U1, U2])
        assert session.changed_users(as_of).to_list() == []
        assert session.latest_data_time(as_of) == as_of - timedelta(days=1)
        extracted = session.extract_checkins(pl.Series([U1]))
        assert extracted.height == 5
        assert set(extracted["user_id"]) == {U1}

        chunk = ChunkWrite(
            job_id="job-1",
            generated_at=as_of,
            cache_ttl=timedelta(hours=1),
            user_ids=pl.Series([U1, U2]),
            montages=computed.montages,
            items=computed.items,
        )
        outcome = session.write_chunk(chunk)
        assert outcome.montages_written == computed.montages.height
        assert outcome.changed_users == sorted([U1, U2])
        assert session.write_chunk(chunk).montages_written == 0, "an unchanged re-write writes nothing"
        assert sorted(session.montage_users().to_list()) == sorted([U1, U2])
        montages, items = session.user_montages(U1)
        assert set(montages["kind"]) == {"general", "interest"}
        assert items.height == computed.items.filter(pl.col("user_id") == U1).height
        assert session.user_with_most_interests() in (U1, U2)
        assert session.revisit_users(as_of).to_list() == []

        failures = pl.DataFrame({"user_id": [U2], "error": ["boom"]}, schema=REJECTED_SCHEMA)
        session.record_failures(failures, "job-1", as_of)
        session.record_failures(failures, "job-2", as_of + timedelta(hours=1))  # the ON CONFLICT branch
        assert session.revisit_users(as_of).to_list() == [U2]

        session.record_run(RunRecord("job-1", "0/1", "full", as_of, as_of))
        session.record_run(RunRecord("job-1", "0/1", "full", as_of, as_of, status="completed", finished_at=as_of))
        session.save_watermark("0/1", as_of, "job-1")
        session.save_watermark("0/1", as_of + timedelta(hours=1), "job-2")
        assert session.read_watermark("0/1") == as_of + timedelta(hours=1)

    schema = quoted(WEIRD_SCHEMA)
    assert raw(database_url, f'SELECT "attempts", "job_id" FROM {schema}."montage_retry_users"') == [(2, "job-2")]
    assert raw(database_url, f'SELECT "status" FROM {schema}."montage_job_runs"') == [("completed",)]
    [(events,)] = raw(database_url, f'SELECT count(*) FROM {schema}."montage_events"')
    assert events == computed.montages.height + 2 + 2  # generated, invalidated per user, run started/completed
    outside = [
        row
        for row in raw(database_url, "SELECT table_schema, table_name FROM information_schema.tables")
        if row[0] not in ("information_schema", "pg_catalog", WEIRD_SCHEMA)
    ]
    assert outside == [], "nothing may land in the default schema"
