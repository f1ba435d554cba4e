-- Transactional outbox: written in the same transaction as the change it describes.
-- Ids are derived from (type, aggregate, job), so a relay can drop duplicates.
CREATE TABLE IF NOT EXISTS "montage_events" (
    "id"           UUID PRIMARY KEY,
    "type"         VARCHAR NOT NULL,
    "aggregate_id" VARCHAR NOT NULL,
    "job_id"       VARCHAR NOT NULL,
    "occurred_at"  TIMESTAMPTZ NOT NULL,
    "payload"      JSON NOT NULL
);
CREATE INDEX IF NOT EXISTS "montage_events_occurred_at_idx" ON "montage_events" ("occurred_at");
