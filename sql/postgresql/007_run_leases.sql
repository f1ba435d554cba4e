-- Fencing: each run that takes a shard's lock raises the shard's token, and every chunk
-- checks in its own transaction that the token is still its run's. A run whose lock went
-- with its connection (a restart, a network cut) and that another run took over can then
-- never write again, even if it keeps running (README, "Reliability").
CREATE TABLE IF NOT EXISTS "montage_job_leases" (
    "shard"       text PRIMARY KEY,
    "token"       bigint NOT NULL,
    "job_id"      text NOT NULL,
    "acquired_at" timestamptz NOT NULL
);
