//! Largest-Triangle-Three-Buckets (Steinarsson, "Downsampling Time Series for Visual
//! Representation", 2013): picks `threshold` of `n` points so that a line through them looks like
//! the line through all of them. The studio draws metric charts from its output; the store feeds it
//! either the raw points or a min/max/first/last preselection (MinMaxLTTB).
//!
//! Pure: no I/O, no allocation beyond the returned indices.
//!
//! # Non-finite values
//! A point is *finite* when both its coordinates are. Triangle areas need finite numbers, so:
//! - only finite points compete for a bucket and enter the averages of the next bucket;
//! - a bucket holding no finite point keeps its first point, so a stretch of NaN or ±∞ at least a
//!   bucket wide stays visible (as a gap in the chart) instead of being bridged silently;
//! - a non-finite point among finite ones in the same bucket is dropped like any unchosen point;
//! - the first and last points are always kept, finite or not.

/// The indices (ascending) of the points LTTB keeps from `points`, which should be ordered by x.
///
/// At most `threshold` indices are returned; when `points` has no more than `threshold` points
/// (or `threshold < 3`, where LTTB has no middle bucket) every index up to `threshold` is kept:
/// `threshold` 0 keeps nothing, 1 the first point, 2 the first and the last.
pub fn lttb_indices(points: &[(f64, f64)], threshold: usize) -> Vec<usize> {
    let n = points.len();
    if n <= threshold {
        return (0..n).collect();
    }
    match threshold {
        0 => return Vec::new(),
        1 => return vec![0],
        2 => return vec![0, n - 1],
        _ => {}
    }
    let mut out = Vec::with_capacity(threshold);
    out.push(0);
    // The n - 2 middle points are split into threshold - 2 buckets of (fractional) size `every`.
    let every = (n - 2) as f64 / (threshold - 2) as f64;
    let bucket = |i: usize| -> (usize, usize) {
        let start = (i as f64 * every) as usize + 1;
        let end = (((i + 1) as f64 * every) as usize + 1).min(n - 1);
        (start, end)
    };
    // The last finite point kept so far: the triangle's first corner.
    let mut anchor: Option<(f64, f64)> = finite(points[0]).then_some(points[0]);
    for i in 0..threshold - 2 {
        let (start, end) = bucket(i);
        // The third corner: the average of the next bucket's finite points (the last point after
        // the final bucket).
        let next = if i + 1 < threshold - 2 {
            let (ns, ne) = bucket(i + 1);
            average(&points[ns..ne])
        } else {
            finite(points[n - 1]).then_some(points[n - 1])
        };
        let mut best: Option<(usize, f64)> = None;
        for (j, &p) in points.iter().enumerate().take(end).skip(start) {
            if !finite(p) {
                continue;
            }
            let area = match (anchor, next) {
                (Some(a), Some(c)) => triangle_area(a, p, c),
                // Without a finite corner on one side, the point farthest from the other wins.
                (Some(a), None) | (None, Some(a)) => (p.1 - a.1).abs(),
                (None, None) => 0.0,
            };
            if best.is_none_or(|(_, b)| area > b) {
                best = Some((j, area));
            }
        }
        let chosen = match best {
            Some((j, _)) => j,
            None => start,
        };
        if finite(points[chosen]) {
            anchor = Some(points[chosen]);
        }
        out.push(chosen);
    }
    out.push(n - 1);
    out
}

/// The points LTTB keeps (see [`lttb_indices`]).
pub fn lttb(points: &[(f64, f64)], threshold: usize) -> Vec<(f64, f64)> {
    lttb_indices(points, threshold).into_iter().map(|i| points[i]).collect()
}

fn finite(p: (f64, f64)) -> bool {
    p.0.is_finite() && p.1.is_finite()
}

fn average(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let (mut sx, mut sy, mut k) = (0.0, 0.0, 0usize);
    for &p in points.iter().filter(|p| finite(**p)) {
        sx += p.0;
        sy += p.1;
        k += 1;
    }
    (k > 0).then(|| (sx / k as f64, sy / k as f64))
}

/// Twice the area of the triangle abc (the factor does not change which point wins).
fn triangle_area(a: (f64, f64), b: (f64, f64), c: (f64, f64)) -> f64 {
    ((a.0 - c.0) * (b.1 - a.1) - (a.0 - b.0) * (c.1 - a.1)).abs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(n: usize) -> Vec<(f64, f64)> {
        (0..n).map(|i| (i as f64, (i as f64 / 50.0).sin())).collect()
    }

    #[test]
    fn small_inputs_are_returned_unchanged() {
        let s = series(10);
        assert_eq!(lttb(&s, 10), s);
        assert_eq!(lttb(&s, 1000), s);
        assert_eq!(lttb(&[], 5), vec![]);
    }

    #[test]
    fn output_has_threshold_points_and_keeps_first_and_last() {
        let s = series(10_000);
        for threshold in [3, 4, 7, 100, 999, 1000, 9_999] {
            let idx = lttb_indices(&s, threshold);
            assert_eq!(idx.len(), threshold, "threshold {threshold}");
            assert_eq!((idx[0], *idx.last().unwrap()), (0, 9_999));
        }
    }

    #[test]
    fn thresholds_below_three_keep_the_ends() {
        let s = series(100);
        assert_eq!(lttb_indices(&s, 0), Vec::<usize>::new());
        assert_eq!(lttb_indices(&s, 1), vec![0]);
        assert_eq!(lttb_indices(&s, 2), vec![0, 99]);
    }

    #[test]
    fn x_order_is_preserved() {
        let s: Vec<(f64, f64)> = (0..5_000).map(|i| ((i * i) as f64, ((i * 7919) % 113) as f64)).collect();
        let kept = lttb(&s, 300);
        assert!(kept.windows(2).all(|w| w[0].0 < w[1].0));
        // Every kept point is one of the input points.
        assert!(kept.iter().all(|p| s.contains(p)));
    }

    #[test]
    fn keeps_the_extremes_of_a_spike() {
        let mut s: Vec<(f64, f64)> = (0..100_000).map(|i| (i as f64, 1.0 + (i % 7) as f64 * 0.01)).collect();
        s[31_337].1 = 500.0;
        s[77_777].1 = -40.0;
        let kept = lttb(&s, 200);
        assert!(kept.contains(&(31_337.0, 500.0)), "the spike was dropped");
        assert!(kept.contains(&(77_777.0, -40.0)), "the dip was dropped");
    }

    #[test]
    fn a_straight_line_gives_evenly_spread_points() {
        let s: Vec<(f64, f64)> = (0..1_001).map(|i| (i as f64, 2.0 * i as f64)).collect();
        let idx = lttb_indices(&s, 11);
        // One point per bucket of 100, none bunched together.
        assert!(idx.windows(2).all(|w| w[1] - w[0] <= 200 && w[1] > w[0]), "{idx:?}");
    }

    #[test]
    fn a_bucket_of_nan_stays_visible_and_isolated_nan_is_ignored() {
        let mut s = series(1_000);
        // A stretch of NaN wider than a bucket (buckets are ~10 points wide here).
        for p in &mut s[400..450] {
            p.1 = f64::NAN;
        }
        s[700].1 = f64::INFINITY;
        let kept = lttb(&s, 100);
        assert_eq!(kept.len(), 100);
        let nan_kept = kept.iter().filter(|p| p.1.is_nan()).count();
        assert!(nan_kept >= 3, "the NaN stretch should show as a gap, kept {nan_kept}");
        assert!(kept.iter().filter(|p| !p.1.is_nan()).all(|p| p.1.is_finite()), "the lone ∞ was kept");
        assert!(kept.iter().all(|p| p.0 < 400.0 || p.0 >= 450.0 || p.1.is_nan()));
    }

    #[test]
    fn non_finite_ends_are_kept_and_do_not_poison_the_rest() {
        let mut s = series(500);
        s[0].1 = f64::NAN;
        s[499].1 = f64::NEG_INFINITY;
        s[250].1 = 9.0;
        let kept = lttb(&s, 20);
        assert!(kept[0].1.is_nan() && kept[19].1 == f64::NEG_INFINITY);
        assert!(kept.contains(&(250.0, 9.0)));
        assert!(kept[1..19].iter().all(|p| p.1.is_finite()));
    }
}
