-- MLflow 3's logged models (what `mlflow.<flavor>.log_model` creates before uploading files) and
-- a run's inputs and outputs (datasets and logged models), as MLflow's run view returns them.

CREATE TABLE logged_models (
    id             TEXT PRIMARY KEY,
    workspace_id   TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    experiment_id  TEXT NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    model_type     TEXT NOT NULL,
    source_run_id  TEXT NOT NULL,
    status         TEXT NOT NULL,
    status_message TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    deleted_at     BIGINT
);
CREATE INDEX logged_models_by_experiment ON logged_models (experiment_id, created_at);

CREATE TABLE logged_model_tags (
    model_id TEXT NOT NULL REFERENCES logged_models(id) ON DELETE CASCADE,
    key      TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (model_id, key)
);

CREATE TABLE logged_model_params (
    model_id TEXT NOT NULL REFERENCES logged_models(id) ON DELETE CASCADE,
    key      TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (model_id, key)
);

-- direction is 'input' (a model the run used) or 'output' (a model the run produced, at a step).
CREATE TABLE run_models (
    run_id    TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    model_id  TEXT NOT NULL,
    direction TEXT NOT NULL,
    step      BIGINT NOT NULL,
    PRIMARY KEY (run_id, model_id, direction)
);

-- A dataset a run used: MLflow's Dataset message and the input's tags, kept as the JSON the
-- client sent (Cairn does not interpret them), one row per (name, digest).
CREATE TABLE run_datasets (
    run_id       TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    digest       TEXT NOT NULL,
    dataset_json TEXT NOT NULL,
    tags_json    TEXT NOT NULL,
    logged_at    BIGINT NOT NULL,
    PRIMARY KEY (run_id, name, digest)
);
