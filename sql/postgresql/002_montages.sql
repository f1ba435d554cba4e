-- Montages and their items, read by the user service.
CREATE TABLE IF NOT EXISTS "montages" (
    "id"               uuid PRIMARY KEY,
    "user_id"          uuid NOT NULL,
    "kind"             text NOT NULL CHECK ("kind" IN ('general', 'interest')),
    "interest"         text NOT NULL DEFAULT '',
    "item_count"       integer NOT NULL,
    "generated_at"     timestamptz NOT NULL,
    "cache_expires_at" timestamptz NOT NULL,
    "valid_until"      timestamptz,
    "job_id"           text NOT NULL,
    CONSTRAINT "montages_user_kind_interest_key" UNIQUE ("user_id", "kind", "interest")
);
-- Incremental runs pick up interests that aged out.
CREATE INDEX IF NOT EXISTS "montages_valid_until_idx" ON "montages" ("valid_until") WHERE "valid_until" IS NOT NULL;

CREATE TABLE IF NOT EXISTS "montage_items" (
    "montage_id"         uuid NOT NULL REFERENCES "montages" ("id") ON DELETE CASCADE,
    "position"           integer NOT NULL,
    "checkin_id"         uuid NOT NULL,
    "checkin_created_at" timestamptz NOT NULL,
    "widget_type"        text NOT NULL,
    "widget_metadata"    jsonb NOT NULL,
    PRIMARY KEY ("montage_id", "position")
);
