//! The studio (issue 7) in a real headless Chromium: the issue's scenario end to end against the
//! real `cairn server` — sign in, run the wine job, find it in the runs table, sort, filter, open the
//! run and its chart, compare two runs, open the model and the endpoint, reveal a key, test-invoke
//! the endpoint — plus the bad input the issue names (an unknown id, an expired session, a
//! `<script>` run name, a filter that does not parse), a narrow window and keyboard navigation.
//! Every page visited is saved to `target/ui-screenshots/`; any console error fails the test.
//! Needs Debian's chromium and chromium-driver (`scripts/setup.sh`); without them the tests fail.

#[path = "ui/browser.rs"]
mod browser;
mod common;

use browser::Browser;
use common::*;
use serde_json::{json, Value};

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A call to the JSON API with the admin token.
async fn api(s: &Server, method: &str, path: &str, body: Option<Value>) -> Value {
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/workspaces/w{path}", s.url);
    let req = match method {
        "GET" => http.get(url),
        "POST" => http.post(url),
        "PATCH" => http.patch(url),
        m => panic!("method {m}"),
    };
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    let resp = req.bearer_auth(&s.token).send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(status.is_success(), "{method} {path}: {status}: {text}");
    if text.is_empty() {
        Value::Null
    } else {
        parse(&text)
    }
}

/// A finished run made through the tracking API, with one value of each metric given.
async fn api_run(
    s: &Server,
    exp: &str,
    name: &str,
    metrics: &[(&str, f64)],
    params: &[(&str, &str)],
) -> String {
    let run = api(s, "POST", "/runs", Some(json!({"experiment": exp, "display_name": name}))).await;
    let id = run["id"].as_str().unwrap().to_string();
    let metrics: Vec<Value> = metrics.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
    let params: Vec<Value> = params.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
    api(s, "POST", &format!("/runs/{id}/log-batch"), Some(json!({"metrics": metrics, "params": params})))
        .await;
    api(s, "PATCH", &format!("/runs/{id}"), Some(json!({"status": "Completed"}))).await;
    id
}

/// The run ids of the runs table's rows, top to bottom.
async fn table_rows(b: &Browser) -> Vec<String> {
    b.find("table#runs-table").await;
    let mut ids = Vec::new();
    for row in b.find_all("table#runs-table tr[data-run-id]").await {
        ids.push(row.attr("data-run-id").await.unwrap().unwrap());
    }
    ids
}

/// Signs in at `/login` and lands on `/`.
async fn signed_in(s: &Server, test: &str) -> Browser {
    let b = Browser::start(&s.url, test).await;
    b.visit("/login", "login").await;
    b.sign_in(&s.token).await;
    b.wait_path("the workspaces page after signing in", |p| p == "/").await;
    b.shot("workspaces").await;
    b.no_console_errors("sign-in").await;
    b
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_in_a_wrong_token_an_expired_session_and_unknown_ids() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    let run = api_run(&s, "e", "a run", &[("m", 1.0)], &[]).await;
    let b = Browser::start(&s.url, "session").await;

    // Not signed in: the asked page sends to sign-in, and signing in comes back to it.
    let asked = format!("/w/w/runs/{run}");
    b.visit(&asked, "asked-page-signed-out").await;
    let at = b.wait_path("the sign-in page", |p| p.starts_with("/login")).await;
    assert!(at.contains("next="), "the sign-in page does not remember the asked page: {at}");
    b.no_console_errors("redirect to sign-in").await;

    // A wrong token: the form again, with an inline error, and no session.
    b.sign_in("not-a-token").await;
    let error = b.wait_text("form#login-form #login-error").await;
    assert!(error.contains("not valid"), "the inline error: {error}");
    b.shot("wrong-token").await;
    assert!(b.path().await.starts_with("/login"), "a wrong token left the sign-in page");
    let page = b.client.source().await.unwrap();
    assert!(!page.contains("not-a-token"), "the page repeats the typed token");
    b.only_expected_status("a wrong token", 401).await;
    assert!(b.client.get_named_cookie("cairn_session").await.is_err(), "a wrong token got a session");

    // The right token: back to the page asked for.
    b.sign_in(&s.token).await;
    b.wait_path("the asked page after signing in", |p| p == asked).await;
    b.find("#run-status").await;
    b.shot("back-at-asked-page").await;
    b.no_console_errors("the run page after sign-in").await;
    // The session cookie never holds the token itself.
    assert!(!b.session_cookie().await.contains(&s.token), "the session cookie contains the token");

    // Unknown ids: the 404 page, with status 404, for a run, a workspace and a model.
    for (path, name) in [
        ("/w/w/runs/no-such-run".to_string(), "404-run"),
        ("/w/nope/experiments".to_string(), "404-workspace"),
        ("/w/w/models/no-such-model".to_string(), "404-model"),
        ("/w/w/endpoints/no-such-endpoint".to_string(), "404-endpoint"),
    ] {
        b.visit(&path, name).await;
        let h1 = b.find("h1").await.text().await.unwrap();
        assert_eq!(h1, "Not found", "{path}");
        b.only_expected_status(&path, 404).await;
        let (status, _) = b.get_as_me(&path).await;
        assert_eq!(status, 404, "{path}");
    }

    // A cleared session (cookie gone) and a forged one: sign-in again, then back to the asked page.
    b.client.delete_all_cookies().await.unwrap();
    b.visit(&asked, "cleared-session").await;
    b.wait_path("the sign-in page after the cookie was cleared", |p| p.starts_with("/login")).await;
    b.js("document.cookie = 'cairn_session=forged.value; path=/'; return true;").await;
    b.visit(&asked, "forged-session").await;
    b.wait_path("the sign-in page with a forged cookie", |p| p.starts_with("/login")).await;
    b.sign_in(&s.token).await;
    b.wait_path("the asked page after signing in again", |p| p == asked).await;
    b.no_console_errors("signing in again").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runs_table_sorts_filters_escapes_and_works_narrow_and_by_keyboard() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    let rmse = [0.9, 0.3, 1.3, 0.5, 0.7];
    let mut ids = Vec::new();
    for (i, v) in rmse.iter().enumerate() {
        let depth = (i + 2).to_string();
        ids.push(api_run(&s, "trees", &format!("tree {i}"), &[("rmse", *v)], &[("max_depth", &depth)]).await);
    }
    let evil = "<script>alert(1)</script>";
    let xss = api_run(&s, "trees", evil, &[("rmse", 1.1)], &[("max_depth", "<b>9</b>")]).await;
    ids.push(xss.clone());
    let by_rmse = |desc: bool| {
        let mut v: Vec<(f64, String)> = [0.9, 0.3, 1.3, 0.5, 0.7, 1.1].into_iter().zip(ids.clone()).collect();
        v.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
        if desc {
            v.reverse();
        }
        v.into_iter().map(|(_, id)| id).collect::<Vec<_>>()
    };

    let b = signed_in(&s, "table").await;
    b.visit("/w/w/experiments/trees", "runs-table").await;
    let rows = table_rows(&b).await;
    let mut sorted_rows = rows.clone();
    sorted_rows.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(sorted_rows, want, "the table shows each run once");
    b.no_console_errors("the runs table").await;

    // User text is shown as text: no alert, the name visible literally, no injected element.
    assert!(b.client.get_alert_text().await.is_err(), "a run name ran as a script");
    let row_text = b.find(&format!("tr[data-run-id=\"{xss}\"]")).await.text().await.unwrap();
    assert!(row_text.contains(evil), "the run name is not shown as text: {row_text:?}");
    let injected = b.js("return document.querySelectorAll('#runs-table script, #runs-table b').length").await;
    assert_eq!(injected, json!(0), "user text became markup");
    b.visit(&format!("/w/w/runs/{xss}"), "xss-run-page").await;
    assert!(b.client.get_alert_text().await.is_err(), "the run page ran the run name as a script");
    let body = b.find("main#main").await.text().await.unwrap();
    assert!(body.contains(evil), "the run page does not show the name as text");
    b.no_console_errors("the <script> run's page").await;

    // Sort by a metric: click its header; the rows follow the metric; again reverses.
    b.visit("/w/w/experiments/trees", "runs-table-again").await;
    b.find("th[data-col=\"metrics.rmse\"] a").await.click().await.unwrap();
    let p = b.wait_path("a sorted table", |p| p.contains("order=")).await;
    let first_desc = p.contains("DESC") || p.contains("desc");
    b.shot("sorted-by-rmse").await;
    assert_eq!(table_rows(&b).await, by_rmse(first_desc), "rows not in rmse order after {p}");
    b.find("th[data-col=\"metrics.rmse\"] a").await.click().await.unwrap();
    let p2 = b.wait_path("the table sorted the other way", |q| q != p && q.contains("order=")).await;
    b.shot("sorted-by-rmse-reversed").await;
    assert_eq!(table_rows(&b).await, by_rmse(!first_desc), "rows not in reverse rmse order after {p2}");
    b.no_console_errors("sorting").await;

    // A filter that does not parse: the message inline, the table unchanged.
    let before = table_rows(&b).await;
    let filter = b.find("form#runs-filter input[name=filter]").await;
    filter.clear().await.unwrap();
    filter.send_keys("metrics.rmse >>> 'oops").await.unwrap();
    filter.send_keys("\u{E007}").await.unwrap(); // Enter
    let err = b.wait_text("#filter-error").await;
    b.shot("bad-filter").await;
    assert!(!err.trim().is_empty());
    assert_eq!(table_rows(&b).await, before, "a bad filter changed the table");
    // The page answers 400 with the message; that status is the only console entry allowed.
    b.only_expected_status("a bad filter", 400).await;

    // A good filter narrows the rows.
    let filter = b.find("form#runs-filter input[name=filter]").await;
    filter.clear().await.unwrap();
    filter.send_keys("metrics.rmse < 0.8").await.unwrap();
    filter.send_keys("\u{E007}").await.unwrap();
    b.wait_path("a filtered table", |p| p.contains("filter=")).await;
    b.shot("filtered").await;
    let mut got = table_rows(&b).await;
    got.sort();
    let mut want: Vec<String> =
        rmse.iter().zip(&ids).filter(|(v, _)| **v < 0.8).map(|(_, id)| id.clone()).collect();
    want.sort();
    assert_eq!(got, want, "metrics.rmse < 0.8");
    for e in b.find_all("#filter-error").await {
        let shown = e.is_displayed().await.unwrap() && !e.text().await.unwrap().trim().is_empty();
        assert!(!shown, "a good filter shows an error");
    }
    b.no_console_errors("a good filter").await;

    // Keyboard: Tab from the top of the page reaches the filter box and then the first run link.
    b.visit("/w/w/experiments/trees", "keyboard").await;
    let mut reached_filter = false;
    let mut reached_run = false;
    for _ in 0..80 {
        b.tab().await;
        let what = b
            .js("const a = document.activeElement; \
                 const f = document.querySelector('form#runs-filter input[name=filter]'); \
                 const r = document.querySelector('table#runs-table tr[data-run-id] a'); \
                 return a === f ? 'filter' : (a === r ? 'run' : '');")
            .await;
        reached_filter |= what == json!("filter");
        if what == json!("run") {
            reached_run = true;
            break;
        }
    }
    assert!(reached_filter, "Tab never reached the filter box");
    assert!(reached_run, "Tab never reached the first run link");
    b.shot("keyboard-on-first-run").await;

    // 1280×800 and a narrow window: no horizontal overflow of the page, the nav still reachable.
    for (w, name) in [(1280, "wide"), (420, "narrow")] {
        b.resize(w, 800).await;
        b.visit("/w/w/experiments/trees", &format!("runs-table-{name}")).await;
        let overflow =
            b.js("return document.documentElement.scrollWidth - document.documentElement.clientWidth").await;
        assert!(
            overflow.as_i64().unwrap() <= 0,
            "the page scrolls sideways at {w} px: {overflow} px too wide"
        );
        let nav = b.find("nav#ws-nav a[data-nav=runs]").await;
        if !nav.is_displayed().await.unwrap() {
            // A collapsed nav must open with a button that controls it.
            b.find("button[aria-controls=ws-nav]").await.click().await.unwrap();
        }
        assert!(nav.is_displayed().await.unwrap(), "the nav is not reachable at {w} px");
        nav.click().await.unwrap();
        b.wait_path("the runs page from the nav", |p| p.starts_with("/w/w/runs")).await;
        b.shot(&format!("nav-runs-{name}")).await;
        b.no_console_errors(&format!("the {name} window")).await;
    }
}

/// Submits a job file and waits for it (`--wait`); returns the run.
fn run_job(s: &Server, file: &std::path::Path) -> Value {
    let out = s
        .cmd()
        .args(["job", "submit", "-f", file.to_str().unwrap(), "-w", "w", "--wait", "-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    parse(&String::from_utf8_lossy(&out.stdout))
}

const FAST_RUN: &str = r#"
from cairn import Run
run = Run.get_context()
for step in range(20):
    run.log("rmse", 1.5 - 0.02 * step)
run.log("max depth", 3.0)
run.log_param("max_depth", 3)
run.complete()
"#;

/// Workspace `w` with the walkthrough's data, compute and environment, and the wine job run to
/// completion (a real environment build and training); returns the run.
fn wine_job(s: &Server) -> Value {
    s.ok(&["workspace", "create", "w"]);
    let wine = repo_root().join("examples/wine");
    let p = |f: &str| wine.join(f).display().to_string();
    s.ok(&["datastore", "upload", "-w", "w", &p("winedata"), "--target-path", "winedata", "-q"]);
    s.ok(&["compute", "create", "-f", &p("compute.yml"), "-w", "w"]);
    s.ok(&["env", "create", "-f", &p("env.yml"), "-w", "w"]);
    let run = run_job(s, &wine.join("job.yml"));
    assert_eq!(run["status"], "Completed");
    run
}

#[tokio::test(flavor = "multi_thread")]
async fn the_issue_scenario_wine_job_in_the_table_its_chart_and_a_comparison() {
    let s = Server::start();
    // The wine job, and a second, faster run to compare.
    let wine_run = wine_job(&s);
    let wine_id = wine_run["id"].as_str().unwrap().to_string();
    let wine_rmse = wine_run["metrics"]["rmse"]["value"].as_f64().unwrap();
    let fast_dir = s.tmp().join("fast");
    write_tree(
        &fast_dir,
        &[
            ("code/fast.py", FAST_RUN.as_bytes()),
            (
                "job.yml",
                b"experiment_name: wine_expt\ndisplay_name: fast tree\ncode: ./code\ncommand: python fast.py\n\
                  environment: wine-experiment-env\ncompute: cpucluster\n",
            ),
        ],
    );
    let fast_run = run_job(&s, &fast_dir.join("job.yml"));
    assert_eq!(fast_run["status"], "Completed");
    let fast_id = fast_run["id"].as_str().unwrap().to_string();

    // Sign in through the form; the nav leads to the experiment's runs table.
    let b = signed_in(&s, "scenario").await;
    b.visit("/w/w", "workspace").await;
    b.wait_path("the experiments page", |p| p == "/w/w/experiments").await;
    b.find("nav#ws-nav a[data-nav=experiments]").await;
    b.no_console_errors("the experiments page").await;
    b.find("a[href=\"/w/w/experiments/wine_expt\"]").await.click().await.unwrap();
    b.wait_path("the wine experiment", |p| p.starts_with("/w/w/experiments/wine_expt")).await;
    b.shot("wine-experiment").await;
    let rows = table_rows(&b).await;
    assert!(rows.contains(&wine_id) && rows.contains(&fast_id), "the runs are not in the table: {rows:?}");
    b.no_console_errors("the wine experiment's table").await;

    // Sort by the metric: the lower rmse first in ascending order.
    b.find("th[data-col=\"metrics.rmse\"] a").await.click().await.unwrap();
    let p = b.wait_path("a sorted table", |p| p.contains("order=")).await;
    let desc = p.contains("DESC") || p.contains("desc");
    let fast_rmse = fast_run["metrics"]["rmse"]["value"].as_f64().unwrap();
    let mut want = vec![(wine_rmse, wine_id.clone()), (fast_rmse, fast_id.clone())];
    want.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    if desc {
        want.reverse();
    }
    let want: Vec<String> = want.into_iter().map(|(_, id)| id).collect();
    assert_eq!(table_rows(&b).await, want, "after {p}");
    b.shot("wine-sorted").await;

    // Open the wine run from its row: status, params, its chart with its one logged point.
    b.find(&format!("tr[data-run-id=\"{wine_id}\"] a[href*=\"/runs/{wine_id}\"]"))
        .await
        .click()
        .await
        .unwrap();
    b.wait_path("the wine run's page", |p| p == format!("/w/w/runs/{wine_id}")).await;
    assert!(b.find("#run-status").await.text().await.unwrap().contains("Completed"));
    b.find("section#run-overview").await;
    let chart = format!("section#metrics figure.metric-chart[data-metric=\"rmse\"][data-run=\"{wine_id}\"]");
    assert_eq!(b.wait_attr(&chart, "data-points").await, "1");
    b.find(&format!("{chart} svg")).await;
    b.find("section#outputs a.artifact").await;
    b.wait_contains("pre#run-logs", "RMSE is").await;
    b.shot("wine-run").await;
    b.no_console_errors("the wine run's page").await;

    // The fast run's chart has its 20 points drawn as a line.
    b.visit(&format!("/w/w/runs/{fast_id}"), "fast-run").await;
    let chart = format!("section#metrics figure.metric-chart[data-metric=\"rmse\"][data-run=\"{fast_id}\"]");
    assert_eq!(b.wait_attr(&chart, "data-points").await, "20");
    assert!(b.exists(&format!("{chart} svg path")).await, "no line in the chart");
    assert!(b.find("table#params-table").await.text().await.unwrap().contains("max_depth"));
    assert_eq!(b.find("dd#created-by").await.text().await.unwrap(), "admin", "who created the run");
    b.shot("fast-run-chart").await;
    b.no_console_errors("the fast run's page").await;

    // Compare the two runs: select them in the table, press Compare.
    b.visit("/w/w/experiments/wine_expt", "select-to-compare").await;
    for id in [&wine_id, &fast_id] {
        b.find(&format!("input.run-select[value=\"{id}\"]")).await.click().await.unwrap();
    }
    b.find("button#compare-button").await.click().await.unwrap();
    let p = b.wait_path("the compare page", |p| p.starts_with("/w/w/compare")).await;
    assert!(p.contains(&wine_id) && p.contains(&fast_id), "{p}");
    b.find("table#compare-table").await;
    assert!(b.exists("table#compare-table tr.diff").await, "rmse differs but no row is marked");
    b.find("figure.metric-chart").await;
    b.shot("compare").await;
    b.no_console_errors("the compare page").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_issue_scenario_the_wine_model_and_its_endpoint_test_invoked() {
    let s = Server::start();
    let wine_run = wine_job(&s);
    let wine_id = wine_run["id"].as_str().unwrap().to_string();
    let wine = repo_root().join("examples/wine");
    let p = |f: &str| wine.join(f).display().to_string();
    let b = signed_in(&s, "model-endpoint").await;

    // Register the model from the wine run's outputs; open it and follow its lineage.
    s.ok(&[
        "model",
        "register",
        "--name",
        "wine_model",
        "--run",
        &wine_id,
        "--path",
        "outputs/wine_model.pkl",
        "-w",
        "w",
    ]);
    b.visit("/w/w/models", "models").await;
    b.find("table#models-table tr[data-model=\"wine_model\"] a").await.click().await.unwrap();
    b.wait_path("the model's page", |p| p.starts_with("/w/w/models/wine_model")).await;
    b.shot("model").await;
    b.visit("/w/w/models/wine_model/1", "model-version").await;
    let lineage = b.find("section#model-version a#lineage-run").await;
    lineage.click().await.unwrap();
    b.wait_path("the producing run", |p| p == format!("/w/w/runs/{wine_id}")).await;
    b.no_console_errors("the model pages").await;

    // The endpoint with a deployment of that model.
    s.ok(&["endpoint", "create", "-f", &p("endpoint.yml"), "-w", "w"]);
    s.ok(&["deployment", "create", "-f", &p("deployment.yml"), "--all-traffic", "--wait", "-w", "w"]);
    let keys = api(&s, "GET", "/endpoints/wine-endpoint/keys", None).await;
    let primary = keys["primary_key"].as_str().unwrap().to_string();
    b.visit("/w/w/endpoints/wine-endpoint", "endpoint").await;
    b.wait_text("#endpoint-state").await;
    assert!(b.find("#scoring-uri").await.text().await.unwrap().contains("/endpoints/wine-endpoint/score"));
    assert!(b.find("#traffic").await.text().await.unwrap().contains("blue"));
    assert!(b.find("table#deployments-table").await.text().await.unwrap().contains("blue"));
    // The key is not in the page until asked for.
    assert!(!b.client.source().await.unwrap().contains(&primary), "the endpoint page shows a key unasked");
    b.find("button#reveal-primary").await.click().await.unwrap();
    b.wait_contains("#primary-key", &primary).await;
    b.shot("endpoint-key-revealed").await;
    b.no_console_errors("revealing the key").await;

    // Test-invoke through the form: the prediction the endpoint gives a direct call.
    let request = std::fs::read_to_string(wine.join("score-request.json")).unwrap();
    let direct = reqwest::Client::new()
        .post(format!("{}/endpoints/wine-endpoint/score", s.url))
        .bearer_auth(&primary)
        .header("content-type", "application/json")
        .body(request.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 200);
    let direct = parse(&direct.text().await.unwrap());
    let body = b.find("form#test-form textarea[name=body]").await;
    body.clear().await.unwrap();
    body.send_keys(request.trim()).await.unwrap();
    b.find("button#test-send").await.click().await.unwrap();
    let answer = b.wait_text("pre#test-response").await;
    b.shot("endpoint-test-invoked").await;
    let start = answer.find('[').unwrap_or_else(|| panic!("no prediction in the answer: {answer}"));
    let end = answer.rfind(']').unwrap() + 1;
    let shown = parse(&answer[start..end]);
    assert_eq!(shown, direct, "the form's answer differs from a direct call");
    let q = shown[0].as_f64().unwrap();
    assert!((3.0..=8.0).contains(&q), "a wine quality prediction: {q}");
    b.no_console_errors("test-invoking the endpoint").await;
}

/// The links the MLflow client prints ("View run at: {tracking URI}/#/experiments/E/runs/R") open
/// the studio's page for that run, experiment or model version, through sign-in when needed.
#[tokio::test(flavor = "multi_thread")]
async fn the_links_the_mlflow_client_prints_open_the_studio() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    let run = api_run(&s, "wine", "a run", &[("rmse", 0.5)], &[]).await;
    let model_file = s.tmp().join("model.pkl");
    std::fs::write(&model_file, b"weights").unwrap();
    s.ok(&["model", "register", "--name", "wine_model", "--path", model_file.to_str().unwrap(), "-w", "w"]);
    let got = reqwest::Client::new()
        .get(format!(
            "{}/workspaces/w/mlflow/api/2.0/mlflow/experiments/get-by-name?experiment_name=wine",
            s.url
        ))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    let experiment =
        parse(&got.text().await.unwrap())["experiment"]["experiment_id"].as_str().unwrap().to_string();
    // MLflow's experiment "0" (made on first use, as the client's first run would).
    let default = reqwest::Client::new()
        .get(format!("{}/workspaces/w/mlflow/api/2.0/mlflow/experiments/get?experiment_id=0", s.url))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(parse(&default.text().await.unwrap())["experiment"]["experiment_id"], "0");

    // Signed out: the link leads through sign-in to the run.
    let b = Browser::start(&s.url, "mlflow-links").await;
    b.visit(&format!("/workspaces/w/mlflow/#/experiments/{experiment}/runs/{run}"), "run-link-signed-out")
        .await;
    b.wait_path("the sign-in page", |p| p.starts_with("/login")).await;
    b.sign_in(&s.token).await;
    let run_page = format!("/w/w/runs/{run}");
    b.wait_path("the run page after signing in", |p| p == run_page).await;
    b.find("#run-status").await;
    b.no_console_errors("the run link").await;

    for (link, page, name) in [
        (
            format!("/workspaces/w/mlflow/#/experiments/{experiment}"),
            "/w/w/experiments/wine".to_string(),
            "experiment",
        ),
        (
            "/workspaces/w/mlflow/#/models/wine_model/versions/1".to_string(),
            "/w/w/models/wine_model/1".to_string(),
            "version",
        ),
        // What a script that set no experiment prints.
        (
            "/workspaces/w/mlflow/#/experiments/0".to_string(),
            "/w/w/experiments/Default".to_string(),
            "default",
        ),
        (
            "/workspaces/w/mlflow/#/experiments/no-such-id".to_string(),
            "/w/w/experiments".to_string(),
            "unknown",
        ),
        ("/workspaces/w/mlflow".to_string(), "/w/w/experiments".to_string(), "no-fragment"),
    ] {
        b.visit(&link, &format!("{name}-link")).await;
        b.wait_path(&format!("{page} from {link}"), |p| p == page).await;
        b.no_console_errors(&link).await;
    }
}

/// A trace logged through the MLflow API (its info with StartTraceV3, its spans as the
/// `traces.json` the client uploads) is a click away from the nav: the Traces list, then its page
/// with the span tree, in a real browser, without console errors.
#[tokio::test(flavor = "multi_thread")]
async fn a_trace_is_listed_and_its_spans_shown() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    let http = reqwest::Client::new();
    let mlflow = format!("{}/workspaces/w/mlflow", s.url);
    let info = json!({"trace": {"trace_info": {
        "trace_id": "tr-00112233445566778899aabbccddeeff",
        "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": "0"}},
        "request_time": "2026-12-01T10:00:00.000Z", "execution_duration": "0.250s", "state": "OK",
        "request_preview": "{\"x\": 21}", "response_preview": "42",
        "tags": {"mlflow.traceName": "predict"},
    }}});
    let started = http
        .post(format!("{mlflow}/api/3.0/mlflow/traces"))
        .bearer_auth(&s.token)
        .json(&info)
        .send()
        .await
        .unwrap();
    let started = parse(&started.text().await.unwrap());
    let location =
        started["trace"]["trace_info"]["tags"]["mlflow.artifactLocation"].as_str().unwrap().to_string();
    let path = location.strip_prefix("mlflow-artifacts:/").unwrap();
    let spans = json!({"spans": [
        {"span_id": "AAAAAAAAAAE=", "parent_span_id": null, "name": "predict", "start_time_unix_nano": 0,
         "end_time_unix_nano": 250_000_000, "status": {"code": "STATUS_CODE_OK", "message": ""},
         "attributes": {"mlflow.spanType": "\"CHAIN\"", "mlflow.spanInputs": "{\"x\": 21}", "mlflow.spanOutputs": "42"},
         "events": []},
        {"span_id": "AAAAAAAAAAI=", "parent_span_id": "AAAAAAAAAAE=", "name": "features", "start_time_unix_nano": 0,
         "end_time_unix_nano": 10_000_000, "status": {"code": "STATUS_CODE_OK", "message": ""},
         "attributes": {"mlflow.spanType": "\"PARSER\""}, "events": []},
    ]});
    let put = http
        .put(format!("{mlflow}/api/2.0/mlflow-artifacts/artifacts/{path}/traces.json"))
        .bearer_auth(&s.token)
        .body(spans.to_string())
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.text().await.unwrap());

    let b = signed_in(&s, "traces").await;
    b.visit("/w/w", "workspace").await;
    b.find("nav#ws-nav a[data-nav=traces]").await.click().await.unwrap();
    b.wait_path("the traces list", |p| p == "/w/w/traces").await;
    b.shot("traces").await;
    b.no_console_errors("the traces list").await;
    b.find("tr[data-trace=\"tr-00112233445566778899aabbccddeeff\"] a").await.click().await.unwrap();
    b.wait_path("the trace page", |p| p.starts_with("/w/w/traces/tr-")).await;
    let child = b.find("#spans li[data-span=predict] li[data-span=features]").await;
    assert!(child.text().await.unwrap().contains("PARSER"));
    assert!(b.find("#trace-duration").await.text().await.unwrap().contains("250 ms"));
    b.shot("trace").await;
    b.no_console_errors("the trace page").await;
}
