-- Who created a run: the MLflow client's `user_id` for runs created through the MLflow API (the
-- stock client sends its `mlflow.user` tag, or "unknown"), else the name of the caller's token.
-- NULL: created before this migration (their MLflow `user_id` stays the `mlflow.user` tag).
ALTER TABLE runs ADD COLUMN created_by TEXT;
