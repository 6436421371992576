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
use std::time::Duration;

/// Label of requests whose endpoint was not (or could not be) authenticated.
pub const UNAUTHENTICATED: &str = "_unauthenticated";

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
}

#[derive(Default)]
pub struct Metrics {
    endpoints: Mutex<BTreeMap<String, Series>>,
}

impl Metrics {
    /// Records one scoring request.
    pub fn observe(&self, endpoint: &str, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let mut all = self.endpoints.lock().expect("metrics lock");
        let s = all.entry(endpoint.to_string()).or_default();
        *s.by_status.entry(status).or_default() += 1;
        let slot = BUCKETS.iter().position(|b| secs <= *b).unwrap_or(BUCKETS.len());
        s.buckets[slot] += 1;
        s.sum += secs;
        s.count += 1;
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
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
