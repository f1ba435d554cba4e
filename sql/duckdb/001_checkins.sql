-- The app's check-ins. The job only reads them; created here only when absent (demo, tests).
CREATE TABLE IF NOT EXISTS "checkins" (
    "id"            UUID PRIMARY KEY,
    "user_id"       UUID NOT NULL,
    "created_at"    TIMESTAMPTZ NOT NULL,
    "updated_at"    TIMESTAMPTZ NOT NULL,
    "deleted_at"    TIMESTAMPTZ,
    "privacy"       VARCHAR NOT NULL DEFAULT 'public',
    "text_content"  VARCHAR,
    "media_url"     VARCHAR,
    "media_type"    VARCHAR,
    "thumbnail_url" VARCHAR,
    "location_name" VARCHAR,
    "tags"          VARCHAR[] NOT NULL DEFAULT []
);
-- DuckDB's ART indexes take no sort direction; the key set matches PostgreSQL's (user_id, created_at DESC, id DESC).
CREATE INDEX IF NOT EXISTS "checkins_updated_at_idx" ON "checkins" ("updated_at");
CREATE INDEX IF NOT EXISTS "checkins_user_created_idx" ON "checkins" ("user_id", "created_at", "id");
