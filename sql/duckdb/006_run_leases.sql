-- Fencing tokens per shard, as on PostgreSQL (see sql/postgresql/007_run_leases.sql).
CREATE TABLE IF NOT EXISTS "montage_job_leases" (
    "shard"       VARCHAR PRIMARY KEY,
    "token"       BIGINT NOT NULL,
    "job_id"      VARCHAR NOT NULL,
    "acquired_at" TIMESTAMPTZ NOT NULL
);
