-- Online deployments: the replicas behind an endpoint. `spec` is the deployment as created (JSON:
-- model, code snapshot, environment, instance count, request settings, variables); the model
-- version it uses is also recorded in model_version_uses so that version cannot be deleted.
-- `state` is Creating, Healthy, Unhealthy, Failed or Deleting; `reason` says why when not Healthy.

CREATE TABLE deployments (
    id            TEXT PRIMARY KEY,
    endpoint_id   TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    spec          TEXT NOT NULL,
    state         TEXT NOT NULL,
    reason        TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    UNIQUE (endpoint_id, name)
);
