-- The job's own bookkeeping: one row per run, the incremental watermark, users to retry.
CREATE TABLE IF NOT EXISTS "montage_job_runs" (
    "job_id"            VARCHAR PRIMARY KEY,
    "shard"             VARCHAR NOT NULL,
    "mode"              VARCHAR NOT NULL,
    "as_of"             TIMESTAMPTZ NOT NULL,
    "started_at"        TIMESTAMPTZ NOT NULL,
    "finished_at"       TIMESTAMPTZ,
    "status"            VARCHAR NOT NULL,
    "watermark_from"    TIMESTAMPTZ,
    "watermark_to"      TIMESTAMPTZ,
    "processed"         BIGINT NOT NULL DEFAULT 0,
    "successful"        BIGINT NOT NULL DEFAULT 0,
    "errors"            BIGINT NOT NULL DEFAULT 0,
    "general_montages"  BIGINT NOT NULL DEFAULT 0,
    "interest_montages" BIGINT NOT NULL DEFAULT 0,
    "message"           VARCHAR
);

CREATE TABLE IF NOT EXISTS "montage_job_watermarks" (
    "shard"      VARCHAR PRIMARY KEY,
    "watermark"  TIMESTAMPTZ NOT NULL,
    "job_id"     VARCHAR NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS "montage_retry_users" (
    "user_id"         UUID PRIMARY KEY,
    "error"           VARCHAR NOT NULL,
    "attempts"        INTEGER NOT NULL DEFAULT 1,
    "first_failed_at" TIMESTAMPTZ NOT NULL,
    "last_failed_at"  TIMESTAMPTZ NOT NULL,
    "job_id"          VARCHAR NOT NULL
);
