-- Montages or items deleted by anyone but the job (an operator's cleanup, a restore script)
-- land in montage_changes like source changes, so the next run rewrites those users. The
-- job's own chunk writes set montage_vec.job_write for their transaction and are skipped.
-- The search_path is pinned to the one `migrate` ran with (the job's schema).
CREATE OR REPLACE FUNCTION "montage_capture_montage_deletes"() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $montage_vec$
BEGIN
    IF coalesce(current_setting('montage_vec.job_write', true), '') = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_TABLE_NAME = 'montages' THEN
        INSERT INTO "montage_changes" ("xid", "user_id")
        SELECT DISTINCT pg_current_xact_id(), "user_id" FROM "montage_old_rows";
    ELSE
        INSERT INTO "montage_changes" ("xid", "user_id")
        SELECT DISTINCT pg_current_xact_id(), m."user_id"
        FROM "montage_old_rows" o JOIN "montages" m ON m."id" = o."montage_id";
    END IF;
    RETURN NULL;
END
$montage_vec$;

CREATE OR REPLACE TRIGGER "montage_vec_capture_montage_deletes" AFTER DELETE ON "montages"
REFERENCING OLD TABLE AS "montage_old_rows"
FOR EACH STATEMENT EXECUTE FUNCTION "montage_capture_montage_deletes"();

CREATE OR REPLACE TRIGGER "montage_vec_capture_item_deletes" AFTER DELETE ON "montage_items"
REFERENCING OLD TABLE AS "montage_old_rows"
FOR EACH STATEMENT EXECUTE FUNCTION "montage_capture_montage_deletes"();

-- Whether a run ran the reconciliation query (MONTAGE_RECONCILE_EVERY counts runs since).
ALTER TABLE "montage_job_runs" ADD COLUMN IF NOT EXISTS "reconciled" boolean NOT NULL DEFAULT false;
