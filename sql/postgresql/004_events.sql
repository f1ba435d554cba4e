-- Transactional outbox: written in the same transaction as the change it describes.
-- Ids are derived from (type, aggregate, job), so a relay can drop duplicates.
CREATE TABLE IF NOT EXISTS "montage_events" (
    "id"           uuid PRIMARY KEY,
    "type"         text NOT NULL,
    "aggregate_id" text NOT NULL,
    "job_id"       text NOT NULL,
    "occurred_at"  timestamptz NOT NULL,
    "payload"      jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS "montage_events_occurred_at_idx" ON "montage_events" ("occurred_at");
