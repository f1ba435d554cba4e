-- A least-privileged role for montage-vec's runs (README, "Least privilege").
--
-- Run it with psql, as the owner of the job's tables (the role that ran `montage-vec migrate`),
-- in the job's database, after `migrate`; run it again after each upgrade whose `migrate`
-- adds a table (it only grants, so running it twice changes nothing):
--
--   psql "postgresql://owner@host/app" -f sql/postgresql/roles.sql \
--        -v role=montage_job -v job_schema=montage -v source=app.checkins
--
--   role        the job's role (required); created, with LOGIN, when it does not exist (that
--               needs CREATEROLE); set its password yourself: \password montage_job
--   job_schema  MONTAGE_SCHEMA, the schema of the job's tables (default: the current schema)
--   source      MONTAGE_SOURCE, the check-ins table or view the job reads (default: checkins);
--               schema-qualified unless it is on the owner's search_path
--
-- What the role gets, and nothing more:
--   CONNECT and TEMPORARY on the database   (runs stage each chunk in temporary tables)
--   USAGE on the job's schema and on the source's schema
--   SELECT on the source                     (a view's own owner needs SELECT on its tables)
--   SELECT, INSERT, UPDATE, DELETE on the job's tables, USAGE on their sequences (none today)
--   SELECT on montage_schema_migrations       (runs and `health` check the schema is migrated)
--
-- What the role does not need: CREATE anywhere (`migrate` with nothing to apply only reads;
-- migrations and `migrate --source-indexes` / `--capture-triggers` stay with the owner),
-- ownership of anything, or privileges for its run locks (advisory locks). The capture
-- triggers' function runs with its owner's rights, so neither the job's role nor the
-- application's needs more for them. Optional: in watermark mode without capture triggers,
--   GRANT pg_read_all_stats TO montage_job;
-- lets the role see other roles' open transactions (`health` warns without it).
--
-- Default privileges on PUBLIC (CONNECT and TEMPORARY on every database; USAGE on schema
-- public) are PostgreSQL's; revoking them from PUBLIC does not affect this role.

\set ON_ERROR_STOP on

\if :{?role}
\else
DO $roles$ BEGIN RAISE EXCEPTION 'roles.sql: name the job''s role: psql -v role=montage_job -f roles.sql'; END $roles$;
\endif
\if :{?job_schema}
\else
SELECT current_schema() AS "job_schema" \gset
\endif
\if :{?source}
\else
\set source checkins
\endif
-- The job's tables (montage_vec/stores/tables.py, JOB_TABLES); those that exist are granted,
-- so a table a later release adds is granted when this is run again after its `migrate`.
\set job_tables '{montages,montage_items,montage_job_runs,montage_job_watermarks,montage_job_leases,montage_retry_users,montage_events,montage_changes}'

SELECT to_regclass(:'source') IS NOT NULL AS "source_exists",
       EXISTS (SELECT FROM pg_namespace WHERE "nspname" = :'job_schema') AS "job_schema_exists" \gset
\if :source_exists
\else
DO $roles$ BEGIN RAISE EXCEPTION 'roles.sql: the check-in source (-v source=...) does not exist'; END $roles$;
\endif
\if :job_schema_exists
\else
DO $roles$ BEGIN RAISE EXCEPTION 'roles.sql: the job''s schema (-v job_schema=...) does not exist: run `montage-vec migrate` first'; END $roles$;
\endif

BEGIN;

SELECT format('CREATE ROLE %I LOGIN', :'role')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE "rolname" = :'role') \gexec

SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', current_database(), :'role') \gexec

SELECT format('GRANT USAGE ON SCHEMA %I TO %I', :'job_schema', :'role') \gexec

-- The source: its schema and SELECT on it, named as the catalog quotes it.
SELECT format('GRANT USAGE ON SCHEMA %I TO %I', n."nspname", :'role'),
       format('GRANT SELECT ON %s TO %I', c."oid"::regclass, :'role')
FROM pg_class c JOIN pg_namespace n ON n."oid" = c."relnamespace"
WHERE c."oid" = to_regclass(:'source') \gexec

-- The job's own tables.
SELECT format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I.%I TO %I', n."nspname", c."relname", :'role')
FROM pg_class c JOIN pg_namespace n ON n."oid" = c."relnamespace"
WHERE n."nspname" = :'job_schema' AND c."relkind" IN ('r', 'p')
  AND c."relname" = ANY (:'job_tables'::text[]) \gexec

-- The migrations table is the owner's: the job only reads it.
SELECT format('GRANT SELECT ON %I.%I TO %I', n."nspname", c."relname", :'role')
FROM pg_class c JOIN pg_namespace n ON n."oid" = c."relnamespace"
WHERE n."nspname" = :'job_schema' AND c."relname" = 'montage_schema_migrations' AND c."relkind" IN ('r', 'p') \gexec

-- Sequences behind the job's tables' columns (serial or identity), should a release add one.
SELECT format('GRANT USAGE, SELECT ON SEQUENCE %I.%I TO %I', sn."nspname", s."relname", :'role')
FROM pg_depend d
JOIN pg_class s ON s."oid" = d."objid" AND s."relkind" = 'S'
JOIN pg_namespace sn ON sn."oid" = s."relnamespace"
JOIN pg_class t ON t."oid" = d."refobjid"
JOIN pg_namespace tn ON tn."oid" = t."relnamespace"
WHERE d."classid" = 'pg_class'::regclass AND d."refclassid" = 'pg_class'::regclass AND d."deptype" IN ('a', 'i')
  AND tn."nspname" = :'job_schema' AND t."relname" = ANY (:'job_tables'::text[]) \gexec

COMMIT;
