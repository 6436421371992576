//! The studio over HTTP against the real server (no browser): sign-in and sessions, CSRF, the
//! API's acceptance of the session cookie, escaping, 404 pages, the runs table's filter, order
//! and pages, and the run page.

mod common;

use common::Server;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn http() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// A signed-in browser: its session cookie and the CSRF token its pages carry.
struct Browser {
    http: reqwest::Client,
    url: String,
    cookie: String,
    csrf: String,
}

impl Browser {
    async fn get(&self, path: &str) -> (StatusCode, String) {
        let r =
            self.http.get(format!("{}{path}", self.url)).header("cookie", &self.cookie).send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    }
}

/// The response's `Set-Cookie` for the session cookie (empty when it sets none).
fn set_cookie(r: &reqwest::Response) -> String {
    set_cookie_named(r, "cairn_session")
}

fn set_cookie_named(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_default()
        .to_string()
}

async fn sign_in(s: &Server, token: &str) -> Browser {
    let http = http();
    let r = common::studio_login(&http, &s.url, token, "/").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "sign-in failed");
    let cookie = set_cookie(&r).split(';').next().unwrap().to_string();
    let r = http.get(format!("{}/", s.url)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.text().await.unwrap();
    let csrf = meta_csrf(&body);
    Browser { http, url: s.url.clone(), cookie, csrf }
}

fn meta_csrf(body: &str) -> String {
    let at = body.find(r#"name="csrf-token" content=""#).expect("pages carry the CSRF token");
    let rest = &body[at + r#"name="csrf-token" content=""#.len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

fn api(s: &Server, path: &str) -> String {
    format!("{}/api/v1/{path}", s.url)
}

async fn post_json(s: &Server, path: &str, body: Value) -> Value {
    let r = http().post(api(s, path)).bearer_auth(&s.token).json(&body).send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// A run of `experiment` with a name, a tag, params and `rmse` logged at steps 0 and 1.
async fn logged_run(s: &Server, experiment: &str, name: &str, rmse: f64, depth: &str) -> String {
    let run = post_json(
        s,
        "workspaces/w/runs",
        json!({"experiment": experiment, "display_name": name, "tags": {"model": "<b>tree</b>"}}),
    )
    .await;
    let id = run["id"].as_str().unwrap().to_string();
    post_json(
        s,
        &format!("workspaces/w/runs/{id}/log-batch"),
        json!({
            "metrics": [{"key": "rmse", "value": rmse + 1.0, "step": 0}, {"key": "rmse", "value": rmse, "step": 1},
                        {"key": "max depth", "value": 3.0, "step": 0}],
            "params": [{"key": "max_depth", "value": depth}],
        }),
    )
    .await;
    id
}

#[tokio::test]
async fn sign_in_sets_a_strict_http_only_cookie_and_pages_need_it() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    let http = http();

    // Without a session, a page sends the browser to sign in, then back to the page asked for.
    let r = http.get(format!("{}/w/w/experiments?x=1", s.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/login?next=%2Fw%2Fw%2Fexperiments%3Fx%3D1");
    let form = http.get(format!("{}/login?next=%2Fw%2Fw%2Fexperiments", s.url)).send().await.unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    let form = form.text().await.unwrap();
    assert!(form.contains(r#"id="login-form""#) && form.contains(r#"<label for="token">"#), "{form}");
    assert!(form.contains(r#"name="next" value="/w/w/experiments""#), "{form}");

    // A wrong token: the form again, with the error, 401, and no cookie.
    let r = common::studio_login(&http, &s.url, "cairn_wrong", "/w/w/experiments").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&r).is_empty());
    let body = r.text().await.unwrap();
    assert!(body.contains(r#"id="login-error""#) && body.contains(r#"id="login-form""#), "{body}");

    // The right token: a signed cookie that is HttpOnly, SameSite=Strict, 12 h — never the token.
    let r = common::studio_login(&http, &s.url, &s.token, "/w/w/experiments").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/w/w/experiments");
    let cookie = set_cookie(&r);
    for part in ["cairn_session=", "HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(cookie.contains(part), "{part} missing from {cookie}");
    }
    assert!(!cookie.contains(&s.token) && !cookie.contains("Secure"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_string();

    // Only local paths are followed after sign-in.
    for (next, expect) in
        [("//evil.example/x", "/"), ("https://evil.example/", "/"), ("/w/w/runs?page=2", "/w/w/runs?page=2")]
    {
        let r = common::studio_login(&http, &s.url, &s.token, next).await;
        assert_eq!(r.headers()["location"], expect, "{next}");
    }
    // Behind an https proxy the cookies are Secure.
    let (login_cookie, csrf) = common::studio_login_form(&http, &s.url).await;
    let r = http
        .post(format!("{}/login", s.url))
        .header("x-forwarded-proto", "https")
        .header("cookie", &login_cookie)
        .form(&[("token", s.token.as_str()), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert!(set_cookie(&r).contains("; Secure"));
    let r = http.get(format!("{}/login", s.url)).header("x-forwarded-proto", "https").send().await.unwrap();
    assert!(set_cookie_named(&r, "cairn_login").contains("; Secure"));

    // With the cookie, the page renders with the workspace navigation.
    let r = http.get(format!("{}/w/w/experiments", s.url)).header("cookie", &pair).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
    let body = r.text().await.unwrap();
    for nav in ["experiments", "runs", "models", "endpoints", "data", "environments", "compute"] {
        assert!(body.contains(&format!(r#"data-nav="{nav}""#)), "nav {nav} missing");
    }
    assert!(!body.contains(&s.token), "pages never show the token");

    // A tampered or foreign cookie is no session.
    let mut tampered = pair.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    let r = http.get(format!("{}/", s.url)).header("cookie", &tampered).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);

    // Signing out needs the CSRF token, and clears the cookie.
    let csrf = meta_csrf(&body);
    let r = http
        .post(format!("{}/logout", s.url))
        .header("cookie", &pair)
        .form(&[("csrf", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = http
        .post(format!("{}/logout", s.url))
        .header("cookie", &pair)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(set_cookie(&r).contains("Max-Age=0"));
    assert!(!s.log().contains(&s.token), "the token is never logged");
}

#[tokio::test]
async fn sign_in_needs_the_forms_csrf_cookie_and_field_back() {
    let s = Server::start();
    let http = http();

    // The form sets a short-lived, HttpOnly, SameSite=Strict cookie for /login only, and carries
    // the matching field.
    let r = http.get(format!("{}/login", s.url)).send().await.unwrap();
    let set = set_cookie_named(&r, "cairn_login");
    for part in ["HttpOnly", "SameSite=Strict", "Path=/login", "Max-Age=3600"] {
        assert!(set.contains(part), "{part} missing from {set}");
    }
    assert!(set_cookie(&r).is_empty(), "showing the form starts no session");
    let (cookie, csrf) = common::studio_login_form(&http, &s.url).await;
    let (other_cookie, other_csrf) = common::studio_login_form(&http, &s.url).await;
    assert_ne!(csrf, other_csrf, "each form gets its own nonce");
    // Showing the form again with a valid cookie keeps it (two tabs do not break each other).
    let again = http.get(format!("{}/login", s.url)).header("cookie", &cookie).send().await.unwrap();
    assert!(set_cookie_named(&again, "cairn_login").is_empty());
    assert!(again.text().await.unwrap().contains(&format!(r#"name="csrf" value="{csrf}""#)));

    let mut tampered = cookie.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    let wrong_form = format!("cairn_login={}", "x".repeat(10));
    let field_as_cookie = format!("cairn_login={csrf}");
    for (what, cookie, field) in [
        ("neither", None, None),
        ("the cookie alone", Some(cookie.as_str()), None),
        ("the field alone", None, Some(csrf.as_str())),
        ("another form's field", Some(cookie.as_str()), Some(other_csrf.as_str())),
        ("another form's cookie", Some(other_cookie.as_str()), Some(csrf.as_str())),
        ("a tampered cookie", Some(tampered.as_str()), Some(csrf.as_str())),
        ("a malformed cookie", Some(wrong_form.as_str()), Some(csrf.as_str())),
        ("the field as cookie", Some(field_as_cookie.as_str()), Some(csrf.as_str())),
    ] {
        let mut form = vec![("token", s.token.as_str()), ("next", "/")];
        if let Some(f) = field {
            form.push(("csrf", f));
        }
        let mut req = http.post(format!("{}/login", s.url)).form(&form);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{what}");
        assert!(set_cookie(&r).is_empty(), "{what}: a session cookie was set");
        // A new form comes back, so the user can simply sign in again.
        assert!(!set_cookie_named(&r, "cairn_login").is_empty(), "{what}: no new form cookie");
        let body = r.text().await.unwrap();
        assert!(
            body.contains(r#"id="login-error""#) && body.contains("expired or was not sent from this site")
        );
        assert!(body.contains(r#"name="csrf" value=""#), "{what}: {body}");
    }

    // With both, the token decides; success clears the form's cookie.
    let r = http
        .post(format!("{}/login", s.url))
        .header("cookie", &cookie)
        .form(&[("token", "cairn_wrong"), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&r).is_empty());
    let r = http
        .post(format!("{}/login", s.url))
        .header("cookie", &cookie)
        .form(&[("token", s.token.as_str()), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(set_cookie(&r).starts_with("cairn_session="));
    assert!(set_cookie_named(&r, "cairn_login").contains("Max-Age=0"));
    assert!(!s.log().contains(&s.token), "the token is never logged");
}

#[tokio::test]
async fn a_revoked_tokens_session_is_refused_and_the_api_takes_the_cookie_with_csrf() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    let created = post_json(&s, "tokens", json!({"name": "viewer", "role": "writer"})).await;
    let viewer = created["token"].as_str().unwrap().to_string();
    let b = sign_in(&s, &viewer).await;

    // Reads through the API with the cookie alone.
    let r = b.http.get(api(&s, "workspaces/w")).header("cookie", &b.cookie).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Writes need the CSRF header too.
    let url = api(&s, "workspaces/w/experiments");
    let r = b.http.post(&url).header("cookie", &b.cookie).json(&json!({"name": "e1"})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = b
        .http
        .post(&url)
        .header("cookie", &b.cookie)
        .header("x-csrf-token", "0".repeat(64))
        .json(&json!({"name": "e1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = b
        .http
        .post(&url)
        .header("cookie", &b.cookie)
        .header("x-csrf-token", &b.csrf)
        .json(&json!({"name": "e1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());

    // Revoking the token ends its sessions at once, for pages and for the API.
    let r = http().delete(api(&s, "tokens/viewer")).bearer_auth(&s.token).send().await.unwrap();
    assert!(r.status().is_success());
    let r = b.http.get(format!("{}/w/w/runs", s.url)).header("cookie", &b.cookie).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/login?next=%2Fw%2Fw%2Fruns");
    let r = b.http.get(api(&s, "workspaces/w")).header("cookie", &b.cookie).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn runs_table_filters_sorts_pages_and_escapes_user_text() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    let evil = logged_run(&s, "wine_expt", "<script>alert(1)</script>", 0.9, "3").await;
    let good = logged_run(&s, "wine_expt", "good", 0.5, "5").await;
    let mid = logged_run(&s, "wine_expt", "mid", 0.7, "4").await;
    let b = sign_in(&s, &s.token).await;

    let (st, body) = b.get("/w/w/experiments").await;
    assert_eq!(st, StatusCode::OK);
    assert!(body.contains(r#"href="/w/w/experiments/wine_expt""#), "{body}");
    assert!(body.contains(r#"<td class="num">3</td>"#), "run count: {body}");

    let (st, body) = b.get("/w/w/experiments/wine_expt").await;
    assert_eq!(st, StatusCode::OK);
    assert!(body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "the name shows as text");
    assert!(!body.contains("<script>alert(1)"), "never as markup");
    assert!(body.contains("&lt;b&gt;tree&lt;/b&gt;") && !body.contains("<b>tree</b>"));
    for col in ["metrics.rmse", "metrics.max depth", "params.max_depth", "attributes.created"] {
        assert!(body.contains(&format!(r#"data-col="{col}""#)), "column {col} missing");
    }
    for id in [&evil, &good, &mid] {
        assert!(body.contains(&format!(r#"<tr data-run-id="{id}""#)), "row {id} missing");
        assert!(
            body.contains(&format!(r#"class="run-select" type="checkbox" value="{id}""#)),
            "checkbox {id}"
        );
    }
    assert!(body.contains(r#"id="compare-button""#));

    // Sorted by the latest rmse, ascending: 0.5, 0.7, 0.9.
    let (st, body) = b.get("/w/w/experiments/wine_expt?order=metrics.rmse%20ASC").await;
    assert_eq!(st, StatusCode::OK);
    let order: Vec<usize> = [&good, &mid, &evil]
        .iter()
        .map(|id| body.find(&format!(r#"<tr data-run-id="{id}""#)).unwrap())
        .collect();
    assert!(order[0] < order[1] && order[1] < order[2], "{order:?}");
    assert!(body.contains(r#"aria-sort="ascending""#));
    // A key with a space sorts too (it is quoted in the link).
    assert!(body.contains("order=metrics.%60max+depth%60+DESC"), "quoted key in the sort link");

    // A filter in the API's grammar.
    let (st, body) = b.get("/w/w/experiments/wine_expt?filter=metrics.rmse%20%3C%200.8").await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        body.contains(&format!(r#"data-run-id="{good}""#))
            && body.contains(&format!(r#"data-run-id="{mid}""#))
    );
    assert!(!body.contains(&format!(r#"data-run-id="{evil}""#)));
    assert!(!body.contains("filter-error"));

    // A filter that does not parse: the message inline, the table unfiltered.
    let (st, body) = b.get("/w/w/experiments/wine_expt?filter=metrics.rmse%20%3E%3E%201").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(body.contains(r#"id="filter-error""#) && body.contains("position 14"), "{body}");
    for id in [&evil, &good, &mid] {
        assert!(body.contains(&format!(r#"data-run-id="{id}""#)), "the table is left unchanged");
    }
    assert!(body.contains(r#"value="metrics.rmse &gt;&gt; 1""#), "the filter is kept to fix it");

    // Chosen columns hide the others; all runs of the workspace list their experiment.
    let (_, body) = b.get("/w/w/runs?cols=metrics.rmse").await;
    assert!(body.contains(r#"data-col="params.max_depth" hidden"#), "unchosen columns are hidden");
    assert!(body.contains(r#"href="/w/w/experiments/wine_expt""#));

    // Server-side pages of 50.
    for i in 0..50 {
        post_json(&s, "workspaces/w/runs", json!({"experiment": "many", "display_name": format!("r{i}")}))
            .await;
    }
    let (_, first) = b.get("/w/w/experiments/many").await;
    assert_eq!(first.matches("<tr data-run-id=").count(), 50);
    assert!(!first.contains(r#"id="next-page""#), "50 runs fill exactly one page");
    post_json(&s, "workspaces/w/runs", json!({"experiment": "many", "display_name": "r50"})).await;
    let (_, first) = b.get("/w/w/experiments/many").await;
    assert_eq!(first.matches("<tr data-run-id=").count(), 50);
    assert!(first.contains(r#"id="next-page""#) && !first.contains(r#"id="prev-page""#));
    let (_, second) = b.get("/w/w/experiments/many?page=2").await;
    assert_eq!(second.matches("<tr data-run-id=").count(), 1);
    assert!(second.contains(r#"id="prev-page""#) && !second.contains(r#"id="next-page""#));

    // Live status for rows of runs that have not ended.
    let (st, body) = b.get(&format!("/w/w/run-status?ids={good},nope")).await;
    assert_eq!(st, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v[&good]["status"], "Running");
    assert!(v.get("nope").is_none());
}

#[tokio::test]
async fn run_page_shows_the_run_and_unknown_things_get_the_404_page() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    let id = logged_run(&s, "wine_expt", "<script>x</script>", 0.5, "5").await;
    let child = post_json(
        &s,
        "workspaces/w/runs",
        json!({"experiment": "wine_expt", "display_name": "child-1", "parent_run_id": id}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = http()
        .put(api(&s, &format!("workspaces/w/runs/{id}/artifacts/plots/notes%20a.txt")))
        .bearer_auth(&s.token)
        .body("hello artifact")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let b = sign_in(&s, &s.token).await;

    let (st, body) = b.get(&format!("/w/w/runs/{id}")).await;
    assert_eq!(st, StatusCode::OK);
    assert!(body.contains("&lt;script&gt;x&lt;/script&gt;") && !body.contains("<script>x"));
    assert!(body.contains(r#"id="run-status""#) && body.contains(r#"id="run-overview""#));
    assert!(body.contains(r#"id="params-table""#) && body.contains(r#"data-param="max_depth""#));
    assert!(body.contains(&format!(r#"data-metric="rmse" data-run="{id}""#)), "one chart per metric");
    assert!(body.contains(r#"data-metric="max depth""#));
    assert!(body.contains("/static/charts.js?v="));
    assert!(body.contains(&format!(r#"href="/w/w/runs/{child}""#)), "children are listed");
    let link = format!(r#"href="/w/w/runs/{id}/artifacts/plots/notes%20a.txt""#);
    assert!(body.contains(&link) && body.contains(r#"class="artifact""#), "{body}");

    let (st, text) = b.get(&format!("/w/w/runs/{id}/artifacts/plots/notes%20a.txt")).await;
    assert_eq!((st, text.as_str()), (StatusCode::OK, "hello artifact"));
    let (st, _) = b.get(&format!("/w/w/runs/{id}/artifacts/..%2F..%2Fsecret-key")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "path traversal is refused");

    let (st, body) = b.get(&format!("/w/w/runs/{child}")).await;
    assert_eq!(st, StatusCode::OK);
    assert!(body.contains(&format!(r#"id="parent-run" href="/w/w/runs/{id}""#)));

    for path in [
        "/w/w/runs/no-such-run",
        "/w/nope/experiments",
        "/w/w/experiments/nope",
        "/w/w/bogus",
        "/nothing-here",
    ] {
        let (st, body) = b.get(path).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{path}");
        assert!(body.contains("<h1>Not found</h1>"), "{path}: {body}");
    }
    // API paths keep their JSON 404.
    let r = http().get(api(&s, "nothing")).bearer_auth(&s.token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "not_found");
    // Static files are served with a cache lifetime.
    let r = http().get(format!("{}/static/studio.css", s.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/css"));
    assert!(r.headers()["cache-control"].to_str().unwrap().contains("max-age"));
}

/// Runs a Python script with the stock MLflow client pointed at workspace `w` of `s`; returns
/// what it printed after `result=` (MLflow prints lines of its own).
fn run_mlflow_script(s: &Server, script: &str) -> String {
    let mut cmd = std::process::Command::new(common::repo_root().join(".venv/bin/python"));
    common::clear_cairn_env(&mut cmd);
    let out = cmd
        .args(["-c", script])
        .env("MLFLOW_TRACKING_URI", format!("{}/workspaces/w/mlflow", s.url))
        .env("MLFLOW_TRACKING_TOKEN", &s.token)
        .env("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        .env("HOME", &s.home)
        .current_dir(s.tmp())
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.log()
    );
    let line = stdout.lines().find_map(|l| l.strip_prefix("result="));
    line.unwrap_or_else(|| panic!("no result= line in {stdout}")).trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn run_page_shows_tables_logged_with_mlflow() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    let id = run_mlflow_script(
        &s,
        r#"
import mlflow
mlflow.set_experiment("tables")
with mlflow.start_run(run_name="with-tables") as run:
    mlflow.log_table({"feature": ["alcohol", "<b>pH</b>"], "importance": [0.7, None]},
                     artifact_file="eval/importance.json")
    mlflow.log_table({"i": list(range(150)), "square": [i * i for i in range(150)]},
                     artifact_file="big table.json")
    mlflow.log_dict({"columns": ["x"], "data": [[1]]}, "not-logged-as-a-table.json")
    print("result=" + run.info.run_id)
"#,
    );
    let b = sign_in(&s, &s.token).await;
    let (st, body) = b.get(&format!("/w/w/runs/{id}")).await;
    assert_eq!(st, StatusCode::OK);
    let tables = &body[body.find(r#"<section id="tables">"#).expect("a tables section")..];
    let tables = &tables[..tables.find("</section>").unwrap()];

    // The small table: whole, its user text escaped, nulls shown as such, with a download link.
    let small_at = tables.find(r#"data-table="eval/importance.json""#).expect("the small table");
    let big_at = tables.find(r#"data-table="big table.json""#).expect("the big table");
    assert!(small_at < big_at, "tables in the order logged");
    let small = &tables[small_at..big_at];
    assert!(small.contains("2 rows."), "{small}");
    assert!(small.contains(r#"<th scope="col">feature</th><th scope="col">importance</th>"#), "{small}");
    assert!(small.contains("<td>&lt;b&gt;pH&lt;/b&gt;</td>") && !small.contains("<b>pH"), "{small}");
    assert!(
        small.contains("<td>0.7</td>") && small.contains(r#"<span class="muted">null</span>"#),
        "{small}"
    );
    let link = format!(r#"href="/w/w/runs/{id}/artifacts/eval/importance.json""#);
    assert!(small.contains(&link), "{small}");

    // The long one: its first 100 rows, and a note saying so.
    let big = &tables[big_at..];
    assert!(big.contains("First 100 of 150 rows."), "{big}");
    assert_eq!(big.matches("<tr>").count(), 1 + 100, "header + 100 rows");
    assert!(big.contains("<td>99</td><td>9801</td>") && !big.contains("<td>100</td><td>10000</td>"), "{big}");
    assert!(big.contains(&format!(r#"href="/w/w/runs/{id}/artifacts/big%20table.json""#)));
    assert!(!tables.contains("not-logged-as-a-table"), "only files logged as tables");

    // The download is the whole table.
    let (st, text) = b.get(&format!("/w/w/runs/{id}/artifacts/big%20table.json")).await;
    assert_eq!(st, StatusCode::OK);
    let whole: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(whole["data"].as_array().unwrap().len(), 150);

    // A run without tables has no section.
    let plain = logged_run(&s, "tables", "plain", 0.5, "1").await;
    let (_, body) = b.get(&format!("/w/w/runs/{plain}")).await;
    assert!(!body.contains(r#"id="tables""#));
}

#[tokio::test(flavor = "multi_thread")]
async fn run_page_shows_tables_logged_with_the_runtimes_log_row_and_log_table() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    let run = post_json(&s, "workspaces/w/runs", json!({"experiment": "tables", "display_name": "t"})).await;
    let id = run["id"].as_str().unwrap().to_string();
    // What `run.log_row("epoch", loss=…, acc=…)` three times sends (the last row without acc),
    // plus a key that only shares the prefix's letters and a NaN.
    let m = |key: &str, value: Value, step: i64| json!({"key": key, "value": value, "step": step});
    post_json(
        &s,
        &format!("workspaces/w/runs/{id}/log-batch"),
        json!({
            "metrics": [m("epoch.loss", json!(0.5), 0), m("epoch.acc", json!(0.7), 0),
                        m("epoch.loss", json!(0.25), 1), m("epoch.acc", json!("NaN"), 1),
                        m("epoch.loss", json!(0.125), 2), m("epochs.other", json!(9.0), 0)],
            "tags": [{"key": "cairn.tables", "value": "[\"epoch\"]"}],
        }),
    )
    .await;
    let b = sign_in(&s, &s.token).await;
    let (st, body) = b.get(&format!("/w/w/runs/{id}")).await;
    assert_eq!(st, StatusCode::OK);
    let tables = &body[body.find(r#"<section id="tables">"#).expect("a tables section")..];
    let tables = &tables[..tables.find("</section>").unwrap()];
    assert!(tables.contains(r#"data-table="epoch""#), "{tables}");
    assert!(tables.contains("3 rows."), "{tables}");
    assert!(tables.contains(r#"<th scope="col">acc</th><th scope="col">loss</th>"#), "{tables}");
    assert!(!tables.contains("other"), "epochs.other is not a column of epoch: {tables}");
    let rows: Vec<&str> = tables.split("<tr>").skip(2).collect();
    assert_eq!(rows.len(), 3, "{tables}");
    assert!(rows[0].contains("<td>0.7</td><td>0.5</td>"), "{}", rows[0]);
    assert!(rows[1].contains("<td>NaN</td><td>0.25</td>"), "{}", rows[1]);
    assert!(rows[2].contains(r#"<span class="muted">null</span></td><td>0.125</td>"#), "{}", rows[2]);
    assert!(
        tables.contains("Logged with") && !tables.contains("table-download"),
        "no file to download: {tables}"
    );
}

/// Traces logged with the stock client show on their run's page, in the workspace's and the
/// experiment's trace lists, and on their own page with the span tree read from their spans file.
#[tokio::test(flavor = "multi_thread")]
async fn traces_logged_with_mlflow_show_on_run_list_and_trace_pages() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    let out = run_mlflow_script(
        &s,
        r#"
import mlflow
mlflow.set_experiment("agents")

@mlflow.trace(name="predict<b>")
def predict(x):
    with mlflow.start_span(name="features", span_type="PARSER") as span:
        span.set_inputs({"x": x})
        span.set_outputs({"n": 11})
    return x * 2

@mlflow.trace(name="fails")
def fails():
    raise ValueError("bad wine")

with mlflow.start_run(run_name="traced") as run:
    predict(21)
    ok = mlflow.get_last_active_trace_id()
try:
    fails()
except ValueError:
    pass
err = mlflow.get_last_active_trace_id()
mlflow.flush_trace_async_logging()

# A trace logged the older way: its info, then its spans uploaded as traces.json.
import base64, json, os, urllib.request
def call(method, path, doc):
    req = urllib.request.Request(os.environ["MLFLOW_TRACKING_URI"] + path, method=method,
        data=json.dumps(doc).encode(), headers={"Authorization": "Bearer " + os.environ["MLFLOW_TRACKING_TOKEN"]})
    return json.loads(urllib.request.urlopen(req).read() or b"null")
exp = mlflow.get_experiment_by_name("agents").experiment_id
legacy = "tr-" + "cd" * 16
call("POST", "/api/3.0/mlflow/traces", {"trace": {"trace_info": {"trace_id": legacy,
    "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": exp}},
    "request_time": "2026-12-01T10:00:00.000Z", "state": "OK", "tags": {"mlflow.traceName": "legacy"}}}})
span = {"trace_id": base64.b64encode(b"\xcd" * 16).decode(), "span_id": base64.b64encode(b"\x01" * 8).decode(),
    "parent_span_id": None, "name": "uploaded-span", "start_time_unix_nano": 1, "end_time_unix_nano": 2,
    "status": {"code": "STATUS_CODE_OK", "message": ""}, "attributes": {"mlflow.spanType": '"TOOL"'}, "events": []}
call("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{exp}/traces/{legacy}/artifacts/traces.json", {"spans": [span]})

# A trace as an mlflow 2 client logs it: StartTrace, its spans in MLflow 2's schema, EndTrace.
v2 = call("POST", "/api/2.0/mlflow/traces", {"experiment_id": exp, "timestamp_ms": 1764583200000,
    "tags": [{"key": "mlflow.traceName", "value": "v2-trace"}]})["trace_info"]["request_id"]
def v2_span(name, span, parent, kind, status):
    return {"name": name, "context": {"span_id": "0x" + span * 8, "trace_id": "0x" + "22" * 16},
        "parent_id": parent and "0x" + parent * 8, "start_time": 1_000 + len(name), "end_time": 9_000,
        "status_code": status, "status_message": "", "events": [],
        "attributes": {"mlflow.spanType": json.dumps(kind), "mlflow.traceRequestId": json.dumps(v2)}}
call("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{exp}/traces/{v2}/artifacts/traces.json",
    {"spans": [v2_span("v2-root", "11", None, "CHAIN", "OK"), v2_span("v2-child", "33", "11", "RETRIEVER", "ERROR")]})
call("PATCH", f"/api/2.0/mlflow/traces/{v2}", {"timestamp_ms": 1764583200005, "status": "OK"})
print("result=" + " ".join([run.info.run_id, ok, err, legacy, v2]))
"#,
    );
    let [run, ok, err, legacy, v2]: [&str; 5] = out.split(' ').collect::<Vec<_>>().try_into().unwrap();
    let b = sign_in(&s, &s.token).await;

    // The run page lists the run's one trace, linked to its page.
    let (st, body) = b.get(&format!("/w/w/runs/{run}")).await;
    assert_eq!(st, StatusCode::OK);
    let section = &body[body.find(r#"<section id="traces">"#).expect("a traces section")..];
    let section = &section[..section.find("</section>").unwrap()];
    assert!(section.contains(&format!(r#"href="/w/w/traces/{ok}""#)), "{section}");
    assert!(!section.contains(err), "the failed trace was logged outside the run: {section}");
    assert!(section.contains("predict&lt;b&gt;") && !section.contains("predict<b>"), "{section}");

    // The workspace's list has both, newest first; the experiment's too; the run's only its own.
    let (st, body) = b.get("/w/w/traces").await;
    assert_eq!(st, StatusCode::OK);
    let (at_err, at_ok) =
        (body.find(&format!(r#"data-trace="{err}""#)), body.find(&format!(r#"data-trace="{ok}""#)));
    assert!(at_err.unwrap() < at_ok.unwrap(), "{body}");
    assert!(body.contains(r#"data-status="ERROR""#) && body.contains(&format!(r#"href="/w/w/runs/{run}""#)));
    let (_, body) = b.get("/w/w/traces?experiment=agents").await;
    assert!(body.contains(ok) && body.contains(err), "{body}");
    let (_, body) = b.get(&format!("/w/w/traces?run={run}")).await;
    assert!(body.contains(ok) && !body.contains(err), "{body}");
    let (st, _) = b.get("/w/w/traces?experiment=nope").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, body) = b.get("/w/w/experiments/agents").await;
    assert!(body.contains(r#"href="/w/w/traces?experiment=agents""#), "the experiment links its traces");

    // The trace page: the span tree, inputs and outputs, tags and metadata.
    let (st, body) = b.get(&format!("/w/w/traces/{ok}")).await;
    assert_eq!(st, StatusCode::OK);
    let spans = &body[body.find(r#"<ul id="spans">"#).expect("a span tree")..];
    let (root, child) =
        (spans.find(r#"data-span="predict&lt;b&gt;""#), spans.find(r#"data-span="features""#));
    assert!(root.unwrap() < child.unwrap(), "{spans}");
    assert!(spans.contains("PARSER") && spans.contains("{&quot;x&quot;: 21}"), "{spans}");
    assert!(body.contains("mlflow.sourceRun") && body.contains("mlflow.artifactLocation"), "{body}");
    // Its spans came over OTLP and are read from the store.
    assert!(body.contains("mlflow.trace.spansLocation") && body.contains("TRACKING_STORE"), "{body}");
    let (_, body) = b.get(&format!("/w/w/traces/{err}")).await;
    assert!(body.contains("exception: bad wine"), "{body}");
    // A trace whose spans were uploaded as traces.json shows them the same way.
    let (st, body) = b.get(&format!("/w/w/traces/{legacy}")).await;
    assert_eq!(st, StatusCode::OK);
    assert!(body.contains(r#"data-span="uploaded-span""#) && body.contains("TOOL"), "{body}");
    // And one an mlflow 2 client logged (MLflow 2's span schema): its tree the same way.
    let (st, body) = b.get(&format!("/w/w/traces/{v2}")).await;
    assert_eq!(st, StatusCode::OK);
    let spans = &body[body.find(r#"<ul id="spans">"#).expect("a span tree")..];
    let (root, child) = (spans.find(r#"data-span="v2-root""#), spans.find(r#"data-span="v2-child""#));
    assert!(root.unwrap() < child.unwrap() && spans.contains("RETRIEVER"), "{spans}");
    let (st, _) = b.get("/w/w/traces/tr-nope").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}
