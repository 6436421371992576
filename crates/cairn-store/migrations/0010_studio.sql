-- The studio: the runs of a whole workspace, newest first (all-runs table, column discovery).
CREATE INDEX runs_by_workspace ON runs (workspace_id, created_at);
