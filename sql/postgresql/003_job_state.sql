-- The job's own bookkeeping: one row per run, the incremental watermark, users to retry.
CREATE TABLE IF NOT EXISTS "montage_job_runs" (
    "job_id"            text PRIMARY KEY,
    "shard"             text NOT NULL,
    "mode"              text NOT NULL,
    "as_of"             timestamptz NOT NULL,
    "started_at"        timestamptz NOT NULL,
    "finished_at"       timestamptz,
    "status"            text NOT NULL,
    "watermark_from"    timestamptz,
    "watermark_to"      timestamptz,
    "processed"         bigint NOT NULL DEFAULT 0,
    "successful"        bigint NOT NULL DEFAULT 0,
    "errors"            bigint NOT NULL DEFAULT 0,
    "general_montages"  bigint NOT NULL DEFAULT 0,
    "interest_montages" bigint NOT NULL DEFAULT 0,
    "message"           text
);

CREATE TABLE IF NOT EXISTS "montage_job_watermarks" (
    "shard"      text PRIMARY KEY,
    "watermark"  timestamptz NOT NULL,
    "job_id"     text NOT NULL,
    "updated_at" timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS "montage_retry_users" (
    "user_id"         uuid PRIMARY KEY,
    "error"           text NOT NULL,
    "attempts"        integer NOT NULL DEFAULT 1,
    "first_failed_at" timestamptz NOT NULL,
    "last_failed_at"  timestamptz NOT NULL,
    "job_id"          text NOT NULL
);
