-- The model registry: registered models, their numbered versions with a file manifest, tags,
-- aliases, and the uses (deployments) that keep a version from being deleted. Shaped so that the
-- MLflow registry API (registered models, model versions, legacy stages, aliases, MLflow 3's
-- logged-model ids) maps onto it without another migration.

CREATE TABLE registered_models (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    description  TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    -- the last version number handed out: versions are allocated by incrementing it in the same
    -- statement that finds (or creates) the model, and are never reused after a deletion
    last_version BIGINT NOT NULL,
    UNIQUE (workspace_id, name)
);
CREATE INDEX registered_models_by_update ON registered_models (workspace_id, updated_at);

CREATE TABLE registered_model_tags (
    model_id TEXT NOT NULL REFERENCES registered_models(id) ON DELETE CASCADE,
    key      TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (model_id, key)
);

CREATE TABLE model_versions (
    id                TEXT PRIMARY KEY,
    model_id          TEXT NOT NULL REFERENCES registered_models(id) ON DELETE CASCADE,
    version           BIGINT NOT NULL,
    description       TEXT NOT NULL,
    status            TEXT NOT NULL,
    -- MLflow's legacy stages: None, Staging, Production, Archived
    stage             TEXT NOT NULL DEFAULT 'None',
    source            TEXT NOT NULL,
    run_id            TEXT,
    experiment_id     TEXT,
    -- MLflow 3's logged model (`model_id`)
    logged_model_id   TEXT,
    framework         TEXT,
    framework_version TEXT,
    -- JSON object of strings, set at registration
    properties        TEXT NOT NULL,
    created_by        TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    size              BIGINT NOT NULL,
    UNIQUE (model_id, version)
);
CREATE INDEX model_versions_by_run ON model_versions (run_id);

CREATE TABLE model_version_tags (
    version_id TEXT NOT NULL REFERENCES model_versions(id) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    PRIMARY KEY (version_id, key)
);

-- The manifest; the bytes are content-addressed blobs of the workspace (shared with code snapshots).
CREATE TABLE model_version_files (
    version_id TEXT NOT NULL REFERENCES model_versions(id) ON DELETE CASCADE,
    path       TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    size       BIGINT NOT NULL,
    PRIMARY KEY (version_id, path)
);

CREATE TABLE model_aliases (
    model_id   TEXT NOT NULL REFERENCES registered_models(id) ON DELETE CASCADE,
    alias      TEXT NOT NULL,
    version_id TEXT NOT NULL REFERENCES model_versions(id) ON DELETE CASCADE,
    PRIMARY KEY (model_id, alias)
);

-- Who uses a version (e.g. a deployment); a used version cannot be deleted.
CREATE TABLE model_version_uses (
    version_id TEXT NOT NULL REFERENCES model_versions(id) ON DELETE CASCADE,
    user_kind  TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (version_id, user_kind, user_id)
);
