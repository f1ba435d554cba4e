-- Users touched by writes to the check-ins source, appended by the capture triggers
-- (sql/postgresql/source/capture_triggers.sql) with the writing transaction's id. A run
-- reads the rows its snapshot sees and deletes exactly those when it completes.
CREATE TABLE IF NOT EXISTS "montage_changes" (
    "xid"     xid8 NOT NULL,
    "user_id" uuid NOT NULL
);
