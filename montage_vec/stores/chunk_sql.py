"""The statements of one chunk's write transaction.

The session first stages the chunk as three relations with text uuids (see `ChunkWrite`):
`stage_users(user_id, job_id, occurred_at)`, `stage_montages(montage_nr, user_id, kind,
interest, item_count, valid_until, generated_at, cache_expires_at, job_id)` and
`stage_items(montage_nr, position, checkin_id, checkin_created_at, widget_type,
widget_metadata)`. The statements below then run in order inside one transaction.
`{montages}` and the other table placeholders are the job's tables; `{json}` and
`{json_object}` are the backend's JSON type and object constructor (see `render`).

Only montages whose content differs from what is stored are rewritten, so a re-run over
unchanged data writes nothing and readers' caches stay valid. The detection (the TEMP
tables chunk_montages, chunk_stale and chunk_changed_users) only reads the job's tables: a
dry run runs it alone, reads SELECT_DIFF and rolls back (see `SqlSession.diff_chunk`).

DuckDB's variants, and its writes on tables without keys, are in backends/duckdb_sql.py.
"""

from __future__ import annotations

# A montage id is derived from its key (the engine's `montage_id`, engine/ids.py), so the same
# montage gets the same id in every backend and every run; ids already stored (e.g. by the
# old job) are kept.
CREATE_CHUNK_MONTAGES = """
CREATE TEMP TABLE "chunk_montages" AS
SELECT s."montage_nr", s."user_id"::UUID AS "user_id", s."kind", s."interest", s."item_count", s."valid_until",
       s."generated_at", s."cache_expires_at", s."job_id",
       COALESCE(m."id", s."montage_id"::UUID) AS "montage_id",
       m."id" IS NOT NULL AS "stored",
       (m."id" IS NULL
        OR m."item_count" <> s."item_count"
        OR m."valid_until" IS DISTINCT FROM s."valid_until") AS "changed"
FROM "stage_montages" s
LEFT JOIN {montages} m
  ON m."user_id" = s."user_id"::UUID AND m."kind" = s."kind" AND m."interest" = s."interest"
"""

# Same count and same valid_until: the montage changed only if some position now holds
# something else (positions are 0..n-1, so comparing staged positions covers all of them).
# PostgreSQL: a LATERAL probe per staged item keeps this to primary-key lookups; a plain
# join lets the planner hash the whole montage_items table for every chunk.
MARK_CHANGED_ITEMS_BY_PROBE = """
UPDATE "chunk_montages" SET "changed" = TRUE
WHERE NOT "changed" AND "montage_id" IN (
    SELECT c."montage_id"
    FROM "stage_items" si
    JOIN "chunk_montages" c ON c."montage_nr" = si."montage_nr" AND NOT c."changed"
    LEFT JOIN LATERAL (
        SELECT * FROM {montage_items} m
        WHERE m."montage_id" = c."montage_id" AND m."position" = si."position" LIMIT 1
    ) mi ON TRUE
    WHERE mi."montage_id" IS NULL
       OR mi."checkin_id" <> si."checkin_id"::UUID
       OR mi."checkin_created_at" <> si."checkin_created_at"
       OR mi."widget_type" <> si."widget_type"
       OR mi."widget_metadata" <> si."widget_metadata"::{json}
)
"""

# PostgreSQL: the chunk users' stored montages ("id", "user_id"), one index probe per user
# (OFFSET 0 keeps it from being flattened into a join). Planned as a join on user_id, the
# statistics' underestimate of distinct users on a big table turns it into a scan of all
# montages per chunk: at 1M users 0.36 s a chunk and growing with the table, against 0.01 s.
CHUNK_USERS_MONTAGES_BY_PROBE = """(SELECT DISTINCT "user_id"::UUID AS "user_id" FROM "stage_users") AS u
CROSS JOIN LATERAL (SELECT "id", "user_id" FROM {montages} x WHERE x."user_id" = u."user_id" OFFSET 0)"""

# The chunk users' montages the engine no longer produces.
CREATE_CHUNK_STALE_BY_PROBE = f"""
CREATE TEMP TABLE "chunk_stale" AS
SELECT m."id" AS "montage_id", m."user_id"
FROM {CHUNK_USERS_MONTAGES_BY_PROBE} AS m
WHERE NOT EXISTS (SELECT 1 FROM "chunk_montages" c WHERE c."montage_id" = m."id")
"""  # noqa: S608 - built once from constants

# The users the write touches, with their counts (for the cache invalidation events). It reads
# only the TEMP tables above, which the writes below leave as they are.
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

# Items of stale montages and of stored montages about to be rewritten (a new montage has
# none: probing for them cost a first run an index lookup per item). PostgreSQL: an array
# makes it primary-key probes, where IN lets the planner hash all of montage_items.
DELETE_REPLACED_ITEMS_BY_ARRAY = """
DELETE FROM {montage_items} WHERE "montage_id" = ANY(ARRAY(
    SELECT "montage_id" FROM "chunk_stale"
    UNION ALL
    SELECT "montage_id" FROM "chunk_montages" WHERE "changed" AND "stored"
))
"""

DELETE_STALE_MONTAGES = """
DELETE FROM {montages} WHERE "id" IN (SELECT "montage_id" FROM "chunk_stale")
"""

UPSERT_CHANGED_MONTAGES = """
INSERT INTO {montages} ("id", "user_id", "kind", "interest", "item_count", "generated_at",
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

# The items a write inserts: those of the montages it rewrites. SELECT_DIFF counts the same rows.
CHANGED_ITEMS = """
FROM "stage_items" si
JOIN "chunk_montages" c ON c."montage_nr" = si."montage_nr"
WHERE c."changed"
"""

INSERT_CHANGED_ITEMS = (
    """
INSERT INTO {montage_items} ("montage_id", "position", "checkin_id", "checkin_created_at",
                             "widget_type", "widget_metadata")
SELECT c."montage_id", si."position", si."checkin_id"::UUID, si."checkin_created_at",
       si."widget_type", si."widget_metadata"::{json}"""
    + CHANGED_ITEMS
)

# Outbox events. Ids derive from (type, aggregate, job): a retried chunk cannot duplicate them.
INSERT_GENERATED_EVENTS = """
INSERT INTO {montage_events} ("id", "type", "aggregate_id", "job_id", "occurred_at", "payload")
SELECT md5('montage.generated/' || c."montage_id"::VARCHAR || '/' || c."job_id")::UUID,
       'montage.generated', c."montage_id"::VARCHAR, c."job_id", c."generated_at",
       {json_object}('user_id', c."user_id"::VARCHAR, 'kind', c."kind", 'interest', c."interest",
                     'item_count', c."item_count")
FROM "chunk_montages" c WHERE c."changed"
ON CONFLICT ("id") DO NOTHING
"""

INSERT_INVALIDATED_EVENTS = """
INSERT INTO {montage_events} ("id", "type", "aggregate_id", "job_id", "occurred_at", "payload")
SELECT md5('montage.cache.invalidated/' || u."user_id" || '/' || u."job_id")::UUID,
       'montage.cache.invalidated', u."user_id", u."job_id", u."occurred_at",
       {json_object}('user_id', u."user_id", 'montages_written', u."montages_written",
                     'montages_removed', u."montages_removed")
FROM "chunk_changed_users" u
ON CONFLICT ("id") DO NOTHING
"""

CLEAR_RETRIES = """
DELETE FROM {montage_retry_users} WHERE "user_id" IN (SELECT "user_id"::UUID FROM "stage_users")
"""

# What the write does (or, in a dry run, would do): ChunkDiff's fields, in its order.
SELECT_DIFF = f"""
SELECT
    (SELECT count(*) FROM "chunk_montages" WHERE "changed") AS "montages_written",
    (SELECT count(*) FROM "chunk_stale") AS "montages_removed",
    (SELECT count(*) {CHANGED_ITEMS}) AS "items_written",
    (SELECT count(*) FROM "chunk_changed_users") AS "users_changed"
"""  # noqa: S608 - built once from constants

SELECT_CHANGED_USERS = 'SELECT "user_id" FROM "chunk_changed_users" ORDER BY 1'

DROP_CHUNK_TABLES = (
    'DROP TABLE IF EXISTS "chunk_montages"',
    'DROP TABLE IF EXISTS "chunk_stale"',
    'DROP TABLE IF EXISTS "chunk_changed_users"',
)

# Writers of one user serialize (a batch chunk, a realtime regenerate, a --user-id run of
# another shard): each locks the user's montage rows, in key order so that two chunks cannot
# deadlock, before it reads or touches anything of theirs. Readers are never blocked, and
# row locks, unlike advisory locks, do not fill the server's shared lock table. A user's
# very first montages have no row to lock yet: two writers of those collide on a key, and
# the loser retries (see SqlSession.write_chunk), finding the winner's rows to lock.
# The ids come from one index probe per user and are then locked by primary key (see
# CHUNK_USERS_MONTAGES_BY_PROBE for why not a join on user_id).
LOCK_CHUNK_USERS = f"""
SELECT count(*) FROM (
    SELECT 1 FROM {{montages}} m
    WHERE m."id" = ANY(ARRAY(SELECT p."id" FROM {CHUNK_USERS_MONTAGES_BY_PROBE} AS p))
    ORDER BY m."id"
    FOR NO KEY UPDATE
) AS "locked"
"""  # noqa: S608 - built once from constants

# Before a write reads anything of the chunk's users; a dry run, which writes nothing, skips them.
PREPARE_CHUNK_WRITE = (
    # The capture triggers on the job's own tables record deletes by anyone but the job.
    "SET LOCAL montage_vec.job_write = 'on'",
    LOCK_CHUNK_USERS,
)
# Planner help on PostgreSQL: temporary tables are never auto-analyzed, and sorts/hashes of
# a few hundred thousand rows should stay in memory. The joins need the tables' row counts
# and their keys' distinct values; statistics of the items' JSON text would cost 4x as much.
PREPARE_STAGED_CHUNK = (
    "SET LOCAL work_mem = '64MB'",
    'ANALYZE "stage_users"',
    'ANALYZE "stage_montages"',
    'ANALYZE "stage_items" ("montage_nr", "position")',
)
# Before the statements that pick montage_items rows by these tables.
ANALYZE_CHUNK_TABLES = ('ANALYZE "chunk_montages"', 'ANALYZE "chunk_stale"')
