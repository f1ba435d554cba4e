"""Read and bookkeeping statements, the same text on both backends.

Table placeholders (`{checkins}`, `{montages}`, ...) are filled by `render` from the
session's `Tables`; values are bound parameters (`$1`), except where a statement names a
rendered `Timestamp` or `UuidArray`.
"""

from __future__ import annotations

RUN_COLUMNS = (
    "job_id", "shard", "mode", "as_of", "started_at", "finished_at", "status", "watermark_from",
    "watermark_to", "processed", "successful", "errors", "general_montages", "interest_montages", "message",
    "reconciled",
)  # fmt: skip

CHECKIN_COLUMNS = (
    "id", "user_id", "created_at", "updated_at", "deleted_at", "privacy", "text_content", "media_url",
    "media_type", "thumbnail_url", "location_name", "tags",
)  # fmt: skip
_UUID_COLUMNS = ("id", "user_id")

# -- planning -------------------------------------------------------------------------------

# Rows stamped later than the run's start (clock skew, bad imports) must not drag the
# watermark into the future: changes committed later with saner stamps would be skipped.
LATEST_DATA_TIME = 'SELECT max("updated_at") FROM {checkins} WHERE "updated_at" <= $1'

CHECKIN_USERS = 'SELECT DISTINCT "user_id"::VARCHAR AS "user_id" FROM {checkins}'

CHANGED_USERS = 'SELECT DISTINCT "user_id"::VARCHAR AS "user_id" FROM {checkins} WHERE "updated_at" > {since}'

MONTAGE_USERS = """
SELECT "user_id"::VARCHAR AS "user_id" FROM {montages}
UNION
SELECT "user_id"::VARCHAR FROM {montage_retry_users}
"""

REVISIT_USERS = """
SELECT "user_id"::VARCHAR AS "user_id" FROM {montages} WHERE "valid_until" <= {as_of}
UNION
SELECT "user_id"::VARCHAR FROM {montage_retry_users}
"""

# The latest as_of any run of the shard may have written at since its last completed full
# run (which recomputed everyone): a run that died after some chunks still wrote at its as_of.
FURTHEST_AS_OF = """
SELECT max("as_of") FROM {montage_job_runs}
WHERE "shard" = $1 AND "started_at" >= coalesce(
    (SELECT max("started_at") FROM {montage_job_runs}
     WHERE "shard" = $1 AND "status" = 'completed' AND "mode" = 'full'),
    TIMESTAMPTZ '1970-01-01 00:00:00+00')
"""

# The shards of the runs (full or incremental, whatever their outcome: a failed one may have
# written chunks) that started after $1's last completed run; the plan looks for another count.
SHARDS_RUN_SINCE = """
SELECT DISTINCT "shard" FROM {montage_job_runs}
WHERE "shard" <> $1 AND "mode" IN ('full', 'incremental') AND "started_at" > coalesce(
    (SELECT max("started_at") FROM {montage_job_runs} WHERE "shard" = $1 AND "status" = 'completed'),
    TIMESTAMPTZ '1970-01-01 00:00:00+00')
ORDER BY "shard"
"""

# Completed incremental runs of a shard since its last reconciled (or full) run.
RUNS_SINCE_RECONCILED = """
SELECT count(*) FROM {montage_job_runs}
WHERE "shard" = $1 AND "status" = 'completed' AND "mode" = 'incremental' AND "started_at" > coalesce(
    (SELECT max("started_at") FROM {montage_job_runs}
     WHERE "shard" = $1 AND "status" = 'completed' AND ("reconciled" OR "mode" = 'full')),
    TIMESTAMPTZ '1970-01-01 00:00:00+00')
"""

READ_WATERMARK = 'SELECT "watermark" FROM {montage_job_watermarks} WHERE "shard" = $1'

SAVE_WATERMARK = """
INSERT INTO {montage_job_watermarks} ("shard", "watermark", "job_id", "updated_at")
VALUES ($1, $2, $3, $4)
ON CONFLICT ("shard") DO UPDATE SET
    "watermark" = excluded."watermark", "job_id" = excluded."job_id", "updated_at" = excluded."updated_at"
"""

# -- leases (fencing) and runs left behind ----------------------------------------------------

# $1 shard, $2 job_id, $3 now: the shard's next token, taken right after its lock.
TAKE_LEASE = """
INSERT INTO {montage_job_leases} ("shard", "token", "job_id", "acquired_at") VALUES ($1, 1, $2, $3)
ON CONFLICT ("shard") DO UPDATE SET
    "token" = {montage_job_leases}."token" + 1, "job_id" = excluded."job_id", "acquired_at" = excluded."acquired_at"
RETURNING "token"
"""

# In a writing transaction: the shard's current token. PostgreSQL share-locks it, so that a
# run taking the lease over waits until every transaction that saw the old token has ended;
# DuckDB has one writing process, and no FOR SHARE.
CURRENT_LEASE = 'SELECT "token" FROM {montage_job_leases} WHERE "shard" = $1'
CURRENT_LEASE_SHARED = CURRENT_LEASE + " FOR SHARE"

# Runs of the shard still `running` although its lock is free: their process died.
RUNS_LEFT_RUNNING = f"""
SELECT {", ".join(f'"{c}"' for c in RUN_COLUMNS)} FROM {{montage_job_runs}}
WHERE "shard" = $1 AND "status" = 'running' AND "job_id" <> $2
ORDER BY "started_at"
"""  # noqa: S608 - built once from the constant column list above

# -- extraction -------------------------------------------------------------------------------


# The engine's check-in columns for a chunk of users, who come as a uuid array literal
# (PostgreSQL: keeps the driver's streaming COPY, and works on a read replica) or as the
# staged relation "stage_users" (DuckDB: a join with a registered frame is the fastest).
#
# Times outside years 1-9999 (`infinity` above all) come out as NULL, with the value named in
# "unsupported_time": the driver would turn `infinity` into a wrapped integer, and neither
# Python nor the Go user service's JSON can represent years past 9999. The job rejects the
# check-in's user with that text (see job.chunks). An unsupported `updated_at` only orders
# copies of one check-in (contract rule 8), so it is just NULL, which loses.
def _in_supported_years(column: str) -> str:
    return f"{column} >= TIMESTAMPTZ '0001-01-01 00:00:00+00' AND {column} < TIMESTAMPTZ '10000-01-01 00:00:00+00'"


_CREATED_OK = _in_supported_years('c."created_at"')
_DELETED_OK = _in_supported_years('c."deleted_at"')
_EXTRACTED_COLUMNS = f"""
SELECT c."id"::VARCHAR AS "id", c."user_id"::VARCHAR AS "user_id",
       CASE WHEN {_CREATED_OK} THEN c."created_at" END AS "created_at",
       CASE WHEN {_DELETED_OK} THEN c."deleted_at" END AS "deleted_at",
       CASE WHEN {_in_supported_years('c."updated_at"')} THEN c."updated_at" END AS "updated_at",
       c."privacy", c."text_content", c."media_url", c."media_type", c."thumbnail_url",
       c."location_name", c."tags",
       CASE WHEN NOT ({_CREATED_OK}) THEN 'created_at ' || c."created_at"::VARCHAR
            WHEN NOT ({_DELETED_OK}) THEN 'deleted_at ' || c."deleted_at"::VARCHAR
       END AS "unsupported_time"
"""
_EXTRACT_CHECKINS = _EXTRACTED_COLUMNS + "FROM {checkins} c\n"
# One index probe per user, whatever the planner believes a user holds. With `user_id =
# ANY(array)` it multiplies the array's length by its rows-per-user estimate, and on a big
# table ANALYZE's sample underestimates the distinct users: at 1M users (20M rows) it took a
# 2,500-user chunk for 1.2M rows, not 49k, and chose a parallel scan of the whole 7 GB table
# (5.6 s, against 0.4 s for these probes). OFFSET 0 keeps the planner from flattening the
# probe into a join it could hash over a scan. DISTINCT: a user named twice is read once.
EXTRACT_CHECKINS_OF_ARRAY = (
    _EXTRACTED_COLUMNS  # noqa: S608 - built once from constants
    + """FROM (SELECT DISTINCT unnest({user_ids}) AS "user_id") AS u
CROSS JOIN LATERAL (SELECT * FROM {checkins} x WHERE x."user_id" = u."user_id" OFFSET 0) AS c"""
)
EXTRACT_CHECKINS_OF_STAGED_USERS = (
    _EXTRACT_CHECKINS + 'WHERE c."user_id" IN (SELECT "user_id"::UUID FROM "stage_users")'  # noqa: S608 - constants
)

# -- bookkeeping ------------------------------------------------------------------------------

RECORD_RUN = f"""
INSERT INTO {{montage_job_runs}} ({", ".join(f'"{c}"' for c in RUN_COLUMNS)})
VALUES ({", ".join(f"${i}" for i in range(1, len(RUN_COLUMNS) + 1))})
ON CONFLICT ("job_id") DO UPDATE SET
    {", ".join(f'"{c}" = excluded."{c}"' for c in RUN_COLUMNS[5:])}
"""  # noqa: S608 - built once from the constant column list above

# $1 type, $2 job_id (also the aggregate), $3 occurred_at, $4 payload (JSON text).
# Ids follow the one formula md5(type/aggregate/job_id).
RECORD_JOB_EVENT = """
INSERT INTO {montage_events} ("id", "type", "aggregate_id", "job_id", "occurred_at", "payload")
VALUES (md5($1 || '/' || $2 || '/' || $2)::UUID, $1, $2, $2, $3, $4::{json})
ON CONFLICT ("id") DO NOTHING
"""

# $1 job_id, $2 failed_at; rows come from the staged relation "stage_failures"(user_id, error).
RECORD_FAILURES = """
INSERT INTO {montage_retry_users} ("user_id", "error", "attempts", "first_failed_at", "last_failed_at", "job_id")
SELECT "user_id"::UUID, "error", 1, $2, $2, $1 FROM "stage_failures"
ON CONFLICT ("user_id") DO UPDATE SET
    "error" = excluded."error",
    "attempts" = {montage_retry_users}."attempts" + 1,
    "last_failed_at" = excluded."last_failed_at",
    "job_id" = excluded."job_id"
"""

# -- demo, tests and inspection -----------------------------------------------------------------

# Rows come from the staged relation "stage_checkins" with text uuids.
UPSERT_CHECKINS = f"""
INSERT INTO {{checkins}} ({", ".join(f'"{c}"' for c in CHECKIN_COLUMNS)})
SELECT {", ".join(f'"{c}"::UUID' if c in _UUID_COLUMNS else f'"{c}"' for c in CHECKIN_COLUMNS)}
FROM "stage_checkins"
ON CONFLICT ("id") DO UPDATE SET
    {", ".join(f'"{c}" = excluded."{c}"' for c in CHECKIN_COLUMNS[1:])}
"""  # noqa: S608 - built once from the constant column list above

USER_WITH_MOST_INTERESTS = """
SELECT "user_id"::VARCHAR FROM {montages} WHERE "kind" = 'interest'
GROUP BY "user_id" ORDER BY count(*) DESC, "user_id" LIMIT 1
"""

USER_MONTAGES = """
SELECT "id"::VARCHAR AS "id", "kind", "interest", "item_count", "generated_at", "cache_expires_at",
       "valid_until", "job_id"
FROM {montages} WHERE "user_id" = ANY({user_ids})
ORDER BY "kind", "interest"
"""

USER_ITEMS = """
SELECT m."kind", m."interest", i."position", i."checkin_id"::VARCHAR AS "checkin_id",
       i."checkin_created_at", i."widget_type", i."widget_metadata"::VARCHAR AS "widget_metadata"
FROM {montage_items} i JOIN {montages} m ON m."id" = i."montage_id"
WHERE m."user_id" = ANY({user_ids})
ORDER BY m."kind", m."interest", i."position"
"""

# The library's `read` (montage_vec.db): every stored montage and item, or those of the staged users.
STORED_MONTAGES = """
SELECT m."id"::VARCHAR AS "montage_id", m."user_id"::VARCHAR AS "user_id", m."kind", m."interest",
       m."item_count", m."valid_until", m."generated_at", m."cache_expires_at", m."job_id"
FROM {montages} m
"""
STORED_MONTAGES_OF_STAGED_USERS = (
    STORED_MONTAGES + 'WHERE m."user_id" IN (SELECT "user_id"::UUID FROM "stage_users")'  # noqa: S608 - constants
)
STORED_ITEMS = """
SELECT i."montage_id"::VARCHAR AS "montage_id", m."user_id"::VARCHAR AS "user_id", m."kind", m."interest",
       i."position", i."checkin_id"::VARCHAR AS "checkin_id", i."checkin_created_at", i."widget_type",
       i."widget_metadata"::VARCHAR AS "widget_metadata"
FROM {montage_items} i JOIN {montages} m ON m."id" = i."montage_id"
"""
STORED_ITEMS_OF_STAGED_USERS = (
    STORED_ITEMS + 'WHERE m."user_id" IN (SELECT "user_id"::UUID FROM "stage_users")'  # noqa: S608 - constants
)
EXTRACT_ALL_CHECKINS = _EXTRACT_CHECKINS

PING = "SELECT 1"
