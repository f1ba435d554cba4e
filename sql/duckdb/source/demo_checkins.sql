-- The check-ins table `demo` fills: the job's own table (own_checkins.sql) without its primary
-- key and indexes. DuckDB holds an ART index whole in memory while it writes the table, and
-- cannot spill it: at 1,000,000 users (20 M check-ins) the three would need about 3 GB, against
-- the default DUCKDB_MEMORY_LIMIT of 256MB. The job's queries on DuckDB scan and hash-join the
-- table rather than probe an index, and demo's check-in ids are unique by construction.
CREATE TABLE IF NOT EXISTS {checkins} (
    "id"            UUID NOT NULL,
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
