-- Metric tiles: for each run, metric key and level, every block of 16^level consecutive steps
-- ("tile" = step div 16^level) summarised by its point count and its first, last, lowest and
-- highest point. log_batch keeps them current, so a chart of a million-point series reads a few
-- thousand tiles instead of every point (see crates/cairn-store/src/series.rs).
CREATE TABLE metric_tiles (
    run_id      TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    key         TEXT NOT NULL,
    level       BIGINT NOT NULL,
    tile        BIGINT NOT NULL,
    n           BIGINT NOT NULL,
    -- how many values are finite; min_* and max_* (over finite values) mean something only when > 0
    finite      BIGINT NOT NULL,
    first_step  BIGINT NOT NULL,
    first_value DOUBLE PRECISION,
    first_ts    BIGINT NOT NULL,
    last_step   BIGINT NOT NULL,
    last_value  DOUBLE PRECISION,
    last_ts     BIGINT NOT NULL,
    min_step    BIGINT NOT NULL,
    min_value   DOUBLE PRECISION,
    min_ts      BIGINT NOT NULL,
    max_step    BIGINT NOT NULL,
    max_value   DOUBLE PRECISION,
    max_ts      BIGINT NOT NULL,
    PRIMARY KEY (run_id, key, level, tile)
);

-- Runs whose metrics were logged before tiles existed: their tiles are built on first read.
CREATE TABLE metric_tiles_pending (
    run_id TEXT PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE
);
INSERT INTO metric_tiles_pending (run_id) SELECT DISTINCT run_id FROM metrics;
