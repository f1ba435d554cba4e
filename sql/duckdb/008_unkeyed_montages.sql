-- DuckDB holds an ART index whole in memory while a transaction writes its table, and cannot
-- spill it (see 007). 007 kept the keys the writes relied on, as ON CONFLICT needs them. At
-- 1,000,000 users, montages' two keys and the outbox's id outgrew the default
-- DUCKDB_MEMORY_LIMIT of 256MB: a second `once --full` on such a file ran out of memory. So
-- montages and montage_events move to tables without keys, like montage_items in 007, and the
-- DuckDB dialect writes them without ON CONFLICT (montage_vec/stores/backends/duckdb_sql.py):
-- stored montages are updated and new ones inserted, and an event is inserted unless its id is
-- there already, all inside the chunk's one transaction, so the rows are those ON CONFLICT wrote.
-- This departs from the contract's keys on DuckDB only: uniqueness rests on the job being
-- the only writer of a user's rows, which on DuckDB it is. One process holds the file
-- read-write, and in it every write transaction (batch chunks and realtime regeneration alike)
-- holds the backend's write lock from its first read to its commit.
--
-- The items also carry their montage's user_id (the contract's columns come first, unchanged),
-- and every table is written in user order: the chunks are ranges of sorted user ids, so the
-- zone maps (min/max per row group) of user_id let a chunk's joins read only the row groups of
-- its own users instead of every row of montage_items per chunk (quadratic in the users).
CREATE TABLE "montages_008" (
    "id"               UUID NOT NULL,
    "user_id"          UUID NOT NULL,
    "kind"             VARCHAR NOT NULL CHECK ("kind" IN ('general', 'interest')),
    "interest"         VARCHAR NOT NULL DEFAULT '',
    "item_count"       INTEGER NOT NULL,
    "generated_at"     TIMESTAMPTZ NOT NULL,
    "cache_expires_at" TIMESTAMPTZ NOT NULL,
    "valid_until"      TIMESTAMPTZ,
    "job_id"           VARCHAR NOT NULL
);
INSERT INTO "montages_008"
SELECT "id", "user_id", "kind", "interest", "item_count", "generated_at", "cache_expires_at", "valid_until", "job_id"
FROM "montages"
ORDER BY "user_id", "kind", "interest";
-- NULL only for an item whose montage is gone (none the job leaves behind): no user owns it.
CREATE TABLE "montage_items_008" (
    "montage_id"         UUID NOT NULL,
    "position"           INTEGER NOT NULL,
    "checkin_id"         UUID NOT NULL,
    "checkin_created_at" TIMESTAMPTZ NOT NULL,
    "widget_type"        VARCHAR NOT NULL,
    "widget_metadata"    JSON NOT NULL,
    "user_id"            UUID
);
INSERT INTO "montage_items_008"
SELECT i."montage_id", i."position", i."checkin_id", i."checkin_created_at", i."widget_type", i."widget_metadata",
       m."user_id"
FROM "montage_items" i LEFT JOIN "montages" m ON m."id" = i."montage_id"
ORDER BY m."user_id", i."montage_id", i."position";
DROP TABLE "montage_items";
ALTER TABLE "montage_items_008" RENAME TO "montage_items";
DROP TABLE "montages";
ALTER TABLE "montages_008" RENAME TO "montages";
CREATE TABLE "montage_events_008" (
    "id"           UUID NOT NULL,
    "type"         VARCHAR NOT NULL,
    "aggregate_id" VARCHAR NOT NULL,
    "job_id"       VARCHAR NOT NULL,
    "occurred_at"  TIMESTAMPTZ NOT NULL,
    "payload"      JSON NOT NULL
);
INSERT INTO "montage_events_008"
SELECT "id", "type", "aggregate_id", "job_id", "occurred_at", "payload"
FROM "montage_events"
ORDER BY "occurred_at";
DROP TABLE "montage_events";
ALTER TABLE "montage_events_008" RENAME TO "montage_events";
