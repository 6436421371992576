//! Downsampled metric series (`Store::metric_series`), on SQLite and PostgreSQL.

use cairn_core::runs::{LogBatch, LogMetric, MetricPoint};
use cairn_core::Error;
use cairn_store::Store;

#[macro_use]
mod common;
use common::{run, Db};

on_both!(
    short_series_come_back_whole_with_nan_kept,
    a_long_series_keeps_its_ends_and_its_spike_within_the_budget,
    a_zoom_window_counts_and_returns_only_its_points,
    points_logged_out_of_order_and_in_pieces_tile_the_same,
    bad_requests_and_unknown_keys_are_refused,
);

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
