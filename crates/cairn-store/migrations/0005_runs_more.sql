-- Run properties (Azure ML's `add_properties`): like params, set once and never changed, but
-- free-form facts about the run rather than its inputs. And an index for listing a run's children.

CREATE TABLE run_properties (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);

CREATE INDEX runs_by_parent ON runs (parent_id);
