"""Catalog queries: what exists in the database, asked before creating or reading anything.

Where the two backends' catalogs differ, a statement is a mapping from the dialect's name.
Names travel as bound parameters; only `{schema}` and the index placeholders are rendered
identifiers.
"""

from __future__ import annotations

CURRENT_SCHEMA = "SELECT current_schema()"

# PostgreSQL's information_schema shows only what the role may use; its catalogs show
# everything, so that "missing" and "not granted" can be told apart.
SCHEMA_EXISTS = {
    "postgresql": 'SELECT count(*) FROM pg_namespace WHERE "nspname" = $1',
    "duckdb": "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1",
}

CREATE_SCHEMA = "CREATE SCHEMA IF NOT EXISTS {schema}"

# Migrations create bare names; this puts them in the job's schema. PostgreSQL: for the
# current transaction only. DuckDB: for the session, so `migrate` resets it afterwards.
USE_SCHEMA = {
    "postgresql": "SELECT set_config('search_path', $1, true)",
    "duckdb": "SET search_path = $1",
}
RESET_SCHEMA = {"duckdb": "RESET search_path"}

# $1 schema (NULL: resolve as the session would), $2 name -> (schema, name, kind), kind being
# 'table', 'view' or 'other'. PostgreSQL resolves an unqualified name through search_path.
RESOLVE_RELATION = {
    "postgresql": """
SELECT n."nspname", c."relname",
       CASE WHEN c."relkind" IN ('r', 'p') THEN 'table' WHEN c."relkind" IN ('v', 'm') THEN 'view' ELSE 'other' END
FROM pg_class c JOIN pg_namespace n ON n."oid" = c."relnamespace"
WHERE c."oid" = to_regclass(
    CASE WHEN $1::TEXT IS NULL THEN quote_ident($2) ELSE quote_ident($1) || '.' || quote_ident($2) END
)
""",
    "duckdb": """
SELECT "table_schema", "table_name",
       CASE "table_type" WHEN 'BASE TABLE' THEN 'table' WHEN 'VIEW' THEN 'view' ELSE 'other' END
FROM information_schema.tables
WHERE "table_schema" = coalesce($1, current_schema()) AND "table_name" = $2
""",
}

RELATION_COLUMNS = """
SELECT "column_name" FROM information_schema.columns WHERE "table_schema" = $1 AND "table_name" = $2
"""

# Every column of every table in the job's schema ($1 NULL: the current schema), whether the
# role may use that schema, and whether it may read the table: (table, column, usable, readable).
# PostgreSQL: from the catalogs, which list tables the role has no privilege on (its
# information_schema hides them, so a table not granted would look missing).
SCHEMA_COLUMNS = {
    "postgresql": """
SELECT c."relname", a."attname", has_schema_privilege(n."oid", 'USAGE'), has_table_privilege(c."oid", 'SELECT')
FROM pg_class c
JOIN pg_namespace n ON n."oid" = c."relnamespace"
JOIN pg_attribute a ON a."attrelid" = c."oid" AND a."attnum" > 0 AND NOT a."attisdropped"
WHERE n."nspname" = coalesce($1, current_schema()) AND c."relkind" IN ('r', 'p', 'v', 'm', 'f')
""",
    "duckdb": """
SELECT "table_name", "column_name", TRUE, TRUE FROM information_schema.columns
WHERE "table_schema" = coalesce($1, current_schema())
""",
}

# PostgreSQL: the leading column of each valid index on a relation ($1 its quoted name).
INDEX_LEADING_COLUMNS = """
SELECT a."attname" FROM pg_index i
JOIN pg_attribute a ON a."attrelid" = i."indrelid" AND a."attnum" = i."indkey"[0]
WHERE i."indrelid" = to_regclass($1) AND i."indisvalid"
"""

# PostgreSQL: whether pg_stat_activity shows this role every session's transaction start.
SEES_ALL_SESSIONS = """
SELECT rolsuper OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') FROM pg_roles WHERE rolname = current_user
"""

# PostgreSQL: whether an index of that name ($1 its quoted, qualified name) is left invalid by
# a failed CREATE INDEX CONCURRENTLY; IF NOT EXISTS would otherwise keep it forever.
INVALID_INDEX = 'SELECT count(*) FROM pg_index WHERE "indexrelid" = to_regclass($1) AND NOT "indisvalid"'
DROP_INDEX_CONCURRENTLY = "DROP INDEX CONCURRENTLY IF EXISTS {index}"

# The recommended indexes on a check-ins table: extraction reads a user's check-ins in item
# order; incremental planning reads recent `updated_at`s. (leading column, statement)
SOURCE_INDEXES = (
    (
        "user_id",
        'CREATE INDEX CONCURRENTLY IF NOT EXISTS {index} ON {checkins} ("user_id", "created_at" DESC, "id" DESC)',
    ),
    ("updated_at", 'CREATE INDEX CONCURRENTLY IF NOT EXISTS {index} ON {checkins} ("updated_at")'),
)

# Installing triggers takes a short SHARE ROW EXCLUSIVE lock on the application's table;
# never queue behind a long transaction (and block the application's writes behind us).
INSTALL_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', '5s', true)"

# Changes made before the triggers existed are in no change table: every shard's next run
# is a full run.
FORGET_WATERMARKS = "DELETE FROM {montage_job_watermarks}"

# `demo` starts only from an empty database: every base table but the migration history ($1),
# then whether each ({relation}) holds a row.
BASE_TABLES = """
SELECT table_schema, table_name FROM information_schema.tables
WHERE table_type = 'BASE TABLE' AND table_name <> $1 ORDER BY table_schema, table_name
"""
HAS_ROWS = "SELECT EXISTS (SELECT 1 FROM {relation})"
