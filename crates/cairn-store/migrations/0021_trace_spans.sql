-- Spans that came over OTLP (`POST …/mlflow/v1/traces`, what MLflow 3.4+ clients and any
-- OpenTelemetry exporter send), one row per span, as MLflow's own server keeps them in its
-- `spans` table. `content` is the span as MLflow's `Span.to_dict` writes it (the same JSON a
-- `traces.json` artifact holds), so both kinds of trace are read the same way. A trace whose
-- spans are here carries the tag `mlflow.trace.spansLocation = TRACKING_STORE`.
CREATE TABLE trace_spans (
    workspace_id   TEXT NOT NULL,
    trace_id       TEXT NOT NULL,
    -- 16 lowercase hex digits (the OpenTelemetry span id).
    span_id        TEXT NOT NULL,
    parent_span_id TEXT,
    name           TEXT NOT NULL,
    -- MLflow's `mlflow.spanType` (LLM, CHAIN, TOOL …), NULL when the span has none.
    span_type      TEXT,
    -- OK, ERROR or UNSET.
    status         TEXT NOT NULL,
    start_ns       BIGINT NOT NULL,
    end_ns         BIGINT,
    content        TEXT NOT NULL,
    PRIMARY KEY (workspace_id, trace_id, span_id),
    FOREIGN KEY (workspace_id, trace_id) REFERENCES traces(workspace_id, id) ON DELETE CASCADE
);
