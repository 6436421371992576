-- Compute sizes users define for their workspace, next to the shipped ones
-- (cairn_jobs::compute::SIZES, never stored). Memory is kept in MiB as an integer (portable).

CREATE TABLE compute_sizes (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    cores        BIGINT NOT NULL,
    memory_mb    BIGINT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    UNIQUE (workspace_id, name)
);
