-- The param and metric keys logged in each experiment: the runs table's columns. log_batch adds
-- a run's new keys as it writes them, so the studio reads an experiment's whole key set with one
-- index range instead of a DISTINCT over every run's params and latest metrics (which grows with
-- the runs: ~55 ms of CPU on SQLite for 10,000 runs × 30 keys). Keys are never removed: a run
-- deleted later (and perhaps restored) keeps its columns, empty.
CREATE TABLE experiment_keys (
    experiment_id TEXT NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
    -- 'param' or 'metric'
    kind          TEXT NOT NULL,
    key           TEXT NOT NULL,
    PRIMARY KEY (experiment_id, kind, key)
);

INSERT INTO experiment_keys (experiment_id, kind, key)
    SELECT DISTINCT r.experiment_id, 'param', p.key FROM params p JOIN runs r ON r.id = p.run_id;
INSERT INTO experiment_keys (experiment_id, kind, key)
    SELECT DISTINCT r.experiment_id, 'metric', m.key FROM latest_metrics m JOIN runs r ON r.id = m.run_id;
