//! Prometheus metrics of the scoring gateway, served as text at `GET /metrics` (any Cairn token
//! valid in every workspace).
//!
//! Hand-written rather than the `prometheus` or `metrics` crates: the exposition format is a few
//! lines of text, the series are few (per endpoint and status), and keeping them in the
//! `AppState` (no global registry) lets a deleted endpoint's series go with it and keeps tests of
//! one server independent of another. Requests refused before authentication are counted under
//! `endpoint="_unauthenticated"` (not a valid endpoint name), so that neither this page nor its
//! label cardinality depends on names a stranger tries.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Label of requests whose endpoint was not (or could not be) authenticated.
pub const UNAUTHENTICATED: &str = "_unauthenticated";

/// Seconds of history behind the recent request count the studio shows.
pub const RECENT_SECONDS: u64 = 60;

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0];

#[derive(Default)]
struct Series {
    by_status: BTreeMap<u16, u64>,
    /// Non-cumulative counts per bucket; the last slot is `+Inf`.
    buckets: [u64; BUCKETS.len() + 1],
    sum: f64,
    count: u64,
    /// Requests per second over the last `RECENT_SECONDS`, as a ring of `(unix second, count)`
    /// slots: a slot is reused once its second is that far in the past, so memory stays fixed.
    recent: Vec<(u64, u64)>,
}

/// What the studio shows of one endpoint's traffic since this server started.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointTraffic {
    pub total: u64,
    pub by_status: BTreeMap<u16, u64>,
    pub mean_seconds: f64,
    /// Upper bound of the histogram bucket holding the median; `None` past the last bound.
    pub p50_le: Option<f64>,
    /// Upper bound of the bucket holding the 95th percentile; `None` past the last bound.
    pub p95_le: Option<f64>,
    /// Requests answered in the last `RECENT_SECONDS`.
    pub recent: u64,
}

impl Series {
    /// The bound of the bucket holding quantile `q` (the histogram's resolution is all we know).
    fn quantile_le(&self, q: f64) -> Option<f64> {
        let rank = ((q * self.count as f64).ceil() as u64).max(1);
        let mut cumulative = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            cumulative += n;
            if cumulative >= rank {
                return BUCKETS.get(i).copied();
            }
        }
        None
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[derive(Default)]
pub struct Metrics {
    endpoints: Mutex<BTreeMap<String, Series>>,
}

impl Metrics {
    /// Records one scoring request.
    pub fn observe(&self, endpoint: &str, status: u16, elapsed: Duration) {
        self.observe_at(endpoint, status, elapsed, unix_seconds());
    }

    fn observe_at(&self, endpoint: &str, status: u16, elapsed: Duration, now: u64) {
        let secs = elapsed.as_secs_f64();
        let mut all = self.endpoints.lock().expect("metrics lock");
        let s = all.entry(endpoint.to_string()).or_default();
        *s.by_status.entry(status).or_default() += 1;
        let slot = BUCKETS.iter().position(|b| secs <= *b).unwrap_or(BUCKETS.len());
        s.buckets[slot] += 1;
        s.sum += secs;
        s.count += 1;
        if s.recent.is_empty() {
            s.recent = vec![(0, 0); RECENT_SECONDS as usize];
        }
        let slot = &mut s.recent[(now % RECENT_SECONDS) as usize];
        if slot.0 != now {
            *slot = (now, 0);
        }
        slot.1 += 1;
    }

    /// One endpoint's counts by status, latency summary and recent request count; `None` before
    /// its first scoring request.
    pub fn traffic(&self, endpoint: &str) -> Option<EndpointTraffic> {
        self.traffic_at(endpoint, unix_seconds())
    }

    fn traffic_at(&self, endpoint: &str, now: u64) -> Option<EndpointTraffic> {
        let all = self.endpoints.lock().expect("metrics lock");
        let s = all.get(endpoint).filter(|s| s.count > 0)?;
        Some(EndpointTraffic {
            total: s.count,
            by_status: s.by_status.clone(),
            mean_seconds: s.sum / s.count as f64,
            p50_le: s.quantile_le(0.5),
            p95_le: s.quantile_le(0.95),
            recent: s
                .recent
                .iter()
                .filter(|(at, _)| *at + RECENT_SECONDS > now && *at <= now)
                .map(|(_, n)| n)
                .sum(),
        })
    }

    /// Forgets a deleted endpoint's series.
    pub fn remove(&self, endpoint: &str) {
        self.endpoints.lock().expect("metrics lock").remove(endpoint);
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let all = self.endpoints.lock().expect("metrics lock");
        let mut out = String::new();
        out.push_str("# HELP cairn_endpoint_requests_total Scoring requests by endpoint and HTTP status.\n");
        out.push_str("# TYPE cairn_endpoint_requests_total counter\n");
        for (e, s) in all.iter() {
            for (status, n) in &s.by_status {
                let _ = writeln!(
                    out,
                    "cairn_endpoint_requests_total{{endpoint=\"{}\",status=\"{status}\"}} {n}",
                    escape(e)
                );
            }
        }
        out.push_str(
            "# HELP cairn_endpoint_request_duration_seconds Time from a scoring request's arrival to its answer.\n",
        );
        out.push_str("# TYPE cairn_endpoint_request_duration_seconds histogram\n");
        for (e, s) in all.iter() {
            let e = escape(e);
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += s.buckets[i];
                let _ = writeln!(
                    out,
                    "cairn_endpoint_request_duration_seconds_bucket{{endpoint=\"{e}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            cumulative += s.buckets[BUCKETS.len()];
            let _ = writeln!(
                out,
                "cairn_endpoint_request_duration_seconds_bucket{{endpoint=\"{e}\",le=\"+Inf\"}} {cumulative}"
            );
            let _ =
                writeln!(out, "cairn_endpoint_request_duration_seconds_sum{{endpoint=\"{e}\"}} {}", s.sum);
            let _ = writeln!(
                out,
                "cairn_endpoint_request_duration_seconds_count{{endpoint=\"{e}\"}} {}",
                s.count
            );
        }
        out
    }
}

/// Escapes a label value (backslash, double quote, newline), as the format requires.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_histograms_are_rendered_cumulatively() {
        let m = Metrics::default();
        m.observe("wine", 503, Duration::from_micros(300));
        m.observe("wine", 503, Duration::from_millis(30));
        m.observe("wine", 401, Duration::from_secs(100));
        let text = m.render();
        assert!(
            text.contains("cairn_endpoint_requests_total{endpoint=\"wine\",status=\"503\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("cairn_endpoint_requests_total{endpoint=\"wine\",status=\"401\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("_bucket{endpoint=\"wine\",le=\"0.0005\"} 1\n"), "{text}");
        assert!(text.contains("_bucket{endpoint=\"wine\",le=\"0.05\"} 2\n"), "{text}");
        assert!(text.contains("_bucket{endpoint=\"wine\",le=\"60\"} 2\n"), "{text}");
        assert!(text.contains("_bucket{endpoint=\"wine\",le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("_count{endpoint=\"wine\"} 3\n"), "{text}");
        m.remove("wine");
        assert!(!m.render().contains("wine"));
    }

    #[test]
    fn traffic_summarises_one_endpoint_and_forgets_old_seconds() {
        let m = Metrics::default();
        assert_eq!(m.traffic("wine"), None);
        let t0 = 1_000_000;
        m.observe_at("wine", 200, Duration::from_millis(3), t0);
        m.observe_at("wine", 200, Duration::from_millis(4), t0 + 1);
        m.observe_at("wine", 500, Duration::from_millis(200), t0 + 30);
        m.observe_at("other", 200, Duration::from_millis(1), t0 + 30);
        let t = m.traffic_at("wine", t0 + 30).unwrap();
        assert_eq!(t.total, 3);
        assert_eq!(t.by_status, BTreeMap::from([(200, 2), (500, 1)]));
        assert!((t.mean_seconds - 0.069).abs() < 1e-9, "{t:?}");
        assert_eq!(t.p50_le, Some(0.005));
        assert_eq!(t.p95_le, Some(0.25));
        assert_eq!(t.recent, 3);
        // A minute later the first two seconds are out of the window; totals stay.
        let later = m.traffic_at("wine", t0 + 61).unwrap();
        assert_eq!((later.total, later.recent), (3, 1));
        assert_eq!(m.traffic_at("wine", t0 + 200).unwrap().recent, 0);
        // t0 + 60 lands in t0's slot, which is reset rather than added to: t0 + 1, t0 + 30 and
        // t0 + 60 remain in the window.
        m.observe_at("wine", 200, Duration::from_millis(1), t0 + 60);
        assert_eq!(m.traffic_at("wine", t0 + 60).unwrap().recent, 3);
        m.observe_at("slow", 504, Duration::from_secs(100), t0);
        assert_eq!(m.traffic_at("slow", t0).unwrap().p95_le, None);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
