//! The studio's metric series endpoint and compare page against the real server: metrics logged
//! through the API, pages read with a session cookie from `/login`.

mod common;

use common::Server;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn http() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// Signs in at `/login` with the admin token; returns the session cookie.
async fn sign_in(s: &Server) -> String {
    let r = common::studio_login(&http(), &s.url, &s.token, "/").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "sign-in failed");
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    cookie.split(';').next().unwrap().to_string()
}

async fn get(s: &Server, cookie: &str, path: &str) -> (StatusCode, String) {
    let r = http().get(format!("{}{path}", s.url)).header("cookie", cookie).send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

async fn api_post(s: &Server, path: &str, body: Value) -> Value {
    let r = http()
        .post(format!("{}/api/v1/{path}", s.url))
        .bearer_auth(&s.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

async fn new_run(s: &Server, name: &str, params: &[(&str, &str)]) -> String {
    let run = api_post(s, "workspaces/w/runs", json!({"experiment": "e", "display_name": name})).await;
    let id = run["id"].as_str().unwrap().to_string();
    let params: Vec<Value> = params.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
    api_post(s, &format!("workspaces/w/runs/{id}/log-batch"), json!({"params": params})).await;
    id
}

/// Logs `loss` at steps 0..n (1000 per batch, the API's limit): a smooth curve with one spike.
async fn log_loss(s: &Server, run: &str, n: i64, spike: i64) {
    for start in (0..n).step_by(1000) {
        let metrics: Vec<Value> = (start..(start + 1000).min(n))
            .map(|i| {
                let v = if i == spike { 1000.0 } else { 1.0 / (1.0 + i as f64 / 100.0) };
                json!({"key": "loss", "value": v, "step": i, "timestamp": 1_700_000_000_000_i64 + i})
            })
            .collect();
        api_post(s, &format!("workspaces/w/runs/{run}/log-batch"), json!({"metrics": metrics})).await;
    }
}

fn series_url(run: &str, key: &str, query: &str) -> String {
    format!("/w/w/runs/{run}/metrics/{key}/series{query}")
}

async fn series(s: &Server, cookie: &str, run: &str, query: &str) -> (StatusCode, Value) {
    let (status, body) = get(s, cookie, &series_url(run, "loss", query)).await;
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}")))
}

fn steps(v: &Value) -> Vec<i64> {
    v["points"].as_array().unwrap().iter().map(|p| p[0].as_i64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_are_downsampled_keeping_ends_and_spike_and_zoom_to_a_window() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    let cookie = sign_in(&s).await;
    let run = new_run(&s, "long", &[]).await;
    log_loss(&s, &run, 30_000, 12_345).await;

    let (status, v) = series(&s, &cookie, &run, "?points=500").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!((v["key"].as_str(), v["total_points"].as_u64()), (Some("loss"), Some(30_000)));
    let got = steps(&v);
    assert!(got.len() <= 500 && got.len() > 400, "{} points", got.len());
    assert_eq!(v["returned_points"].as_u64(), Some(got.len() as u64));
    assert_eq!((got[0], *got.last().unwrap()), (0, 29_999));
    let spike = v["points"].as_array().unwrap().iter().find(|p| p[0] == 12_345).expect("the spike is kept");
    assert_eq!((spike[1].as_f64(), spike[2].as_i64()), (Some(1000.0), Some(1_700_000_000_000 + 12_345)));

    // The default asks for 1000; a zoom returns the window only, here in full.
    let (_, v) = series(&s, &cookie, &run, "").await;
    assert!(steps(&v).len() <= 1000 && steps(&v).len() > 900);
    let (_, v) = series(&s, &cookie, &run, "?points=1000&xmin=12300&xmax=12400").await;
    assert_eq!(v["total_points"].as_u64(), Some(101));
    assert_eq!(steps(&v), (12_300..=12_400).collect::<Vec<_>>());
    let (_, v) = series(&s, &cookie, &run, "?points=100&xmin=20000&xmax=").await;
    assert_eq!(v["total_points"].as_u64(), Some(10_000));
    let got = steps(&v);
    assert!(got.len() == 100 && got[0] == 20_000 && got[99] == 29_999, "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_refuse_bad_queries_and_unknown_runs_and_keys() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    let cookie = sign_in(&s).await;
    let run = new_run(&s, "short", &[]).await;
    log_loss(&s, &run, 10, -1).await;

    for (query, needle) in [
        ("?points=abc", "points"),
        ("?points=2", "points"),
        ("?points=100000", "points"),
        ("?xmin=1.5", "xmin"),
        ("?xmin=9&xmax=3", "xmax"),
    ] {
        let (status, v) = series(&s, &cookie, &run, query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(needle), "{query}: {v}");
    }
    let (status, _) = get(&s, &cookie, &series_url("0123456789abcdef0123456789abcdef", "loss", "")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = get(&s, &cookie, &series_url(&run, "accuracy", "")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("accuracy"), "{body}");
    // Without a session: to the sign-in page, then back here.
    let r = http().get(format!("{}{}", s.url, series_url(&run, "loss", ""))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(r.headers()["location"].to_str().unwrap().starts_with("/login?next="));
}

/// The `<tr>` of the compare table for a row key, as rendered.
fn row<'a>(page: &'a str, group: &str, key: &str) -> &'a str {
    let marker = format!(r#"data-group="{group}" data-key="{key}">"#);
    let at = page.find(&marker).unwrap_or_else(|| panic!("no {group} row {key}"));
    let start = page[..at].rfind("<tr").unwrap();
    &page[start..at + page[at..].find("</tr>").unwrap()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_lists_runs_side_by_side_marks_differences_and_escapes_values() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    let cookie = sign_in(&s).await;
    let evil = "</script><script>alert(1)</script>";
    let a = new_run(&s, "alpha", &[("lr", "0.1"), ("optimizer", "adam"), ("note", evil)]).await;
    let b = new_run(&s, "beta", &[("lr", "0.2"), ("optimizer", "adam")]).await;
    log_loss(&s, &a, 50, -1).await;
    log_loss(&s, &b, 30, -1).await;

    let (status, page) = get(&s, &cookie, &format!("/w/w/compare?runs={a},{b}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(r#"<table id="compare-table">"#));
    for id in [&a, &b] {
        assert!(page.contains(&format!(r#"data-run-id="{id}""#)), "run {id} missing");
    }
    assert!(row(&page, "params", "lr").starts_with(r#"<tr class="diff""#), "{}", row(&page, "params", "lr"));
    assert!(!row(&page, "params", "optimizer").contains("diff"), "{}", row(&page, "params", "optimizer"));
    assert!(row(&page, "params", "note").starts_with(r#"<tr class="diff""#), "set on one run only");
    assert!(row(&page, "metrics", "loss").contains("0.671141"), "latest loss of run a (step 49)");
    // The overlaid chart, the scatter and parallel coordinates with their selects.
    assert!(page.contains(&format!(r#"data-metric="loss" data-run="{a},{b}""#)), "overlaid loss chart");
    for hook in [
        r#"id="scatter""#,
        r#"id="scatter-metric""#,
        r#"id="scatter-param""#,
        r#"id="parallel-coords""#,
        r#"id="parallel-metric""#,
    ] {
        assert!(page.contains(hook), "{hook} missing");
    }
    // The param shows as text in the table and cannot close the JSON data block.
    assert!(!page.contains("<script>alert(1)"), "unescaped user text");
    assert!(page.contains("&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;"));
    let start = page.find(r#"<script type="application/json" id="compare-data">"#).unwrap();
    let json_text = &page[start..];
    let json_text = &json_text[json_text.find('>').unwrap() + 1..json_text.find("</script>").unwrap()];
    let data: Value = serde_json::from_str(json_text).unwrap();
    assert_eq!(data["runs"][0]["params"]["note"], evil);
    assert_eq!(data["param_keys"], json!(["lr", "note", "optimizer"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_needs_two_known_runs() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    let cookie = sign_in(&s).await;
    let a = new_run(&s, "alpha", &[]).await;
    let (status, page) = get(&s, &cookie, &format!("/w/w/compare?runs={a}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("at least two runs"), "{page}");
    let (status, page) =
        get(&s, &cookie, &format!("/w/w/compare?runs={a},0123456789abcdef0123456789abcdef")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(page.contains("<h1>Not found</h1>"));
    let (status, _) = get(&s, &cookie, &format!("/w/nope/compare?runs={a},{a}x")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
