-- DuckDB holds an ART index (PRIMARY KEY, UNIQUE, CREATE INDEX) whole in memory while a
-- transaction writes its table, and cannot spill it to disk: a chunk inserting rows with random
-- keys touches, and so loads, all of it. At 1,000,000 users these three would need about 570 MB,
-- against the default DUCKDB_MEMORY_LIMIT of 256MB. None serves the job on DuckDB, whose
-- queries scan and hash-join: items are replaced by montage (delete, then insert), and
-- valid_until and occurred_at are range filters, which zone maps serve. The keys the writes
-- rely on stay: montages' id and (user_id, kind, interest), and the events' id.
DROP INDEX IF EXISTS "montages_valid_until_idx";
DROP INDEX IF EXISTS "montage_events_occurred_at_idx";
-- DuckDB cannot drop a primary key: the items move to a table without one.
CREATE TABLE "montage_items_007" (
    "montage_id"         UUID NOT NULL,
    "position"           INTEGER NOT NULL,
    "checkin_id"         UUID NOT NULL,
    "checkin_created_at" TIMESTAMPTZ NOT NULL,
    "widget_type"        VARCHAR NOT NULL,
    "widget_metadata"    JSON NOT NULL
);
INSERT INTO "montage_items_007"
SELECT "montage_id", "position", "checkin_id", "checkin_created_at", "widget_type", "widget_metadata"
FROM "montage_items";
DROP TABLE "montage_items";
ALTER TABLE "montage_items_007" RENAME TO "montage_items";
