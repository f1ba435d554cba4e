"""The statements of one chunk's write transaction, shared by both backends.

Each backend first makes the chunk visible as three relations with text uuids (see
`ChunkWrite`): `stage_users(user_id, job_id, occurred_at)`, `stage_montages(montage_nr, user_id,
kind, interest, item_count, valid_until, generated_at, cache_expires_at, job_id)` and
`stage_items(montage_nr, position, checkin_id, checkin_created_at, widget_type, widget_metadata)`.
The statements below then run in order inside one transaction. Their `{...}` fields are filled
from the backend's `Dialect` (constants, never input).

Only montages whose content differs from what is stored are rewritten, so a re-run over
unchanged data writes nothing and readers' caches stay valid.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dialect:
    """What differs between the backends in the chunk statements."""

    json_type: str
    json_object: str
    # Joins `mi`, the stored item at each staged item's (montage, position).
    stored_item_join: str
    # Statistics for the chunk's temporary tables, which autovacuum never analyzes.
    analyze_chunk_tables: bool = False
    # `montage_id` membership in a subquery ({ids}) when deleting a chunk's items.
    montage_id_in: str = '"montage_id" IN ({ids})'


# PostgreSQL: a LATERAL probe per staged item keeps this to primary-key lookups; a plain join
# lets the planner hash the whole montage_items table for every chunk.
POSTGRES = Dialect(
    json_type="jsonb",
    json_object="jsonb_build_object",
    stored_item_join="""LEFT JOIN LATERAL (
        SELECT * FROM "montage_items" m
        WHERE m."montage_id" = c."montage_id" AND m."position" = si."position" LIMIT 1
    ) mi ON TRUE""",
    analyze_chunk_tables=True,
    # An array makes it primary-key probes; IN lets the planner hash all of montage_items.
    montage_id_in='"montage_id" = ANY(ARRAY({ids}))',
)
# DuckDB: its vectorized hash join beats per-row probes.
DUCKDB = Dialect(
    json_type="JSON",
    json_object="json_object",
    stored_item_join=(
        'LEFT JOIN "montage_items" mi ON mi."montage_id" = c."montage_id" AND mi."position" = si."position"'
    ),
)

# A montage id is derived from its key, so the same montage gets the same id in every
# backend and every run; ids already stored (e.g. by the old job) are kept.
CREATE_CHUNK_MONTAGES = """
CREATE TEMP TABLE "chunk_montages" AS
SELECT s."montage_nr", s."user_id"::UUID AS "user_id", s."kind", s."interest", s."item_count", s."valid_until",
       s."generated_at", s."cache_expires_at", s."job_id",
       COALESCE(m."id", md5(s."user_id" || '/' || s."kind" || '/' || s."interest")::UUID) AS "montage_id",
       (m."id" IS NULL
        OR m."item_count" <> s."item_count"
        OR m."valid_until" IS DISTINCT FROM s."valid_until") AS "changed"
FROM "stage_montages" s
LEFT JOIN "montages" m
  ON m."user_id" = s."user_id"::UUID AND m."kind" = s."kind" AND m."interest" = s."interest"
"""

# Same count and same valid_until: the montage changed only if some position now holds
# something else (positions are 0..n-1, so comparing staged positions covers all of them).
MARK_CHANGED_ITEMS = """
UPDATE "chunk_montages" SET "changed" = TRUE
WHERE NOT "changed" AND "montage_id" IN (
    SELECT c."montage_id"
    FROM "stage_items" si
    JOIN "chunk_montages" c ON c."montage_nr" = si."montage_nr" AND NOT c."changed"
    {stored_item_join}
    WHERE mi."montage_id" IS NULL
       OR mi."checkin_id" <> si."checkin_id"::UUID
       OR mi."checkin_created_at" <> si."checkin_created_at"
       OR mi."widget_type" <> si."widget_type"
       OR mi."widget_metadata" <> si."widget_metadata"::{json}
)
"""

CREATE_CHUNK_STALE = """
CREATE TEMP TABLE "chunk_stale" AS
SELECT m."id" AS "montage_id", m."user_id"
FROM "montages" m
WHERE m."user_id" IN (SELECT "user_id"::UUID FROM "stage_users")
  AND NOT EXISTS (SELECT 1 FROM "chunk_montages" c WHERE c."montage_id" = m."id")
"""

# Items of stale montages and of montages about to be rewritten.
REPLACED_MONTAGE_IDS = """(
    SELECT "montage_id" FROM "chunk_stale"
    UNION ALL
    SELECT "montage_id" FROM "chunk_montages" WHERE "changed"
)"""
DELETE_REPLACED_ITEMS = 'DELETE FROM "montage_items" WHERE {replaced}'


DELETE_STALE_MONTAGES = """
DELETE FROM "montages" WHERE "id" IN (SELECT "montage_id" FROM "chunk_stale")
"""

UPSERT_CHANGED_MONTAGES = """
INSERT INTO "montages" ("id", "user_id", "kind", "interest", "item_count", "generated_at",
                        "cache_expires_at", "valid_until", "job_id")
SELECT "montage_id", "user_id", "kind", "interest", "item_count", "generated_at",
       "cache_expires_at", "valid_until", "job_id"
FROM "chunk_montages" WHERE "changed"
ON CONFLICT ("user_id", "kind", "interest") DO UPDATE SET
    "item_count" = excluded."item_count",
    "generated_at" = excluded."generated_at",
    "cache_expires_at" = excluded."cache_expires_at",
    "valid_until" = excluded."valid_until",
    "job_id" = excluded."job_id"
"""

INSERT_CHANGED_ITEMS = """
INSERT INTO "montage_items" ("montage_id", "position", "checkin_id", "checkin_created_at",
                             "widget_type", "widget_metadata")
SELECT c."montage_id", si."position", si."checkin_id"::UUID, si."checkin_created_at",
       si."widget_type", si."widget_metadata"::{json}
FROM "stage_items" si
JOIN "chunk_montages" c ON c."montage_nr" = si."montage_nr"
WHERE c."changed"
"""

CREATE_CHUNK_CHANGED_USERS = """
CREATE TEMP TABLE "chunk_changed_users" AS
SELECT u."user_id", u."job_id", u."occurred_at",
       count(*) FILTER (WHERE t."written") AS "montages_written",
       count(*) FILTER (WHERE NOT t."written") AS "montages_removed"
FROM (
    SELECT "user_id"::VARCHAR AS "user_id", TRUE AS "written" FROM "chunk_montages" WHERE "changed"
    UNION ALL
    SELECT "user_id"::VARCHAR, FALSE FROM "chunk_stale"
) AS t
JOIN "stage_users" u ON u."user_id" = t."user_id"
GROUP BY u."user_id", u."job_id", u."occurred_at"
"""

# Outbox events. Ids derive from (type, aggregate, job): a retried chunk cannot duplicate them.
INSERT_GENERATED_EVENTS = """
INSERT INTO "montage_events" ("id", "type", "aggregate_id", "job_id", "occurred_at", "payload")
SELECT md5('montage.generated/' || c."montage_id"::VARCHAR || '/' || c."job_id")::UUID,
       'montage.generated', c."montage_id"::VARCHAR, c."job_id", c."generated_at",
       {json_object}('user_id', c."user_id"::VARCHAR, 'kind', c."kind", 'interest', c."interest",
                     'item_count', c."item_count")
FROM "chunk_montages" c WHERE c."changed"
ON CONFLICT ("id") DO NOTHING
"""

INSERT_INVALIDATED_EVENTS = """
INSERT INTO "montage_events" ("id", "type", "aggregate_id", "job_id", "occurred_at", "payload")
SELECT md5('montage.cache.invalidated/' || u."user_id" || '/' || u."job_id")::UUID,
       'montage.cache.invalidated', u."user_id", u."job_id", u."occurred_at",
       {json_object}('user_id', u."user_id", 'montages_written', u."montages_written",
                     'montages_removed', u."montages_removed")
FROM "chunk_changed_users" u
ON CONFLICT ("id") DO NOTHING
"""

CLEAR_RETRIES = """
DELETE FROM "montage_retry_users" WHERE "user_id" IN (SELECT "user_id"::UUID FROM "stage_users")
"""

SELECT_OUTCOME = """
SELECT
    (SELECT count(*) FROM "chunk_montages" WHERE "changed") AS "written",
    (SELECT count(*) FROM "chunk_stale") AS "removed"
"""

SELECT_CHANGED_USERS = 'SELECT "user_id" FROM "chunk_changed_users" ORDER BY 1'

DROP_CHUNK_TABLES = tuple(
    f'DROP TABLE IF EXISTS "{name}"' for name in ("chunk_montages", "chunk_stale", "chunk_changed_users")
)


def write_statements(dialect: Dialect, analytics: bool) -> tuple[str, ...]:
    """The data-changing statements, in execution order, for a backend.

    `analytics` adds one `montage.generated` event per written montage (ENABLE_ANALYTICS).
    """
    generated_events = (INSERT_GENERATED_EVENTS.format(json_object=dialect.json_object),) if analytics else ()
    analyze = ('ANALYZE "chunk_montages"', 'ANALYZE "chunk_stale"') if dialect.analyze_chunk_tables else ()
    return (
        *DROP_CHUNK_TABLES,
        CREATE_CHUNK_MONTAGES,
        MARK_CHANGED_ITEMS.format(json=dialect.json_type, stored_item_join=dialect.stored_item_join),
        CREATE_CHUNK_STALE,
        *analyze,  # before the statements that pick montage_items rows by these tables
        DELETE_REPLACED_ITEMS.format(replaced=dialect.montage_id_in.format(ids=REPLACED_MONTAGE_IDS)),
        DELETE_STALE_MONTAGES,
        UPSERT_CHANGED_MONTAGES,
        INSERT_CHANGED_ITEMS.format(json=dialect.json_type),
        CREATE_CHUNK_CHANGED_USERS,
        *generated_events,
        INSERT_INVALIDATED_EVENTS.format(json_object=dialect.json_object),
        CLEAR_RETRIES,
    )
