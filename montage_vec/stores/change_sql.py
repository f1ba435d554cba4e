"""Statements that find which users changed: captured changes, open transactions, reconciliation.

README, "Change capture", gives the guarantees; the statements are placeholders as in
`statements` (`{checkins}` is the source relation, the others the job's tables).
"""

from __future__ import annotations

import string

# -- trigger capture (PostgreSQL) -----------------------------------------------------------

CAPTURE_TRIGGERS = ("montage_vec_capture_insert", "montage_vec_capture_update", "montage_vec_capture_delete")

# $1 the source relation as a quoted name, $2 the trigger names. Only triggers on a table
# count (as `migrate --capture-triggers` installs them); disabled ones do not.
INSTALLED_CAPTURE_TRIGGERS = """
SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c."oid" = t."tgrelid"
WHERE t."tgrelid" = to_regclass($1) AND c."relkind" IN ('r', 'p')
  AND t."tgname" = ANY($2) AND t."tgenabled" <> 'D'
"""

# What this run consumes: exactly the changes committed before its snapshot. A transaction
# still open then is invisible now and visible to the next run, however late it commits.
CURRENT_SNAPSHOT = "SELECT pg_current_snapshot()::TEXT"

CAPTURED_USERS = """
SELECT DISTINCT "user_id"::VARCHAR AS "user_id" FROM {montage_changes}
WHERE pg_visible_in_snapshot("xid", {snapshot})
"""

# Rows the run consumed; the staged relation "stage_consumed"(user_id) limits a shard to its users.
PRUNE_CONSUMED_CHANGES = """
DELETE FROM {montage_changes}
WHERE pg_visible_in_snapshot("xid", {snapshot})
  AND "user_id" IN (SELECT "user_id"::UUID FROM "stage_consumed")
"""

# -- watermark capture ----------------------------------------------------------------------

# The start of the oldest transaction open in this database, other than this session's. Its
# rows may carry an `updated_at` as old as its start (now() is the transaction's start) and
# become visible only when it commits, so the watermark must not pass it. Other roles'
# sessions are visible only with pg_read_all_stats (README).
OLDEST_OPEN_TRANSACTION = """
SELECT min("xact_start") FROM pg_stat_activity
WHERE "datname" = current_database() AND "pid" <> pg_backend_pid()
  AND "backend_type" = 'client backend' AND "xact_start" IS NOT NULL
"""

# -- reconciliation (both modes) ------------------------------------------------------------

# Rule 1 compares privacy after Python's strip().lower(), which SQL cannot copy on both
# backends: DuckDB has no btrim, and lower() follows the collation ('İ' -> 'i' where Python
# gives 'i̇'; Turkish locales lower 'I' to 'ı'). This query only has to find every user to
# reconcile (one found needlessly is just recomputed, and the engine decides exactly), so
# "levels" judges each distinct privacy value TRUE or FALSE only where that is certain: for
# ASCII text, trimming Python's ASCII whitespace and mapping A-Z with translate (which no
# collation changes) is exactly strip().lower(). Non-ASCII text is NULL, "maybe", and each
# use below takes the side that finds more users. Judging distinct values costs one more
# scan of the source but keeps the string functions (translate is slow) off its rows. The
# staged levels are normalised already (MontageParams).
_ASCII_WHITESPACE = " || ".join(f"chr({code})" for code in range(128) if chr(code).isspace())
_ASCII_LOWER = f"""translate(trim(BOTH {_ASCII_WHITESPACE} FROM l."privacy"),
                  '{string.ascii_uppercase}', '{string.ascii_lowercase}')"""

# Users whose stored montages no longer match the source in a way no `updated_at` shows:
#  1. an item shows a check-in that is gone, not surely eligible, or now another user's;
#  2. maybe eligible check-ins but no general montage (never written, or removed by someone else);
#  3. montages but no surely eligible check-in.
# The privacy levels that make a check-in eligible come staged as "stage_privacy"(privacy).
RECONCILE_USERS = f"""
WITH "levels" AS (
    SELECT l."privacy", CASE WHEN bit_length(l."privacy") = 8 * char_length(l."privacy")
        THEN {_ASCII_LOWER} IN (SELECT "privacy" FROM "stage_privacy") END AS "eligible"
    FROM (SELECT DISTINCT "privacy" FROM {{checkins}} WHERE "privacy" IS NOT NULL) AS l
), "eligible" AS (
    -- users with a maybe eligible check-in; "surely" is TRUE when one is certainly eligible
    SELECT c."user_id", bool_or(l."eligible") AS "surely"
    FROM {{checkins}} c JOIN "levels" l ON l."privacy" = c."privacy"
    WHERE c."deleted_at" IS NULL AND l."eligible" IS NOT FALSE
    GROUP BY c."user_id"
), "stale_items" AS (
    SELECT DISTINCT m."user_id"
    FROM {{montage_items}} i
    JOIN {{montages}} m ON m."id" = i."montage_id"
    LEFT JOIN {{checkins}} c ON c."id" = i."checkin_id"
    WHERE c."id" IS NULL
       OR c."user_id" IS DISTINCT FROM m."user_id"
       OR c."deleted_at" IS NOT NULL
       OR c."privacy" IS NULL
       OR c."privacy" NOT IN (SELECT "privacy" FROM "levels" WHERE "eligible")  -- no NULL in "levels"
)
SELECT "user_id"::VARCHAR AS "user_id" FROM "stale_items"
UNION
SELECT e."user_id"::VARCHAR FROM "eligible" e
WHERE NOT EXISTS (SELECT 1 FROM {{montages}} m WHERE m."user_id" = e."user_id" AND m."kind" = 'general')
UNION
SELECT m."user_id"::VARCHAR FROM {{montages}} m
WHERE NOT EXISTS (SELECT 1 FROM "eligible" e WHERE e."user_id" = m."user_id" AND e."surely")
"""  # noqa: S608 - built once from constants
