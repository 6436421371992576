-- MLflow 3's traces (what `@mlflow.trace` and `mlflow.start_span` export): a trace's info is
-- kept here, its spans as a `traces.json` artifact under the workspace's artifact store
-- (`mlflow-artifacts:/{experiment}/traces/{id}/artifacts`, as MLflow's own server keeps them).
-- The id is the client's (`tr-` and the OpenTelemetry trace id), so it is unique per workspace
-- only: one workspace's client can neither collide with nor probe another's traces.
CREATE TABLE traces (
    workspace_id       TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    id                 TEXT NOT NULL,
    experiment_id      TEXT NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
    client_request_id  TEXT,
    -- When the request started and how long it took, in ms (NULL: still in progress).
    request_time       BIGINT NOT NULL,
    execution_duration BIGINT,
    -- OK, ERROR or IN_PROGRESS (MLflow's TraceState).
    state              TEXT NOT NULL,
    request_preview    TEXT,
    response_preview   TEXT,
    -- The run the trace was logged in (its `mlflow.sourceRun` metadata), for the run's page.
    source_run_id      TEXT,
    -- The assessments that came with the trace (MLflow's `Assessment` JSON list), kept as sent.
    assessments_json   TEXT,
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX traces_by_experiment ON traces (experiment_id, request_time);
CREATE INDEX traces_by_run ON traces (workspace_id, source_run_id);

CREATE TABLE trace_tags (
    workspace_id TEXT NOT NULL,
    trace_id     TEXT NOT NULL,
    key          TEXT NOT NULL,
    value        TEXT NOT NULL,
    PRIMARY KEY (workspace_id, trace_id, key),
    FOREIGN KEY (workspace_id, trace_id) REFERENCES traces(workspace_id, id) ON DELETE CASCADE
);

-- MLflow's trace metadata (`mlflow.sourceRun`, `mlflow.user`, `mlflow.trace_schema.version` …):
-- set when the trace is logged, immutable afterwards.
CREATE TABLE trace_metadata (
    workspace_id TEXT NOT NULL,
    trace_id     TEXT NOT NULL,
    key          TEXT NOT NULL,
    value        TEXT NOT NULL,
    PRIMARY KEY (workspace_id, trace_id, key),
    FOREIGN KEY (workspace_id, trace_id) REFERENCES traces(workspace_id, id) ON DELETE CASCADE
);

-- Runs a trace was linked to after it was logged (`MlflowClient.link_traces_to_run`, and
-- `mlflow.genai.evaluate`): a run's traces are those logged in it and those linked to it.
CREATE TABLE trace_run_links (
    workspace_id TEXT NOT NULL,
    trace_id     TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    PRIMARY KEY (workspace_id, trace_id, run_id),
    FOREIGN KEY (workspace_id, trace_id) REFERENCES traces(workspace_id, id) ON DELETE CASCADE
);
CREATE INDEX trace_run_links_by_run ON trace_run_links (workspace_id, run_id);
