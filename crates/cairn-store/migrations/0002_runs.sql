-- Experiments, runs and their tracking data; environments and compute targets.

CREATE TABLE experiments (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    UNIQUE (workspace_id, name)
);

CREATE TABLE runs (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    experiment_id TEXT NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
    parent_id     TEXT,
    display_name  TEXT NOT NULL,
    status        TEXT NOT NULL,
    -- the submitted job (JSON), empty for runs logged from outside a job
    job           TEXT NOT NULL,
    compute       TEXT,
    environment   TEXT,
    error         TEXT,
    pid           BIGINT,
    created_at    BIGINT NOT NULL,
    started_at    BIGINT,
    ended_at      BIGINT
);
CREATE INDEX runs_by_experiment ON runs (experiment_id, created_at);
CREATE INDEX runs_by_status ON runs (status, created_at);

CREATE TABLE run_transitions (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    status TEXT NOT NULL,
    at     BIGINT NOT NULL
);
CREATE INDEX run_transitions_by_run ON run_transitions (run_id, at);

-- value NULL means NaN (SQLite cannot store NaN; PostgreSQL could, but one rule for both)
CREATE TABLE metrics (
    run_id    TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    key       TEXT NOT NULL,
    value     DOUBLE PRECISION,
    step      BIGINT NOT NULL,
    timestamp BIGINT NOT NULL
);
CREATE INDEX metrics_by_run_key ON metrics (run_id, key, step);

CREATE TABLE latest_metrics (
    run_id    TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    key       TEXT NOT NULL,
    value     DOUBLE PRECISION,
    step      BIGINT NOT NULL,
    timestamp BIGINT NOT NULL,
    PRIMARY KEY (run_id, key)
);

CREATE TABLE params (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);

CREATE TABLE run_tags (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);

CREATE TABLE environments (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    version      BIGINT NOT NULL,
    description  TEXT NOT NULL,
    spec         TEXT NOT NULL,
    hash         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    UNIQUE (workspace_id, name, version)
);

CREATE TABLE computes (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    kind         TEXT NOT NULL,
    size         TEXT NOT NULL,
    min_nodes    BIGINT NOT NULL,
    max_nodes    BIGINT NOT NULL,
    idle_seconds BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    UNIQUE (workspace_id, name)
);

-- A token may be limited to one run (the run-scoped token a job receives).
ALTER TABLE tokens ADD COLUMN run_id TEXT;
