-- Whether a run ran the reconciliation query (MONTAGE_RECONCILE_EVERY counts runs since).
ALTER TABLE "montage_job_runs" ADD COLUMN IF NOT EXISTS "reconciled" BOOLEAN DEFAULT false;
