-- Metrics of MLflow 3's logged models: a run's metric logged with a `model_id` (explicitly, or by
-- the client because the model was logged at that step) also belongs to that model, optionally
-- measured on a dataset. MLflow's model page, `LoggedModel.metrics` and `search_logged_models`
-- (`metrics.rmse < 1`, ordering by a metric) read these. A value is NULL when it was NaN (how
-- SQLite stores a NaN; PostgreSQL keeps NaN).
CREATE TABLE logged_model_metrics (
    model_id       TEXT NOT NULL REFERENCES logged_models(id) ON DELETE CASCADE,
    key            TEXT NOT NULL,
    value          DOUBLE PRECISION,
    timestamp      BIGINT NOT NULL,
    step           BIGINT NOT NULL,
    run_id         TEXT NOT NULL,
    dataset_name   TEXT NOT NULL,
    dataset_digest TEXT NOT NULL,
    -- MLflow's key: logging the same point again (a client retry) is not a second point.
    PRIMARY KEY (model_id, key, timestamp, step, run_id, dataset_name, dataset_digest)
);
