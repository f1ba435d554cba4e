"""DuckDB's own statements for a chunk's write and the outbox, on tables without keys.

Since migration sql/duckdb/008, `montages` and `montage_events` have no primary or unique key
(DuckDB holds such ART indexes whole in memory and cannot spill them), so nothing here may use
ON CONFLICT. Each statement below does what its shared counterpart in chunk_sql / statements
does with ON CONFLICT, inside the same transaction, so the rows written are the same. That
relies on one writer at a time per user: on DuckDB one process holds the file read-write and
every write transaction in it holds the file's write lock (one per file, however many backends
the process opened on it) from its first read to its commit.

`montage_items` also carries its montage's `user_id` (DuckDB only), and the chunk's joins name
the chunk's users: chunks are ranges of sorted user ids and the tables are written in that
order, so DuckDB's join filters (min/max of the build side) meet the zone maps of `user_id`
and each statement reads the row groups of the chunk's users, not all of montage_items.
"""

from __future__ import annotations

from montage_vec.stores import chunk_sql

# The changed-item check of chunk_sql.MARK_CHANGED_ITEMS_BY_PROBE as a hash join (DuckDB's
# vectorized join beats per-row probes), keyed by user as well as montage (see above).
MARK_CHANGED_ITEMS = """
UPDATE "chunk_montages" SET "changed" = TRUE
WHERE NOT "changed" AND "montage_id" IN (
    SELECT c."montage_id"
    FROM "stage_items" si
    JOIN "chunk_montages" c ON c."montage_nr" = si."montage_nr" AND NOT c."changed"
    LEFT JOIN {montage_items} mi
      ON mi."user_id" = c."user_id" AND mi."montage_id" = c."montage_id" AND mi."position" = si."position"
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
FROM {montages} m
WHERE m."user_id" IN (SELECT "user_id"::UUID FROM "stage_users")
  AND NOT EXISTS (SELECT 1 FROM "chunk_montages" c WHERE c."montage_id" = m."id")
"""

# The items of a montage have its user, and every montage below is one of the chunk's users'.
DELETE_REPLACED_ITEMS = """
DELETE FROM {montage_items}
WHERE "user_id" IN (SELECT "user_id"::UUID FROM "stage_users")
  AND "montage_id" IN (
    SELECT "montage_id" FROM "chunk_stale"
    UNION ALL
    SELECT "montage_id" FROM "chunk_montages" WHERE "changed" AND "stored"
)
"""

DELETE_STALE_MONTAGES = """
DELETE FROM {montages}
WHERE "user_id" IN (SELECT "user_id" FROM "chunk_stale") AND "id" IN (SELECT "montage_id" FROM "chunk_stale")
"""

# chunk_sql.UPSERT_CHANGED_MONTAGES in two steps. "stored" says whether a row of the montage's
# key existed when chunk_montages was made, in this transaction; since then only the stale
# montages (other keys) were deleted. So the stored ones are updated, as ON CONFLICT's DO
# UPDATE would, with the same columns, and the others inserted, as its INSERT would.
UPDATE_STORED_MONTAGES = """
UPDATE {montages} AS m SET
    "item_count" = c."item_count",
    "generated_at" = c."generated_at",
    "cache_expires_at" = c."cache_expires_at",
    "valid_until" = c."valid_until",
    "job_id" = c."job_id"
FROM "chunk_montages" c
WHERE c."changed" AND c."stored"
  AND m."user_id" = c."user_id" AND m."kind" = c."kind" AND m."interest" = c."interest"
"""

# The primary key's other check: a new montage's id (derived from its key) held by a stored
# montage of another key is bad data (a foreign row), not a second montage of that id. It ends
# the transaction as a DATA fault, like the key violation did. Ids are random, so this reads
# the id column of all montages, which DuckDB's join filter (a Bloom filter) makes cheap.
CHECK_NEW_MONTAGE_IDS = """
SELECT error('Constraint Error: duplicate key "id: ' || c."montage_id"::VARCHAR || '": montages holds it for '
             || 'another montage than (' || c."user_id"::VARCHAR || ', ' || c."kind" || ', ' || c."interest" || ')')
FROM "chunk_montages" c JOIN {montages} m ON m."id" = c."montage_id"
WHERE c."changed" AND NOT c."stored"
LIMIT 1
"""

INSERT_NEW_MONTAGES = """
INSERT INTO {montages} ("id", "user_id", "kind", "interest", "item_count", "generated_at",
                        "cache_expires_at", "valid_until", "job_id")
SELECT "montage_id", "user_id", "kind", "interest", "item_count", "generated_at",
       "cache_expires_at", "valid_until", "job_id"
FROM "chunk_montages" WHERE "changed" AND NOT "stored"
"""

INSERT_CHANGED_ITEMS = (
    """
INSERT INTO {montage_items} ("montage_id", "position", "checkin_id", "checkin_created_at",
                             "widget_type", "widget_metadata", "user_id")
SELECT c."montage_id", si."position", si."checkin_id"::UUID, si."checkin_created_at",
       si."widget_type", si."widget_metadata"::{json}, c."user_id"
"""
    + chunk_sql.CHANGED_ITEMS
)


def _unless_stored(new_events: str) -> str:
    """An INSERT of `new_events` (a SELECT of the outbox's columns) that, like ON CONFLICT ("id")
    DO NOTHING, skips those whose id is stored already.

    An id is md5(type/aggregate/job_id), and a chunk's events occur at its run's generated_at,
    the same for every chunk of a job: so a stored event of the same id has the same job_id and
    occurred_at too. The stored events are looked for among those of the new events' jobs and
    times: the outbox is appended in time order, so its zone maps skip all but its newest row
    groups. Written as a plain NOT EXISTS on (occurred_at, job_id, id), DuckDB hashed or scanned
    the whole outbox per chunk (0.1-0.5 s at 1M users, 2.3M events).
    """
    return f"""
INSERT INTO {{montage_events}} ("id", "type", "aggregate_id", "job_id", "occurred_at", "payload")
WITH "new_events" AS ({new_events})
SELECT n.* FROM "new_events" n
ANTI JOIN (
    SELECT e."id" FROM {{montage_events}} e
    WHERE e."occurred_at" IN (SELECT "occurred_at" FROM "new_events")
      AND e."job_id" IN (SELECT "job_id" FROM "new_events")
) AS "stored" ON "stored"."id" = n."id"
"""  # noqa: S608 - built once from constants


INSERT_GENERATED_EVENTS = _unless_stored("""
SELECT md5('montage.generated/' || c."montage_id"::VARCHAR || '/' || c."job_id")::UUID AS "id",
       'montage.generated' AS "type", c."montage_id"::VARCHAR AS "aggregate_id", c."job_id",
       c."generated_at" AS "occurred_at",
       {json_object}('user_id', c."user_id"::VARCHAR, 'kind', c."kind", 'interest', c."interest",
                     'item_count', c."item_count") AS "payload"
FROM "chunk_montages" c WHERE c."changed"
""")

INSERT_INVALIDATED_EVENTS = _unless_stored("""
SELECT md5('montage.cache.invalidated/' || u."user_id" || '/' || u."job_id")::UUID AS "id",
       'montage.cache.invalidated' AS "type", u."user_id" AS "aggregate_id", u."job_id", u."occurred_at",
       {json_object}('user_id', u."user_id", 'montages_written', u."montages_written",
                     'montages_removed', u."montages_removed") AS "payload"
FROM "chunk_changed_users" u
""")

# statements.RECORD_JOB_EVENT without ON CONFLICT: $1 type, $2 job_id (also the aggregate),
# $3 occurred_at, $4 payload (JSON text). A run's few events need no pruning.
RECORD_JOB_EVENT = """
INSERT INTO {montage_events} ("id", "type", "aggregate_id", "job_id", "occurred_at", "payload")
SELECT md5($1 || '/' || $2 || '/' || $2)::UUID, $1, $2, $2, $3, $4::{json}
WHERE NOT EXISTS (SELECT 1 FROM {montage_events} e WHERE e."id" = md5($1 || '/' || $2 || '/' || $2)::UUID)
"""
