-- montage_items.montage_id references montages.id (the contract) and a deleted montage takes
-- its items with it. The foreign key checked that with a trigger per inserted row, which was
-- half the cost of a full run's items insert (benchmarks/README.md, "Write path"). The
-- triggers below keep the same guarantees, checked once per statement:
--   * no item without its montage (SQLSTATE 23503, as the foreign key raised), the montages
--     locked FOR KEY SHARE as the foreign key's check locked them, so that a concurrent
--     delete waits for the inserting transaction;
--   * deleting montages deletes their items (the delete triggers of 006 see both);
--   * a referenced montage's id does not change, and montages cannot be truncated without
--     their items.
-- The search_path is pinned to the one `migrate` ran with (the job's schema).
ALTER TABLE "montage_items" DROP CONSTRAINT IF EXISTS "montage_items_montage_id_fkey";

CREATE OR REPLACE FUNCTION "montage_items_check_reference"() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $montage_vec$
DECLARE
    "referenced" bigint;
    "locked" bigint;
    "missing" uuid;
BEGIN
    -- Counts, not an anti-join: transition tables have no statistics, and a planner that
    -- takes them for small loops over one per row of the other.
    SELECT count(DISTINCT "montage_id") INTO "referenced" FROM "montage_new_items";
    SELECT count(*) INTO "locked" FROM (
        SELECT 1 FROM "montages" m
        WHERE m."id" = ANY(ARRAY(SELECT DISTINCT "montage_id" FROM "montage_new_items"))
        FOR KEY SHARE OF m
    ) AS "present";
    IF "locked" < "referenced" THEN
        SELECT n."montage_id" INTO "missing" FROM "montage_new_items" n
        WHERE NOT EXISTS (SELECT 1 FROM "montages" m WHERE m."id" = n."montage_id")
        LIMIT 1;
        RAISE EXCEPTION 'insert or update on table "montage_items" violates its reference to "montages"'
            USING ERRCODE = 'foreign_key_violation',
                  DETAIL = format('Key (montage_id)=(%s) is not present in table "montages".', "missing");
    END IF;
    RETURN NULL;
END
$montage_vec$;

CREATE OR REPLACE TRIGGER "montage_vec_item_reference_on_insert" AFTER INSERT ON "montage_items"
REFERENCING NEW TABLE AS "montage_new_items"
FOR EACH STATEMENT EXECUTE FUNCTION "montage_items_check_reference"();

CREATE OR REPLACE TRIGGER "montage_vec_item_reference_on_update" AFTER UPDATE ON "montage_items"
REFERENCING NEW TABLE AS "montage_new_items"
FOR EACH STATEMENT EXECUTE FUNCTION "montage_items_check_reference"();

CREATE OR REPLACE FUNCTION "montages_delete_their_items"() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $montage_vec$
BEGIN
    -- An array of ids makes this primary-key probes; a join would hash all of montage_items.
    DELETE FROM "montage_items"
    WHERE "montage_id" = ANY(ARRAY(SELECT "id" FROM "montage_deleted_montages"));
    RETURN NULL;
END
$montage_vec$;

CREATE OR REPLACE TRIGGER "montage_vec_delete_items_of_montages" AFTER DELETE ON "montages"
REFERENCING OLD TABLE AS "montage_deleted_montages"
FOR EACH STATEMENT EXECUTE FUNCTION "montages_delete_their_items"();

CREATE OR REPLACE FUNCTION "montages_refuse_referenced_id_change"() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $montage_vec$
BEGIN
    IF EXISTS (SELECT 1 FROM "montage_items" WHERE "montage_id" = OLD."id") THEN
        RAISE EXCEPTION 'update on table "montages" would leave items without their montage'
            USING ERRCODE = 'foreign_key_violation',
                  DETAIL = format('Key (id)=(%s) is still referenced from table "montage_items".', OLD."id");
    END IF;
    RETURN NEW;
END
$montage_vec$;

CREATE OR REPLACE TRIGGER "montage_vec_refuse_referenced_id_change" BEFORE UPDATE OF "id" ON "montages"
FOR EACH ROW WHEN (OLD."id" IS DISTINCT FROM NEW."id")
EXECUTE FUNCTION "montages_refuse_referenced_id_change"();

CREATE OR REPLACE FUNCTION "montages_refuse_truncate_without_items"() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $montage_vec$
BEGIN
    -- After the truncation: `TRUNCATE montages, montage_items` has emptied both by now.
    IF EXISTS (SELECT 1 FROM "montage_items") THEN
        RAISE EXCEPTION 'cannot truncate "montages" while "montage_items" holds rows'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Truncate both in one statement: TRUNCATE "montages", "montage_items".';
    END IF;
    RETURN NULL;
END
$montage_vec$;

CREATE OR REPLACE TRIGGER "montage_vec_refuse_truncate_without_items" AFTER TRUNCATE ON "montages"
FOR EACH STATEMENT EXECUTE FUNCTION "montages_refuse_truncate_without_items"();
