-- The `cairn server`s of one database (several may share a PostgreSQL database). Each keeps a
-- stable id in its data directory, registers here at start and refreshes `last_seen` every few
-- seconds; `stopped_at` is set by a clean stop. A run or deployment records the server that
-- runs it (`server_id`): jobs and replicas are processes of that server's machine and folders
-- of its data directory, so only that server recovers or relaunches them. NULL: recorded
-- before this migration (see jobs::recover for who takes those).
CREATE TABLE servers (
    id          TEXT PRIMARY KEY,
    host        TEXT NOT NULL,
    url         TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL,
    -- Milliseconds without a heartbeat after which others show this server as unreachable.
    stale_after BIGINT NOT NULL,
    stopped_at  BIGINT
);

ALTER TABLE runs ADD COLUMN server_id TEXT;
ALTER TABLE deployments ADD COLUMN server_id TEXT;
