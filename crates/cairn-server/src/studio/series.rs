//! Metric series as JSON for the charts: `GET /w/{ws}/runs/{id}/metrics/{key}/series?points=N&xmin=&xmax=`
//! → `{"key", "total_points", "returned_points", "points": [[step, value, timestamp_ms], …]}`.
//!
//! The store does the work (`Store::metric_series`: tiles, then LTTB, so a million-point series
//! answers in milliseconds); this module only parses the query, checks the session may read the
//! run, and shapes the JSON. Non-finite values are `null` in JSON. Errors are JSON too (the
//! caller is a script), with the API's error shape and status.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, RawQuery, State};
use axum::http::header::HeaderName;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use cairn_core::api::Role;
use cairn_core::Error;

use super::session::Session;
use crate::error::ApiResult;
use crate::state::AppState;

/// Points returned when the query does not say.
pub const DEFAULT_POINTS: usize = 1000;
/// The most points one request may ask for (a chart wider than 2,500 pixels gains nothing more).
pub const MAX_POINTS: usize = 5000;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/w/{ws}/runs/{run}/metrics/{key}/series", get(series))
}

/// The parsed query: points to return and the optional step window.
#[derive(Debug, PartialEq)]
struct SeriesQuery {
    points: usize,
    xmin: Option<i64>,
    xmax: Option<i64>,
}

/// Parses `points`, `xmin` and `xmax` (an empty value means "not given", as a form sends it);
/// anything else, or a value that is not a whole number in range, is refused by name.
fn parse_query(raw: Option<&str>) -> Result<SeriesQuery, Error> {
    let mut q = SeriesQuery { points: DEFAULT_POINTS, xmin: None, xmax: None };
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let v = v.trim();
        match k.as_ref() {
            "points" => {
                q.points = match v.parse::<usize>() {
                    Ok(n) if (3..=MAX_POINTS).contains(&n) => n,
                    _ => {
                        return Err(Error::invalid(format!(
                            "points must be a whole number from 3 to {MAX_POINTS}, not {v:?}"
                        )))
                    }
                }
            }
            "xmin" | "xmax" if v.is_empty() => {}
            "xmin" | "xmax" => {
                let n = v
                    .parse::<i64>()
                    .map_err(|_| Error::invalid(format!("{k} must be a whole step number, not {v:?}")))?;
                if k == "xmin" {
                    q.xmin = Some(n)
                } else {
                    q.xmax = Some(n)
                }
            }
            other => {
                return Err(Error::invalid(format!(
                    "unknown query parameter {other:?} (expected points, xmin, xmax)"
                )))
            }
        }
    }
    if let (Some(lo), Some(hi)) = (q.xmin, q.xmax) {
        if lo > hi {
            return Err(Error::invalid(format!("xmin ({lo}) must not be greater than xmax ({hi})")));
        }
    }
    Ok(q)
}

async fn series(
    s: Session,
    State(state): State<Arc<AppState>>,
    Path((ws, run, key)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<impl IntoResponse> {
    let started = Instant::now();
    let q = parse_query(raw.as_deref())?;
    s.caller.require_run_or_child(&state.store, Role::Reader, &ws, &run).await?;
    let workspace = state.store.workspace(&ws).await?;
    state.store.run_status(&workspace, &run).await?;
    let series = state.store.metric_series(&run, &key, q.xmin, q.xmax, q.points).await?;
    let points: Vec<(i64, Option<f64>, i64)> =
        series.points.iter().map(|p| (p.step, p.value.is_finite().then_some(p.value), p.timestamp)).collect();
    let body = serde_json::json!({
        "key": series.key,
        "total_points": series.total_points,
        "returned_points": points.len(),
        "points": points,
    });
    // Server-Timing lets the browser's network panel (and the benchmark) see the server's share.
    let timing = format!("series;dur={:.1}", started.elapsed().as_secs_f64() * 1000.0);
    Ok(([(HeaderName::from_static("server-timing"), timing)], Json(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_parsed_with_defaults_and_empty_values() {
        assert_eq!(parse_query(None).unwrap(), SeriesQuery { points: 1000, xmin: None, xmax: None });
        assert_eq!(
            parse_query(Some("points=50&xmin=&xmax=90")).unwrap(),
            SeriesQuery { points: 50, xmin: None, xmax: Some(90) }
        );
        assert_eq!(
            parse_query(Some("xmin=-5&xmax=-5")).unwrap(),
            SeriesQuery { points: 1000, xmin: Some(-5), xmax: Some(-5) }
        );
    }

    #[test]
    fn bad_queries_are_refused_by_name() {
        for (q, needle) in [
            ("points=abc", "points"),
            ("points=2", "points"),
            ("points=5001", "points"),
            ("points=-1", "points"),
            ("xmin=1.5", "xmin"),
            ("xmax=x", "xmax"),
            ("xmin=9&xmax=3", "greater"),
            ("zoom=1", "zoom"),
        ] {
            let e = parse_query(Some(q)).unwrap_err();
            assert!(matches!(&e, Error::Invalid(m) if m.contains(needle)), "{q}: {e}");
        }
    }
}
