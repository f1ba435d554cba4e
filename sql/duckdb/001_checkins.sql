-- Until montage-vec 0.9 this migration created the check-ins table and two indexes on it.
-- That touched a relation the job does not own (and failed when it was a view), so it no
-- longer does anything: `migrate` creates the job's own check-ins table only when no
-- relation of the source's name exists (sql/<backend>/source/own_checkins.sql), and indexes
-- an application's table only when asked (`migrate --source-indexes`). A database that
-- applied the old text is accepted (migrations.SUPERSEDED_CHECKSUMS).
SELECT 1
