-- The job's own check-ins table, for the embedded default, the demo and tests: `migrate`
-- creates it only when MONTAGE_SOURCE is the default and no relation of that name exists.
-- An application's own table or view is never created or altered by `migrate`.
CREATE TABLE IF NOT EXISTS {checkins} (
    "id"            uuid PRIMARY KEY,
    "user_id"       uuid NOT NULL,
    "created_at"    timestamptz NOT NULL,
    "updated_at"    timestamptz NOT NULL,
    "deleted_at"    timestamptz,
    "privacy"       text NOT NULL DEFAULT 'public',
    "text_content"  text,
    "media_url"     text,
    "media_type"    text,
    "thumbnail_url" text,
    "location_name" text,
    "tags"          text[] NOT NULL DEFAULT '{}'
);
-- Incremental candidate selection scans only recent changes.
CREATE INDEX IF NOT EXISTS "checkins_updated_at_idx" ON {checkins} ("updated_at");
-- Extraction reads a user's check-ins in item order; also serves DISTINCT user_id for full runs.
CREATE INDEX IF NOT EXISTS "checkins_user_created_idx" ON {checkins} ("user_id", "created_at" DESC, "id" DESC);
