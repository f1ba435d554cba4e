-- The job's own check-ins table, for the embedded default, the demo and tests: `migrate`
-- creates it only when MONTAGE_SOURCE is the default and no relation of that name exists.
-- An application's own table or view is never created or altered by `migrate`.
CREATE TABLE IF NOT EXISTS {checkins} (
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
CREATE INDEX IF NOT EXISTS "checkins_updated_at_idx" ON {checkins} ("updated_at");
CREATE INDEX IF NOT EXISTS "checkins_user_created_idx" ON {checkins} ("user_id", "created_at", "id");
