//! Prometheus metrics of the scoring gateway, served as text at `GET /metrics` (any Cairn token
//! valid in every workspace).
//!
//! Hand-written rather than the `prometheus` or `metrics` crates: the exposition format is a few
//! lines of text, the series are few (per endpoint, deployment and status), and keeping them in
//! the `AppState` (no global registry) lets a deleted endpoint's or deployment's series go with it
//! and keeps tests of one server independent of another. Label values are bounded by what exists:
//! requests refused before authentication are counted under `endpoint="_unauthenticated"`, and
//! requests answered before a deployment was chosen (no deployment, a pinned name that does not
//! exist) under `deployment="_none"` (neither is a valid name), so that neither this page nor its
//! label cardinality depends on names a stranger tries. The per-deployment gauges (replicas,
//! restarts, queue depth) are read from the running deployments at each scrape.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Label of requests whose endpoint was not (or could not be) authenticated.
pub const UNAUTHENTICATED: &str = "_unauthenticated";
/// Deployment label of requests answered before a deployment was chosen.
pub const NO_DEPLOYMENT: &str = "_none";

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

/// A running deployment's gauges at the moment of a scrape (`Deployments::gauges`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeploymentGauges {
    pub endpoint: String,
    pub deployment: String,
    pub replicas: usize,
    pub ready: usize,
    /// Replica restarts since this server started the serving generation.
    pub restarts: u64,
    /// Requests admitted to the deployment and not answered yet (on a replica or waiting for one).
    pub in_flight: usize,
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

    fn recent_at(&self, now: u64) -> u64 {
        self.recent.iter().filter(|(at, _)| *at + RECENT_SECONDS > now && *at <= now).map(|(_, n)| n).sum()
    }

    /// Adds `other`'s counts to these (one endpoint's deployments summed for the studio).
    fn add(&mut self, other: &Series) {
        for (status, n) in &other.by_status {
            *self.by_status.entry(*status).or_default() += n;
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *mine += theirs;
        }
        self.sum += other.sum;
        self.count += other.count;
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Upper bounds of the gateway-overhead histogram's buckets, in seconds: finer than [`BUCKETS`],
/// since the gateway's own share of a request is meant to stay well under a millisecond.
const OVERHEAD_BUCKETS: [f64; 12] =
    [0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.1];

/// The gateway's own time per request answered by a replica (all endpoints together).
#[derive(Default)]
struct Overhead {
    /// Non-cumulative counts per bucket; the last slot is `+Inf`.
    buckets: [u64; OVERHEAD_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

/// Request series by `(endpoint, deployment)`, and the gateway's overhead.
#[derive(Default)]
pub struct Metrics {
    series: Mutex<BTreeMap<(String, String), Series>>,
    overhead: Mutex<Overhead>,
}

impl Metrics {
    /// Records one scoring request; `deployment` is None when none was chosen.
    pub fn observe(&self, endpoint: &str, deployment: Option<&str>, status: u16, elapsed: Duration) {
        self.observe_at(endpoint, deployment, status, elapsed, unix_seconds());
    }

    fn observe_at(&self, endpoint: &str, deployment: Option<&str>, status: u16, elapsed: Duration, now: u64) {
        let secs = elapsed.as_secs_f64();
        let mut all = self.series.lock().expect("metrics lock");
        let key = (endpoint.to_string(), deployment.unwrap_or(NO_DEPLOYMENT).to_string());
        let s = all.entry(key).or_default();
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

    /// Records the gateway's own time for one request a replica answered: the whole handler's time
    /// minus the time spent in the replica call (socket, queueing for a replica, its work).
    pub fn observe_overhead(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let mut o = self.overhead.lock().expect("metrics lock");
        let slot = OVERHEAD_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(OVERHEAD_BUCKETS.len());
        o.buckets[slot] += 1;
        o.sum += secs;
        o.count += 1;
    }

    /// One endpoint's counts by status, latency summary and recent request count, over all its
    /// deployments; `None` before its first scoring request.
    pub fn traffic(&self, endpoint: &str) -> Option<EndpointTraffic> {
        self.traffic_at(endpoint, unix_seconds())
    }

    fn traffic_at(&self, endpoint: &str, now: u64) -> Option<EndpointTraffic> {
        let all = self.series.lock().expect("metrics lock");
        let mut total = Series::default();
        let mut recent = 0;
        for (_, s) in
            all.range((endpoint.to_string(), String::new())..).take_while(|((e, _), _)| e == endpoint)
        {
            total.add(s);
            recent += s.recent_at(now);
        }
        if total.count == 0 {
            return None;
        }
        Some(EndpointTraffic {
            total: total.count,
            by_status: total.by_status.clone(),
            mean_seconds: total.sum / total.count as f64,
            p50_le: total.quantile_le(0.5),
            p95_le: total.quantile_le(0.95),
            recent,
        })
    }

    /// Forgets a deleted endpoint's series (all its deployments').
    pub fn remove(&self, endpoint: &str) {
        self.series.lock().expect("metrics lock").retain(|(e, _), _| e != endpoint);
    }

    /// Forgets a deleted deployment's series.
    pub fn remove_deployment(&self, endpoint: &str, deployment: &str) {
        self.series.lock().expect("metrics lock").remove(&(endpoint.to_string(), deployment.to_string()));
    }

    /// The text exposition format (version 0.0.4), with the running deployments' `gauges`.
    pub fn render(&self, gauges: &[DeploymentGauges]) -> String {
        let all = self.series.lock().expect("metrics lock");
        let mut out = String::new();
        out.push_str(
            "# HELP cairn_endpoint_requests_total Scoring requests by endpoint, deployment and HTTP status.\n",
        );
        out.push_str("# TYPE cairn_endpoint_requests_total counter\n");
        for ((e, d), s) in all.iter() {
            let labels = format!("endpoint=\"{}\",deployment=\"{}\"", escape(e), escape(d));
            for (status, n) in &s.by_status {
                let _ = writeln!(out, "cairn_endpoint_requests_total{{{labels},status=\"{status}\"}} {n}");
            }
        }
        out.push_str(
            "# HELP cairn_endpoint_request_duration_seconds Time from a scoring request's arrival to its answer.\n",
        );
        out.push_str("# TYPE cairn_endpoint_request_duration_seconds histogram\n");
        for ((e, d), s) in all.iter() {
            let labels = format!("endpoint=\"{}\",deployment=\"{}\"", escape(e), escape(d));
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += s.buckets[i];
                let _ = writeln!(
                    out,
                    "cairn_endpoint_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
                );
            }
            cumulative += s.buckets[BUCKETS.len()];
            let _ = writeln!(
                out,
                "cairn_endpoint_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {cumulative}"
            );
            let _ = writeln!(out, "cairn_endpoint_request_duration_seconds_sum{{{labels}}} {}", s.sum);
            let _ = writeln!(out, "cairn_endpoint_request_duration_seconds_count{{{labels}}} {}", s.count);
        }
        {
            let o = self.overhead.lock().expect("metrics lock");
            out.push_str(
                "# HELP cairn_gateway_overhead_seconds The gateway's own time per request a replica answered \
                 (authentication, body, deployment choice, framing, response), without the replica call.\n",
            );
            out.push_str("# TYPE cairn_gateway_overhead_seconds histogram\n");
            let mut cumulative = 0;
            for (i, bound) in OVERHEAD_BUCKETS.iter().enumerate() {
                cumulative += o.buckets[i];
                let _ = writeln!(out, "cairn_gateway_overhead_seconds_bucket{{le=\"{bound}\"}} {cumulative}");
            }
            cumulative += o.buckets[OVERHEAD_BUCKETS.len()];
            let _ = writeln!(out, "cairn_gateway_overhead_seconds_bucket{{le=\"+Inf\"}} {cumulative}");
            let _ = writeln!(out, "cairn_gateway_overhead_seconds_sum {}", o.sum);
            let _ = writeln!(out, "cairn_gateway_overhead_seconds_count {}", o.count);
        }
        type Gauge = (&'static str, &'static str, &'static str, fn(&DeploymentGauges) -> u64);
        let families: [Gauge; 4] = [
            ("cairn_deployment_replicas", "gauge", "Replicas of the serving generation.", |g| {
                g.replicas as u64
            }),
            ("cairn_deployment_replicas_ready", "gauge", "Replicas in the gateway's rotation.", |g| {
                g.ready as u64
            }),
            (
                "cairn_deployment_replica_restarts_total",
                "counter",
                "Replica restarts (crash, failed liveness, timeout) of the serving generation.",
                |g| g.restarts,
            ),
            (
                "cairn_deployment_queue_depth",
                "gauge",
                "Requests admitted to the deployment and not answered yet (on a replica or waiting for one).",
                |g| g.in_flight as u64,
            ),
        ];
        for (name, kind, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for g in gauges {
                let _ = writeln!(
                    out,
                    "{name}{{endpoint=\"{}\",deployment=\"{}\"}} {}",
                    escape(&g.endpoint),
                    escape(&g.deployment),
                    value(g)
                );
            }
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
    fn counts_and_histograms_are_rendered_cumulatively_by_deployment() {
        let m = Metrics::default();
        m.observe("wine", Some("blue"), 200, Duration::from_micros(300));
        m.observe("wine", Some("blue"), 200, Duration::from_millis(30));
        m.observe("wine", Some("green"), 500, Duration::from_millis(3));
        m.observe("wine", None, 503, Duration::from_secs(100));
        let gauges = [DeploymentGauges {
            endpoint: "wine".into(),
            deployment: "blue".into(),
            replicas: 2,
            ready: 1,
            restarts: 3,
            in_flight: 4,
        }];
        let text = m.render(&gauges);
        for line in [
            "cairn_endpoint_requests_total{endpoint=\"wine\",deployment=\"blue\",status=\"200\"} 2\n",
            "cairn_endpoint_requests_total{endpoint=\"wine\",deployment=\"green\",status=\"500\"} 1\n",
            "cairn_endpoint_requests_total{endpoint=\"wine\",deployment=\"_none\",status=\"503\"} 1\n",
            "_bucket{endpoint=\"wine\",deployment=\"blue\",le=\"0.0005\"} 1\n",
            "_bucket{endpoint=\"wine\",deployment=\"blue\",le=\"0.05\"} 2\n",
            "_bucket{endpoint=\"wine\",deployment=\"_none\",le=\"60\"} 0\n",
            "_bucket{endpoint=\"wine\",deployment=\"_none\",le=\"+Inf\"} 1\n",
            "_count{endpoint=\"wine\",deployment=\"blue\"} 2\n",
            "cairn_deployment_replicas{endpoint=\"wine\",deployment=\"blue\"} 2\n",
            "cairn_deployment_replicas_ready{endpoint=\"wine\",deployment=\"blue\"} 1\n",
            "cairn_deployment_replica_restarts_total{endpoint=\"wine\",deployment=\"blue\"} 3\n",
            "cairn_deployment_queue_depth{endpoint=\"wine\",deployment=\"blue\"} 4\n",
            "# TYPE cairn_deployment_replica_restarts_total counter\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        m.remove_deployment("wine", "green");
        let text = m.render(&[]);
        assert!(!text.contains("green") && text.contains("blue"), "{text}");
        m.remove("wine");
        assert!(!m.render(&[]).contains("wine"));
    }

    #[test]
    fn traffic_summarises_one_endpoint_over_its_deployments_and_forgets_old_seconds() {
        let m = Metrics::default();
        assert_eq!(m.traffic("wine"), None);
        let t0 = 1_000_000;
        m.observe_at("wine", Some("blue"), 200, Duration::from_millis(3), t0);
        m.observe_at("wine", Some("green"), 200, Duration::from_millis(4), t0 + 1);
        m.observe_at("wine", None, 500, Duration::from_millis(200), t0 + 30);
        m.observe_at("other", Some("blue"), 200, Duration::from_millis(1), t0 + 30);
        m.observe_at("winex", Some("blue"), 200, Duration::from_millis(1), t0 + 30);
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
        m.observe_at("wine", Some("blue"), 200, Duration::from_millis(1), t0 + 60);
        assert_eq!(m.traffic_at("wine", t0 + 60).unwrap().recent, 3);
        m.observe_at("slow", None, 504, Duration::from_secs(100), t0);
        assert_eq!(m.traffic_at("slow", t0).unwrap().p95_le, None);
    }

    #[test]
    fn gateway_overhead_is_a_fine_grained_histogram() {
        let m = Metrics::default();
        for micros in [3, 40, 40, 90, 2000, 500_000] {
            m.observe_overhead(Duration::from_micros(micros));
        }
        let text = m.render(&[]);
        for line in [
            "cairn_gateway_overhead_seconds_bucket{le=\"0.000005\"} 1",
            "cairn_gateway_overhead_seconds_bucket{le=\"0.00005\"} 3",
            "cairn_gateway_overhead_seconds_bucket{le=\"0.0001\"} 4",
            "cairn_gateway_overhead_seconds_bucket{le=\"0.0025\"} 5",
            "cairn_gateway_overhead_seconds_bucket{le=\"0.1\"} 5",
            "cairn_gateway_overhead_seconds_bucket{le=\"+Inf\"} 6",
            "cairn_gateway_overhead_seconds_count 6",
        ] {
            assert!(text.contains(line), "{line} missing in:\n{text}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
