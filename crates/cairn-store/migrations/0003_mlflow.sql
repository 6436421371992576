-- What the MLflow-compatible API needs beyond the native one: the lifecycle of experiments and
-- runs (MLflow deletes softly and can restore) and experiment tags.

ALTER TABLE experiments ADD COLUMN deleted_at BIGINT;
ALTER TABLE runs ADD COLUMN deleted_at BIGINT;

CREATE TABLE experiment_tags (
    experiment_id TEXT NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
    key           TEXT NOT NULL,
    value         TEXT NOT NULL,
    PRIMARY KEY (experiment_id, key)
);
