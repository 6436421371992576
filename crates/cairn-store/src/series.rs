//! Metric series for charts: a window of one run's metric, downsampled to at most N points.
//!
//! Reading every point does not scale: a million rows is a quarter of a second of SQLite's time
//! just to scan, before any row reaches Rust. So the store keeps *tiles* (`metric_tiles`,
//! migration 0011): for levels 1–4, every block of 16^level consecutive steps is summarised by its
//! count and its first, last, lowest and highest point, updated in the same transaction as the
//! points by [`add_to_tiles`]. A query picks the finest level whose tiles in the window number at
//! most [`TILES_PER_POINT`] × N, reads those tiles plus the raw points in the partial tiles at the
//! window's edges, and runs LTTB over that preselection (the MinMaxLTTB scheme: per-block extremes
//! first, so spikes survive, then LTTB for the shape). Small windows are read raw.
//!
//! Tiles' min/max are over finite values (as LTTB compares only those); a NaN or ±∞ point shows
//! at coarse levels only where it is a tile's first or last point.

use std::collections::BTreeMap;

use cairn_core::lttb::lttb_indices;
use cairn_core::runs::MetricPoint;
use cairn_core::Error;
use sqlx::any::AnyRow;
use sqlx::AnyConnection;

use crate::binds::values_rows;
use crate::db::Backend;
use crate::db::{get, map_err};
use crate::Store;

/// Tile levels: level `l` groups steps `[t·16^l, (t+1)·16^l)`.
const LEVELS: [i64; 4] = [1, 2, 3, 4];
/// How many tiles (each giving up to four points) a query may read per point it returns.
pub const TILES_PER_POINT: usize = 4;
/// Windows holding at most this many points per point asked are read raw.
const RAW_PER_POINT: usize = 8;
/// Tile rows per upsert statement: 18 × 128 = 2304 bound values, under both engines' limits; a
/// 1000-metric batch of a few series over consecutive steps fits in one.
const TILES_PER_STATEMENT: usize = 128;

fn width(level: i64) -> i64 {
    16_i64.pow(level as u32)
}

/// A downsampled window of a metric series.
#[derive(Clone, Debug)]
pub struct MetricSeries {
    pub key: String,
    /// Points of the series inside the window, before downsampling.
    pub total_points: u64,
    /// At most the number asked, in step order; always the window's first and last point.
    pub points: Vec<MetricPoint>,
}

/// One tile being built from a batch of points.
#[derive(Clone, Debug)]
struct Tile {
    n: i64,
    finite: i64,
    first: MetricPoint,
    last: MetricPoint,
    min: MetricPoint,
    max: MetricPoint,
}

impl Tile {
    fn new(p: MetricPoint) -> Tile {
        Tile {
            n: 1,
            finite: p.value.is_finite() as i64,
            first: p.clone(),
            last: p.clone(),
            min: p.clone(),
            max: p,
        }
    }

    fn add(&mut self, p: MetricPoint) {
        self.n += 1;
        if (p.step, p.timestamp) < (self.first.step, self.first.timestamp) {
            self.first = p.clone();
        }
        // On a tie the point logged later is the last, as for `latest_metrics`.
        if (p.step, p.timestamp) >= (self.last.step, self.last.timestamp) {
            self.last = p.clone();
        }
        if p.value.is_finite() {
            if self.finite == 0 || p.value < self.min.value {
                self.min = p.clone();
            }
            if self.finite == 0 || p.value > self.max.value {
                self.max = p.clone();
            }
            self.finite += 1;
        }
    }
}

/// Summarises `points` into tiles of every level, keyed by (metric key, level, tile).
fn tiles_of<'a>(
    points: impl IntoIterator<Item = (&'a str, MetricPoint)>,
) -> BTreeMap<(&'a str, i64, i64), Tile> {
    let mut tiles: BTreeMap<(&str, i64, i64), Tile> = BTreeMap::new();
    for (key, p) in points {
        for level in LEVELS {
            tiles
                .entry((key, level, p.step.div_euclid(width(level))))
                .and_modify(|t| t.add(p.clone()))
                .or_insert_with(|| Tile::new(p.clone()));
        }
    }
    tiles
}

/// Adds freshly inserted points of `run_id` to its tiles, inside the caller's write transaction.
pub(crate) async fn add_to_tiles(
    conn: &mut AnyConnection,
    backend: Backend,
    run_id: &str,
    points: &[(&str, MetricPoint)],
) -> Result<(), Error> {
    let tiles: Vec<_> = tiles_of(points.iter().map(|(k, p)| (*k, p.clone()))).into_iter().collect();
    // A tile already stored absorbs the new one: counts add up, the earlier first, the later last
    // and the more extreme min/max win (min/max only where the side has finite values).
    const FIRST: &str = "excluded.first_step < metric_tiles.first_step OR (excluded.first_step = \
                         metric_tiles.first_step AND excluded.first_ts < metric_tiles.first_ts)";
    const LAST: &str = "excluded.last_step > metric_tiles.last_step OR (excluded.last_step = \
                        metric_tiles.last_step AND excluded.last_ts >= metric_tiles.last_ts)";
    const MIN: &str =
        "excluded.finite > 0 AND (metric_tiles.finite = 0 OR excluded.min_value < metric_tiles.min_value)";
    const MAX: &str =
        "excluded.finite > 0 AND (metric_tiles.finite = 0 OR excluded.max_value > metric_tiles.max_value)";
    let mut sets = vec![
        "n = metric_tiles.n + excluded.n".to_string(),
        "finite = metric_tiles.finite + excluded.finite".into(),
    ];
    for (cond, side) in [(FIRST, "first"), (LAST, "last"), (MIN, "min"), (MAX, "max")] {
        for col in ["step", "value", "ts"] {
            sets.push(format!(
                "{side}_{col} = CASE WHEN {cond} THEN excluded.{side}_{col} ELSE metric_tiles.{side}_{col} END"
            ));
        }
    }
    let sets = sets.join(", ");
    for chunk in tiles.chunks(TILES_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO metric_tiles (run_id, key, level, tile, n, finite, first_step, first_value, first_ts, \
             last_step, last_value, last_ts, min_step, min_value, min_ts, max_step, max_value, max_ts) \
             VALUES {} ON CONFLICT (run_id, key, level, tile) DO UPDATE SET {sets}",
            values_rows(backend, chunk.len(), 18)
        );
        let mut q = sqlx::query(&sql);
        for ((key, level, tile), t) in chunk {
            q = q.bind(run_id).bind(*key).bind(*level).bind(*tile).bind(t.n).bind(t.finite);
            // Without finite values min/max are placeholders (never read: `finite` says so); 0.0
            // rather than NaN, which PostgreSQL would compare as larger than every number.
            let placeholder = |p: &MetricPoint| if t.finite > 0 { p.value } else { 0.0 };
            for (p, v) in [
                (&t.first, t.first.value),
                (&t.last, t.last.value),
                (&t.min, placeholder(&t.min)),
                (&t.max, placeholder(&t.max)),
            ] {
                q = q.bind(p.step).bind(v).bind(p.timestamp);
            }
        }
        q.execute(&mut *conn).await.map_err(map_err)?;
    }
    Ok(())
}

fn point(row: &AnyRow, side: &str) -> Result<MetricPoint, Error> {
    let value: Option<f64> = get(row, &format!("{side}_value"))?;
    Ok(MetricPoint {
        value: value.unwrap_or(f64::NAN),
        step: get(row, &format!("{side}_step"))?,
        timestamp: get(row, &format!("{side}_ts"))?,
    })
}

impl Store {
    /// The points of `run_id`'s metric `key` with steps in `[xmin, xmax]` (each end optional),
    /// downsampled to at most `max_points` (≥ 3). The caller checks that the run is visible to it;
    /// a key the run never logged is `NotFound`, an empty window is an empty series.
    pub async fn metric_series(
        &self,
        run_id: &str,
        key: &str,
        xmin: Option<i64>,
        xmax: Option<i64>,
        max_points: usize,
    ) -> Result<MetricSeries, Error> {
        if max_points < 3 {
            return Err(Error::invalid(format!("a series needs at least 3 points, not {max_points}")));
        }
        if let (Some(lo), Some(hi)) = (xmin, xmax) {
            if lo > hi {
                return Err(Error::invalid(format!("xmin ({lo}) is greater than xmax ({hi})")));
            }
        }
        let known = sqlx::query("SELECT step FROM latest_metrics WHERE run_id = $1 AND key = $2")
            .bind(run_id)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        if known.is_none() {
            return Err(Error::not_found("metric", format!("{key}\" of run \"{run_id}")));
        }
        self.ensure_tiles(run_id).await?;
        let top = *LEVELS.last().unwrap();
        let (lo, hi) = match (xmin, xmax) {
            (Some(lo), Some(hi)) => (lo, hi),
            _ => {
                let row = sqlx::query(
                    "SELECT MIN(first_step) AS lo, MAX(last_step) AS hi FROM metric_tiles \
                     WHERE run_id = $1 AND key = $2 AND level = $3",
                )
                .bind(run_id)
                .bind(key)
                .bind(top)
                .fetch_one(&self.pool)
                .await
                .map_err(map_err)?;
                let (first, last): (Option<i64>, Option<i64>) = (get(&row, "lo")?, get(&row, "hi")?);
                match (first, last) {
                    (Some(first), Some(last)) => (xmin.unwrap_or(first), xmax.unwrap_or(last)),
                    _ => return Ok(MetricSeries { key: key.into(), total_points: 0, points: Vec::new() }),
                }
            }
        };
        if lo > hi {
            return Ok(MetricSeries { key: key.into(), total_points: 0, points: Vec::new() });
        }

        // Coarsest level first: stop at the finest level whose tiles still fit the budget, or
        // read raw once the window (edge tiles counted whole, so an upper bound) is small.
        let budget = (TILES_PER_POINT * max_points) as i64;
        let raw_max = (RAW_PER_POINT * max_points) as i64;
        let mut chosen: Option<i64> = None;
        for level in LEVELS.iter().rev() {
            let w = width(*level);
            // Counting stops past the budget, so a fine level of a long series costs no more.
            let row = sqlx::query(
                "SELECT COUNT(*) AS c, CAST(COALESCE(SUM(n), 0) AS BIGINT) AS s FROM (SELECT n FROM metric_tiles \
                 WHERE run_id = $1 AND key = $2 AND level = $3 AND tile BETWEEN $4 AND $5 LIMIT $6) AS t",
            )
            .bind(run_id)
            .bind(key)
            .bind(*level)
            .bind(lo.div_euclid(w))
            .bind(hi.div_euclid(w))
            .bind(budget + 1)
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)?;
            let (count, sum): (i64, i64) = (get(&row, "c")?, get(&row, "s")?);
            if count <= budget && sum <= raw_max {
                chosen = None;
                break;
            }
            if count > budget && chosen.is_some() {
                break;
            }
            chosen = Some(*level);
        }

        let (total, candidates) = match chosen {
            None => {
                let raw = self.raw_points(run_id, key, lo, hi).await?;
                (raw.len() as u64, raw)
            }
            Some(level) => self.tiled_points(run_id, key, level, lo, hi).await?,
        };
        let xy: Vec<(f64, f64)> = candidates.iter().map(|p| (p.step as f64, p.value)).collect();
        let points = lttb_indices(&xy, max_points).into_iter().map(|i| candidates[i].clone()).collect();
        Ok(MetricSeries { key: key.into(), total_points: total, points })
    }

    /// The points in the full tiles of `level` inside `[lo, hi]` (first, min, max, last of each)
    /// and every raw point in the partial tiles at the edges, in step order, with the window's
    /// point count.
    async fn tiled_points(
        &self,
        run_id: &str,
        key: &str,
        level: i64,
        lo: i64,
        hi: i64,
    ) -> Result<(u64, Vec<MetricPoint>), Error> {
        let w = width(level);
        // Full tiles t0..=t1: t0 starts at or after lo, t1 ends at or before hi.
        let t0 = lo.div_euclid(w) + i64::from(lo.rem_euclid(w) != 0);
        let t1 = hi.saturating_add(1).div_euclid(w) - 1;
        if t0 > t1 {
            let raw = self.raw_points(run_id, key, lo, hi).await?;
            return Ok((raw.len() as u64, raw));
        }
        let mut out = self.raw_points(run_id, key, lo, t0 * w - 1).await?;
        let mut total = out.len() as u64;
        let rows = sqlx::query(
            "SELECT n, finite, first_step, first_value, first_ts, last_step, last_value, last_ts, \
             min_step, min_value, min_ts, max_step, max_value, max_ts FROM metric_tiles \
             WHERE run_id = $1 AND key = $2 AND level = $3 AND tile BETWEEN $4 AND $5 ORDER BY tile",
        )
        .bind(run_id)
        .bind(key)
        .bind(level)
        .bind(t0)
        .bind(t1)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        for row in &rows {
            total += get::<i64>(row, "n")? as u64;
            let mut four = vec![point(row, "first")?, point(row, "last")?];
            if get::<i64>(row, "finite")? > 0 {
                four.push(point(row, "min")?);
                four.push(point(row, "max")?);
            }
            four.sort_by_key(|p| (p.step, p.timestamp));
            four.dedup_by(|a, b| {
                a.step == b.step && a.timestamp == b.timestamp && a.value.to_bits() == b.value.to_bits()
            });
            out.extend(four);
        }
        let tail = self.raw_points(run_id, key, (t1 + 1).saturating_mul(w), hi).await?;
        total += tail.len() as u64;
        out.extend(tail);
        Ok((total, out))
    }

    async fn raw_points(&self, run_id: &str, key: &str, lo: i64, hi: i64) -> Result<Vec<MetricPoint>, Error> {
        if lo > hi {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT step, value, timestamp FROM metrics WHERE run_id = $1 AND key = $2 \
             AND step BETWEEN $3 AND $4 ORDER BY step, timestamp",
        )
        .bind(run_id)
        .bind(key)
        .bind(lo)
        .bind(hi)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                let value: Option<f64> = get(r, "value")?;
                Ok(MetricPoint {
                    value: value.unwrap_or(f64::NAN),
                    step: get(r, "step")?,
                    timestamp: get(r, "timestamp")?,
                })
            })
            .collect()
    }

    /// Builds the tiles of a run whose metrics predate them (listed in `metric_tiles_pending` by
    /// migration 0011). One write transaction drops whatever tiles the run has and rebuilds them
    /// from all its points, so points logged meanwhile are counted exactly once.
    async fn ensure_tiles(&self, run_id: &str) -> Result<(), Error> {
        let pending = sqlx::query("SELECT run_id FROM metric_tiles_pending WHERE run_id = $1")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        if pending.is_none() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        let still = sqlx::query("DELETE FROM metric_tiles_pending WHERE run_id = $1")
            .bind(run_id)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
        if still.rows_affected() == 0 {
            return Ok(()); // another request built them meanwhile
        }
        sqlx::query("DELETE FROM metric_tiles WHERE run_id = $1")
            .bind(run_id)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
        let rows = sqlx::query("SELECT key, value, step, timestamp FROM metrics WHERE run_id = $1")
            .bind(run_id)
            .fetch_all(&mut **tx)
            .await
            .map_err(map_err)?;
        let points: Vec<(String, MetricPoint)> = rows
            .iter()
            .map(|r| {
                let value: Option<f64> = get(r, "value")?;
                let p = MetricPoint {
                    value: value.unwrap_or(f64::NAN),
                    step: get(r, "step")?,
                    timestamp: get(r, "timestamp")?,
                };
                Ok((get(r, "key")?, p))
            })
            .collect::<Result<_, Error>>()?;
        let refs: Vec<(&str, MetricPoint)> = points.iter().map(|(k, p)| (k.as_str(), p.clone())).collect();
        add_to_tiles(&mut tx, self.backend(), run_id, &refs).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(step: i64, value: f64, timestamp: i64) -> MetricPoint {
        MetricPoint { value, step, timestamp }
    }

    #[test]
    fn tiles_keep_count_ends_and_finite_extremes() {
        let pts = [p(3, 1.0, 10), p(1, f64::NAN, 11), p(2, -5.0, 12), p(15, 9.0, 13), p(16, 0.0, 14)];
        let tiles = tiles_of(pts.iter().map(|p| ("loss", p.clone())));
        let t = &tiles[&("loss", 1, 0)];
        assert_eq!((t.n, t.finite), (4, 3));
        assert_eq!((t.first.step, t.last.step), (1, 15));
        assert!(t.first.value.is_nan());
        assert_eq!((t.min.step, t.min.value, t.max.step, t.max.value), (2, -5.0, 15, 9.0));
        assert_eq!(tiles[&("loss", 1, 1)].n, 1);
        assert_eq!(tiles[&("loss", 2, 0)].n, 5);
        assert_eq!(tiles.len(), 2 + 3, "two tiles at level 1, one at each coarser level");
    }

    #[test]
    fn negative_steps_fall_in_their_own_tile() {
        let tiles = tiles_of([("k", p(-1, 1.0, 0)), ("k", p(0, 2.0, 0))]);
        assert_eq!(tiles[&("k", 1, -1)].n, 1);
        assert_eq!(tiles[&("k", 1, 0)].n, 1);
    }
}
