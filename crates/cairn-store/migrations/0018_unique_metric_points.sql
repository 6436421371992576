-- A metric point is its run, key, step, timestamp and value, as in MLflow (whose `metrics` key is
-- those plus is_nan): logging the same point again, as a client does when it retries a log_batch
-- whose answer it did not get, does not add a second point. log_batch inserts with
-- ON CONFLICT DO NOTHING and counts in the tiles only the points it inserted.
--
-- NaN is NULL in SQLite (and NaN, equal to itself, in PostgreSQL); a unique index takes NULLs as
-- distinct, so the index keys on COALESCE(value, 0) and whether the value is NULL instead.
--
-- Points stored twice before this migration: one of each is kept, and their runs' tiles, which
-- counted them twice, are rebuilt on first read (metric_tiles_pending, see series.rs).
CREATE TABLE metric_duplicates AS
    SELECT run_id, key, value, step, timestamp FROM metrics
    GROUP BY run_id, key, value, step, timestamp HAVING COUNT(*) > 1;

INSERT INTO metric_tiles_pending (run_id)
    SELECT DISTINCT run_id FROM metric_duplicates
    WHERE run_id NOT IN (SELECT run_id FROM metric_tiles_pending);

CREATE INDEX metric_duplicates_by_point ON metric_duplicates (run_id, key, step, timestamp);

-- The run_id condition lets the engines walk only the runs concerned (through metrics_by_run_key).
DELETE FROM metrics WHERE run_id IN (SELECT run_id FROM metric_duplicates) AND EXISTS (
    SELECT 1 FROM metric_duplicates d
    WHERE d.run_id = metrics.run_id AND d.key = metrics.key AND d.step = metrics.step
      AND d.timestamp = metrics.timestamp
      AND (d.value = metrics.value OR (d.value IS NULL AND metrics.value IS NULL))
);

INSERT INTO metrics (run_id, key, value, step, timestamp)
    SELECT run_id, key, value, step, timestamp FROM metric_duplicates;

DROP TABLE metric_duplicates;

-- Its leading columns serve every read of a series (run, key, step order), so the older
-- non-unique index would only cost writes.
DROP INDEX metrics_by_run_key;
CREATE UNIQUE INDEX metrics_point
    ON metrics (run_id, key, step, timestamp, (COALESCE(value, 0)), (value IS NULL));
