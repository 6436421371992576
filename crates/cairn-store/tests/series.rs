//! Downsampled metric series (`Store::metric_series`), on SQLite and PostgreSQL.

use cairn_core::runs::{LogBatch, LogMetric, MetricPoint};
use cairn_core::Error;
use cairn_store::Store;

#[macro_use]
mod common;
use common::{run, Db};
use sqlx::Connection;

on_both!(
    short_series_come_back_whole_with_nan_kept,
    a_long_series_keeps_its_ends_and_its_spike_within_the_budget,
    a_zoom_window_counts_and_returns_only_its_points,
    points_logged_out_of_order_and_in_pieces_tile_the_same,
    bad_requests_and_unknown_keys_are_refused,
    a_point_logged_again_is_stored_once,
);
mod migration_0018 {
    use super::*;
    on_both_db!(points_stored_twice_before_migration_0018_are_kept_once);
}

async fn new_run(store: &Store) -> String {
    let ws = store.create_workspace("w", "").await.unwrap();
    run(store, &ws, "e", "r").await
}

async fn log(store: &Store, run: &str, key: &str, points: &[MetricPoint]) {
    for chunk in points.chunks(5_000) {
        let batch = LogBatch {
            metrics: chunk
                .iter()
                .map(|p| LogMetric {
                    key: key.into(),
                    value: p.value,
                    step: Some(p.step),
                    timestamp: Some(p.timestamp),
                })
                .collect(),
            ..Default::default()
        };
        store.log_batch(run, &batch).await.unwrap();
    }
}

/// A noisy decreasing loss with one spike and one dip.
fn loss(n: i64, spike: i64, dip: i64) -> Vec<MetricPoint> {
    (0..n)
        .map(|i| {
            let value = match i {
                _ if i == spike => 1_000.0,
                _ if i == dip => -1_000.0,
                _ => 1.0 / (1.0 + i as f64 / 1000.0) + ((i * 7919) % 101) as f64 * 1e-4,
            };
            MetricPoint { value, step: i, timestamp: 1_700_000_000_000 + i }
        })
        .collect()
}

fn same(a: &MetricPoint, b: &MetricPoint) -> bool {
    a.step == b.step && a.timestamp == b.timestamp && a.value.to_bits() == b.value.to_bits()
}

async fn short_series_come_back_whole_with_nan_kept(store: &Store) {
    let run = new_run(store).await;
    let mut pts = loss(50, -1, -1);
    pts[10].value = f64::NAN;
    log(store, &run, "acc", &pts).await;
    let s = store.metric_series(&run, "acc", None, None, 1000).await.unwrap();
    assert_eq!((s.key.as_str(), s.total_points, s.points.len()), ("acc", 50, 50));
    assert!(s.points.iter().zip(&pts).all(|(a, b)| same(a, b)), "{:?}", &s.points[..12]);
}

async fn a_long_series_keeps_its_ends_and_its_spike_within_the_budget(store: &Store) {
    let run = new_run(store).await;
    let pts = loss(200_000, 123_457, 54_321);
    log(store, &run, "loss", &pts).await;
    let s = store.metric_series(&run, "loss", None, None, 1000).await.unwrap();
    assert_eq!(s.total_points, 200_000);
    assert!(s.points.len() <= 1000 && s.points.len() > 900, "{} points", s.points.len());
    assert!(same(&s.points[0], &pts[0]) && same(s.points.last().unwrap(), &pts[199_999]));
    assert!(s.points.iter().any(|p| same(p, &pts[123_457])), "the spike was lost");
    assert!(s.points.iter().any(|p| same(p, &pts[54_321])), "the dip was lost");
    assert!(s.points.windows(2).all(|w| w[0].step < w[1].step));
    // Every returned point is a logged one, not an average.
    assert!(s.points.iter().all(|p| same(p, &pts[p.step as usize])));

    let few = store.metric_series(&run, "loss", None, None, 3).await.unwrap();
    assert_eq!(few.points.len(), 3);
}

async fn a_zoom_window_counts_and_returns_only_its_points(store: &Store) {
    let run = new_run(store).await;
    let pts = loss(100_000, 50_001, -1);
    log(store, &run, "loss", &pts).await;
    // Wide enough to be read from tiles, with edges that are not tile boundaries.
    let s = store.metric_series(&run, "loss", Some(12_345), Some(87_654), 500).await.unwrap();
    assert_eq!(s.total_points, 87_654 - 12_345 + 1);
    assert!(s.points.len() <= 500 && s.points.len() > 400, "{}", s.points.len());
    assert_eq!((s.points[0].step, s.points.last().unwrap().step), (12_345, 87_654));
    assert!(s.points.iter().any(|p| same(p, &pts[50_001])));
    // Narrow: every point, raw.
    let s = store.metric_series(&run, "loss", Some(49_990), Some(50_100), 1000).await.unwrap();
    assert_eq!((s.total_points, s.points.len()), (111, 111));
    assert!(s.points.iter().zip(&pts[49_990..=50_100]).all(|(a, b)| same(a, b)));
    // One end only, and a window past the end.
    let s = store.metric_series(&run, "loss", Some(99_000), None, 2000).await.unwrap();
    assert_eq!((s.total_points, s.points.len()), (1000, 1000));
    let s = store.metric_series(&run, "loss", Some(200_000), Some(300_000), 100).await.unwrap();
    assert_eq!((s.total_points, s.points.len()), (0, 0));
}

async fn points_logged_out_of_order_and_in_pieces_tile_the_same(store: &Store) {
    let run = new_run(store).await;
    let mut pts = loss(60_000, 7_777, 40_000);
    // NaN and infinities must neither become a tile's extreme nor hide the real ones.
    pts[7_778].value = f64::NAN;
    pts[7_779].value = f64::INFINITY;
    pts[40_001].value = f64::NEG_INFINITY;
    // Newest chunks first, and one point per batch at the end of each tile's life.
    let mut chunks: Vec<&[MetricPoint]> = pts.chunks(7_000).collect();
    chunks.reverse();
    for c in chunks {
        log(store, &run, "loss", &c[1..]).await;
        log(store, &run, "loss", &c[..1]).await;
    }
    let s = store.metric_series(&run, "loss", None, None, 600).await.unwrap();
    assert_eq!(s.total_points, 60_000);
    assert!(s.points.len() <= 600);
    assert!(same(&s.points[0], &pts[0]) && same(s.points.last().unwrap(), &pts[59_999]));
    assert!(s.points.iter().any(|p| same(p, &pts[7_777])), "the spike was lost");
    assert!(s.points.iter().any(|p| same(p, &pts[40_000])), "the dip was lost");
    assert!(s.points.iter().all(|p| same(p, &pts[p.step as usize])));
}

async fn bad_requests_and_unknown_keys_are_refused(store: &Store) {
    let run = new_run(store).await;
    log(store, &run, "loss", &loss(10, -1, -1)).await;
    let e = store.metric_series(&run, "nope", None, None, 100).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { kind: "metric", .. }), "{e:?}");
    let e = store.metric_series("no-such-run", "loss", None, None, 100).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
    let e = store.metric_series(&run, "loss", Some(5), Some(4), 100).await.unwrap_err();
    assert!(matches!(e, Error::Invalid(ref m) if m.contains("xmin")), "{e:?}");
    let e = store.metric_series(&run, "loss", None, None, 2).await.unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "{e:?}");
}

async fn a_point_logged_again_is_stored_once(store: &Store) {
    let ws = store.create_workspace("w", "").await.unwrap();
    let run = run(store, &ws, "e", "r").await;
    let mut pts = loss(600, 10, 20);
    pts[3].value = f64::NAN;
    pts[4].value = 0.0;
    pts[5].value = f64::INFINITY;
    log(store, &run, "loss", &pts).await;
    // A client retrying the whole batch, and a batch repeating one point within itself.
    log(store, &run, "loss", &pts).await;
    let within = [pts[7].clone(), pts[7].clone(), pts[8].clone()];
    log(store, &run, "loss", &within).await;
    // -0.0 is the point 0.0 again; NaN the NaN again.
    let mut negative_zero = pts[4].clone();
    negative_zero.value = -0.0;
    log(store, &run, "loss", &[negative_zero, pts[3].clone()]).await;
    let s = store.metric_series(&run, "loss", None, None, 1000).await.unwrap();
    assert_eq!((s.total_points, s.points.len()), (600, 600), "tiles count each point once");
    let s = store.metric_series(&run, "loss", None, None, 100).await.unwrap();
    assert_eq!(s.total_points, 600, "the downsampled series counts each point once");
    let all = store.run_metrics(&run).await.unwrap();
    assert_eq!(all["loss"].len(), 600);
    assert!(all["loss"].iter().zip(&pts).all(|(a, b)| same(a, b)));

    // A batch of an old point and a new one: only the new one is stored, counted and latest.
    let last = MetricPoint { value: 7.0, step: 600, timestamp: 1_700_000_000_600 };
    log(store, &run, "loss", &[pts[10].clone(), last.clone()]).await;
    assert_eq!(store.run_metrics(&run).await.unwrap()["loss"].len(), 601);
    let s = store.metric_series(&run, "loss", None, None, 1000).await.unwrap();
    assert_eq!(s.total_points, 601, "the old point is not counted again");
    assert_eq!(store.run(&ws, &run).await.unwrap().metrics["loss"].value, 7.0);

    // Another value at the same step and time is another point (MLflow keys points by value
    // too), and the value logged last is the latest; a retry of the earlier one changes nothing.
    let mut other = last.clone();
    other.value = 42.0;
    log(store, &run, "loss", &[other.clone()]).await;
    log(store, &run, "loss", std::slice::from_ref(&last)).await;
    assert_eq!(store.run_metrics(&run).await.unwrap()["loss"].len(), 602);
    let r = store.run(&ws, &run).await.unwrap();
    assert_eq!(r.metrics["loss"].value, 42.0, "a retried older point became the latest");
}

/// A database whose metrics table holds points twice (logged before migration 0018 made points
/// unique): the migration keeps one of each and the run's tiles are rebuilt to count them once.
async fn points_stored_twice_before_migration_0018_are_kept_once(db: &Db) {
    let store = &db.store;
    let ws = store.create_workspace("w", "").await.unwrap();
    let (twice, once) = (run(store, &ws, "e", "twice").await, run(store, &ws, "e", "once").await);
    let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    // Back to the schema of migration 0017: no unique index, and 0018 not applied.
    for sql in [
        "DROP INDEX metrics_point",
        "CREATE INDEX metrics_by_run_key ON metrics (run_id, key, step)",
        "DELETE FROM _sqlx_migrations WHERE version = 18",
    ] {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();
    let mut pts = loss(300, 5, 6);
    pts[9].value = f64::NAN;
    log(store, &twice, "loss", &pts).await;
    log(store, &twice, "loss", &pts).await;
    let mut other = pts[0].clone();
    other.value = 7.0;
    log(store, &twice, "loss", &[other]).await;
    log(store, &once, "loss", &pts).await;
    let before = store.metric_series(&twice, "loss", None, None, 1000).await.unwrap();
    assert_eq!(before.total_points, 601, "the old schema stored the points twice");
    store.metric_series(&once, "loss", None, None, 1000).await.unwrap();

    let again = Store::open(&db.url).await.unwrap();
    let all = again.run_metrics(&twice).await.unwrap();
    assert_eq!(all["loss"].len(), 301, "one of each point, and the other value at step 0");
    assert_eq!(again.metric_series(&twice, "loss", None, None, 1000).await.unwrap().total_points, 301);
    assert_eq!(again.metric_series(&once, "loss", None, None, 1000).await.unwrap().total_points, 300);
    // The migrated index refuses duplicates from now on.
    log(&again, &twice, "loss", &pts).await;
    assert_eq!(again.run_metrics(&twice).await.unwrap()["loss"].len(), 301);
    again.close().await;
}

/// Not a check but a measurement (`cargo test -p cairn-store --release --test series -- --ignored
/// --nocapture`): a 1,000,000-point series, charted whole and zoomed, on both backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_a_million_point_series() {
    for db in [Db::sqlite().await, Db::postgres().await] {
        let store = &db.store;
        let run = new_run(store).await;
        let pts = loss(1_000_000, 654_321, 123_456);
        let t = std::time::Instant::now();
        log(store, &run, "loss", &pts).await;
        let logged = t.elapsed();
        let mut report = format!("{:?}: logged 1,000,000 points in {logged:.1?};", store.backend());
        for (label, xmin, xmax, n) in [
            ("whole, 1000 points", None, None, 1000),
            ("whole, 5000 points", None, None, 5000),
            ("zoom 10% ", Some(400_000), Some(500_000), 1000),
            ("zoom 0.5%", Some(400_000), Some(405_000), 1000),
        ] {
            let mut best = std::time::Duration::MAX;
            for _ in 0..5 {
                let t = std::time::Instant::now();
                let s = store.metric_series(&run, "loss", xmin, xmax, n).await.unwrap();
                best = best.min(t.elapsed());
                assert!(s.points.len() <= n);
            }
            report += &format!(" {label}: {best:.1?};");
        }
        println!("{report}");
        db.cleanup().await;
    }
}
