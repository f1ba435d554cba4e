-- Montages and their items, read by the user service.
CREATE TABLE IF NOT EXISTS "montages" (
    "id"               UUID PRIMARY KEY,
    "user_id"          UUID NOT NULL,
    "kind"             VARCHAR NOT NULL CHECK ("kind" IN ('general', 'interest')),
    "interest"         VARCHAR NOT NULL DEFAULT '',
    "item_count"       INTEGER NOT NULL,
    "generated_at"     TIMESTAMPTZ NOT NULL,
    "cache_expires_at" TIMESTAMPTZ NOT NULL,
    "valid_until"      TIMESTAMPTZ,
    "job_id"           VARCHAR NOT NULL,
    UNIQUE ("user_id", "kind", "interest")
);
CREATE INDEX IF NOT EXISTS "montages_valid_until_idx" ON "montages" ("valid_until");

-- No FOREIGN KEY here: DuckDB has no ON DELETE CASCADE, and the job deletes items with their montage itself.
CREATE TABLE IF NOT EXISTS "montage_items" (
    "montage_id"         UUID NOT NULL,
    "position"           INTEGER NOT NULL,
    "checkin_id"         UUID NOT NULL,
    "checkin_created_at" TIMESTAMPTZ NOT NULL,
    "widget_type"        VARCHAR NOT NULL,
    "widget_metadata"    JSON NOT NULL,
    PRIMARY KEY ("montage_id", "position")
);
