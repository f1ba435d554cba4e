-- Exact change capture (README, "Change capture"). Three statement-level triggers on the
-- check-ins source (PostgreSQL allows transition tables only on single-event triggers)
-- append the users each write statement touched, OLD and NEW, so moves and hard deletes
-- are seen, with the writing transaction's id. One INSERT ... SELECT per statement, never
-- one per row. The function runs with its owner's rights (the job's role), so the
-- application's role needs no privilege on the job's tables; its search_path is pinned
-- because it runs inside the application's transactions.
CREATE OR REPLACE FUNCTION {capture_function}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $montage_vec$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {montage_changes} ("xid", "user_id")
        SELECT DISTINCT pg_current_xact_id(), "user_id" FROM "montage_new_rows" WHERE "user_id" IS NOT NULL;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO {montage_changes} ("xid", "user_id")
        SELECT DISTINCT pg_current_xact_id(), "user_id" FROM "montage_old_rows" WHERE "user_id" IS NOT NULL;
    ELSE
        INSERT INTO {montage_changes} ("xid", "user_id")
        SELECT pg_current_xact_id(), touched."user_id"
        FROM (SELECT "user_id" FROM "montage_old_rows" UNION SELECT "user_id" FROM "montage_new_rows") touched
        WHERE touched."user_id" IS NOT NULL;
    END IF;
    RETURN NULL;
END
$montage_vec$;

CREATE OR REPLACE TRIGGER "montage_vec_capture_insert" AFTER INSERT ON {checkins}
REFERENCING NEW TABLE AS "montage_new_rows"
FOR EACH STATEMENT EXECUTE FUNCTION {capture_function}();

CREATE OR REPLACE TRIGGER "montage_vec_capture_update" AFTER UPDATE ON {checkins}
REFERENCING OLD TABLE AS "montage_old_rows" NEW TABLE AS "montage_new_rows"
FOR EACH STATEMENT EXECUTE FUNCTION {capture_function}();

CREATE OR REPLACE TRIGGER "montage_vec_capture_delete" AFTER DELETE ON {checkins}
REFERENCING OLD TABLE AS "montage_old_rows"
FOR EACH STATEMENT EXECUTE FUNCTION {capture_function}();
