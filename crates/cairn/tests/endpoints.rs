//! Online endpoints through the real CLI, API and scoring front door of a real server: YAML,
//! names, traffic rules, keys and tokens, the 401/413/503 answers of `/endpoints/{name}/score`,
//! the log, and `/metrics`. Store-backed scenarios run on SQLite and on PostgreSQL.

#[macro_use]
mod common;

use cairn_core::api::{CreateToken, Role};
use common::*;
use serde_json::Value;

on_both_backends!(
    endpoints_are_created_listed_shown_updated_and_deleted,
    endpoint_names_are_unique_across_workspaces,
    keys_are_for_writers_and_each_key_regenerates_alone,
    token_mode_endpoints_take_fresh_tokens_only,
);

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Writes an endpoint YAML file into the server's temp dir and returns its path.
fn yaml(s: &Server, file: &str, text: &str) -> String {
    let p = s.tmp().join(file);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn create(s: &Server, ws: &str, name: &str, auth_mode: &str) -> Value {
    let f = yaml(s, &format!("{name}.yml"), &format!("name: {name}\nauth_mode: {auth_mode}\n"));
    json(&s.ok(&["endpoint", "create", "-f", &f, "-w", ws, "-o", "json"]))
}

fn keys(s: &Server, ws: &str, name: &str) -> (String, String) {
    let k = json(&s.ok(&["endpoint", "get-keys", name, "-w", ws, "-o", "json"]));
    (k["primary_key"].as_str().unwrap().to_string(), k["secondary_key"].as_str().unwrap().to_string())
}

struct Scored {
    status: u16,
    retry_after: Option<String>,
    www_authenticate: Option<String>,
    body: String,
}

/// POSTs `body` to `/endpoints/{name}/score` with an optional bearer credential and extra headers.
async fn score(
    s: &Server,
    name: &str,
    credential: Option<&str>,
    body: &[u8],
    headers: &[(&str, &str)],
) -> Scored {
    let mut rb = reqwest::Client::new()
        .post(format!("{}/endpoints/{name}/score", s.url))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(c) = credential {
        rb = rb.bearer_auth(c);
    }
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.unwrap();
    let header = |h: &str| r.headers().get(h).map(|v| v.to_str().unwrap().to_string());
    let (status, retry_after, www_authenticate) =
        (r.status().as_u16(), header("retry-after"), header("www-authenticate"));
    Scored { status, retry_after, www_authenticate, body: r.text().await.unwrap() }
}

const DATA: &[u8] = br#"{"data": [[7.3,0.65,0,1.2,0.065,15,21,0.9946,3.39,0.47,10]]}"#;

async fn endpoints_are_created_listed_shown_updated_and_deleted(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    s.ok(&["workspace", "create", "w"]);
    let f = yaml(
        &s,
        "endpoint.yml",
        "$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineEndpoint.schema.json\n\
         name: wine-ep\nauth_mode: key\ndescription: wine quality\ntags:\n  team: wine\n  stage: dev\n",
    );
    let e = json(&s.ok(&["endpoint", "create", "-f", &f, "-w", "w", "-o", "json"]));
    assert_eq!(e["name"], "wine-ep");
    assert_eq!(e["workspace"], "w");
    assert_eq!(e["auth_mode"], "key");
    assert_eq!(e["provisioning_state"], "Succeeded", "an endpoint without deployments is ready at once");
    assert_eq!(e["description"], "wine quality");
    assert_eq!(e["tags"]["team"], "wine");
    assert_eq!(e["scoring_uri"], format!("{}/endpoints/wine-ep/score", s.url));
    assert_eq!(e["swagger_uri"], format!("{}/endpoints/wine-ep/swagger.json", s.url));
    assert_eq!(e["traffic"], serde_json::json!({}));
    assert!(e.get("primary_key").is_none() && !e.to_string().contains("_key\""), "no keys in the view: {e}");
    let created = e["created_at"].as_i64().unwrap();
    assert_eq!(e["updated_at"].as_i64().unwrap(), created);

    create(&s, "w", "second-ep", "key");
    let list = json(&s.ok(&["endpoint", "list", "-w", "w", "-o", "json"]));
    let names: Vec<_> = list.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["second-ep", "wine-ep"]);
    let table = s.ok(&["endpoint", "show", "wine-ep", "-w", "w"]);
    assert!(table.contains("Succeeded") && table.contains("/endpoints/wine-ep/score"), "{table}");

    // update from a file changes only the keys the file has
    let f = yaml(&s, "update.yml", "name: wine-ep\ndescription: wine quality, v2\n");
    let u = json(&s.ok(&["endpoint", "update", "-f", &f, "-w", "w", "-o", "json"]));
    assert_eq!(u["description"], "wine quality, v2");
    assert_eq!(u["tags"]["team"], "wine", "tags were not in the file and stay");
    assert!(u["updated_at"].as_i64().unwrap() >= created);
    let u = json(&s.ok(&["endpoint", "update", "wine-ep", "--description", "flag", "-w", "w", "-o", "json"]));
    assert_eq!(u["description"], "flag");
    let f = yaml(&s, "tags.yml", "name: wine-ep\ntags: {owner: ana}\n");
    let u = json(&s.ok(&["endpoint", "update", "-f", &f, "-w", "w", "-o", "json"]));
    assert_eq!(u["tags"], serde_json::json!({"owner": "ana"}));

    let (primary, _) = keys(&s, "w", "wine-ep");
    assert_eq!(score(&s, "wine-ep", Some(&primary), DATA, &[]).await.status, 503);
    s.ok(&["endpoint", "delete", "wine-ep", "-w", "w"]);
    let err = s.fails(&["endpoint", "show", "wine-ep", "-w", "w"]);
    assert!(
        err.contains("endpoint \"wine-ep\" in workspace \"w\" not found") && err.contains("404"),
        "{err}"
    );
    assert_eq!(
        score(&s, "wine-ep", Some(&primary), DATA, &[]).await.status,
        401,
        "the keys of a deleted endpoint are gone with it"
    );
    // the name is free again, with new keys
    create(&s, "w", "wine-ep", "key");
    assert_ne!(keys(&s, "w", "wine-ep").0, primary);
}

async fn endpoint_names_are_unique_across_workspaces(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    s.ok(&["workspace", "create", "a"]);
    s.ok(&["workspace", "create", "b"]);
    create(&s, "a", "shared-name", "key");
    let f = yaml(&s, "dup.yml", "name: shared-name\n");
    let err = s.fails(&["endpoint", "create", "-f", &f, "-w", "b"]);
    assert!(err.contains("already taken on this server") && err.contains("409"), "{err}");
    assert!(!err.contains("\"a\""), "the other workspace is not named: {err}");
    let err = s.fails(&["endpoint", "show", "shared-name", "-w", "b"]);
    assert!(err.contains("404"), "another workspace's endpoint is not visible: {err}");
    assert_eq!(json(&s.ok(&["endpoint", "list", "-w", "b", "-o", "json"])), serde_json::json!([]));
    // a workspace with an endpoint is deleted only with --force, and takes its endpoints along
    let err = s.fails(&["workspace", "delete", "a"]);
    assert!(err.contains("endpoints shared-name") && err.contains("409"), "{err}");
    s.ok(&["workspace", "delete", "a", "--force"]);
    create(&s, "b", "shared-name", "key");
}

async fn keys_are_for_writers_and_each_key_regenerates_alone(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    s.ok(&["workspace", "create", "w"]);
    create(&s, "w", "wine-ep", "key");
    let admin = s.client();
    let token = |name: &str, role: Role| {
        let admin = admin.clone();
        let name = name.to_string();
        async move {
            admin.create_token(&CreateToken { name, role, workspace: Some("w".into()) }).await.unwrap().token
        }
    };
    let reader = token("reader", Role::Reader).await;
    let writer = token("writer", Role::Writer).await;

    let as_reader = |args: &[&str]| {
        let mut cmd = s.cmd();
        cmd.env("CAIRN_TOKEN", &reader).args(args).output().unwrap()
    };
    assert!(as_reader(&["endpoint", "show", "wine-ep", "-w", "w"]).status.success(), "readers see endpoints");
    let out = as_reader(&["endpoint", "get-keys", "wine-ep", "-w", "w"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("403") && err.contains("needs writer"), "{err}");
    let out = as_reader(&["endpoint", "regen-key", "wine-ep", "--key-type", "primary", "-w", "w"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"));

    let mut cmd = s.cmd();
    let out =
        cmd.env("CAIRN_TOKEN", &writer).args(["endpoint", "get-keys", "wine-ep", "-w", "w", "-o", "json"]);
    let out = out.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let k = json(&String::from_utf8_lossy(&out.stdout));
    let (primary, secondary) =
        (k["primary_key"].as_str().unwrap().to_string(), k["secondary_key"].as_str().unwrap().to_string());
    assert_eq!(primary.len(), 64, "256 bits as hex");
    assert_ne!(primary, secondary);
    assert_eq!(keys(&s, "w", "wine-ep"), (primary.clone(), secondary.clone()), "keys are shown again");

    // both keys pass authentication (503: there is no deployment to answer yet)
    assert_eq!(score(&s, "wine-ep", Some(&primary), DATA, &[]).await.status, 503);
    assert_eq!(score(&s, "wine-ep", Some(&secondary), DATA, &[]).await.status, 503);

    s.ok(&["endpoint", "regen-key", "wine-ep", "--key-type", "secondary", "-w", "w"]);
    let (p2, s2) = keys(&s, "w", "wine-ep");
    assert_eq!(p2, primary, "regenerating the secondary key leaves the primary");
    assert_ne!(s2, secondary);
    assert_eq!(score(&s, "wine-ep", Some(&primary), DATA, &[]).await.status, 503, "primary still works");
    assert_eq!(score(&s, "wine-ep", Some(&secondary), DATA, &[]).await.status, 401, "old secondary refused");
    assert_eq!(score(&s, "wine-ep", Some(&s2), DATA, &[]).await.status, 503, "new secondary works");

    s.ok(&["endpoint", "regen-key", "wine-ep", "--key-type", "primary", "-w", "w"]);
    let (p3, s3) = keys(&s, "w", "wine-ep");
    assert_ne!(p3, primary);
    assert_eq!(s3, s2, "regenerating the primary key leaves the secondary");
    assert_eq!(score(&s, "wine-ep", Some(&primary), DATA, &[]).await.status, 401);
    assert_eq!(score(&s, "wine-ep", Some(&s2), DATA, &[]).await.status, 503);
    let err = s.fails(&["endpoint", "regen-key", "wine-ep", "--key-type", "tertiary", "-w", "w"]);
    assert!(err.contains("tertiary"), "{err}");
}

async fn token_mode_endpoints_take_fresh_tokens_only(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    s.ok(&["workspace", "create", "w"]);
    let e = create(&s, "w", "token-ep", "token");
    assert_eq!(e["auth_mode"], "aml_token", "`token` is accepted as aml_token");
    create(&s, "w", "key-ep", "key");

    let err = s.fails(&["endpoint", "get-keys", "token-ep", "-w", "w"]);
    assert!(err.contains("uses auth_mode aml_token") && err.contains("400"), "{err}");
    let err = s.fails(&["endpoint", "get-token", "key-ep", "-w", "w"]);
    assert!(err.contains("uses auth_mode key") && err.contains("400"), "{err}");
    let err = s.fails(&["endpoint", "get-token", "token-ep", "--expires-in", "0", "-w", "w"]);
    assert!(err.contains("between 1 and 86400"), "{err}");

    let t = json(&s.ok(&["endpoint", "get-token", "token-ep", "-w", "w", "-o", "json"]));
    let token = t["accessToken"].as_str().unwrap().to_string();
    assert_eq!(t["tokenType"], "Bearer");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let expiry = t["expiryTimeUtc"].as_i64().unwrap();
    assert!((now + 3500..=now + 3601).contains(&expiry), "default lifetime 1 h: {t}");
    let refresh = t["refreshAfterTimeUtc"].as_i64().unwrap();
    assert!(refresh > now && refresh < expiry, "{t}");

    assert_eq!(score(&s, "token-ep", Some(&token), DATA, &[]).await.status, 503, "a live token passes");
    let key_ep_keys = keys(&s, "w", "key-ep");
    assert_eq!(score(&s, "key-ep", Some(&token), DATA, &[]).await.status, 401, "bound to its endpoint");
    assert_eq!(score(&s, "token-ep", Some(&key_ep_keys.0), DATA, &[]).await.status, 401);

    // a key of a token-mode endpoint is refused, telling its holder why
    s.ok(&[
        "endpoint",
        "update",
        "token-ep",
        "-w",
        "w",
        "-f",
        &yaml(&s, "k.yml", "name: token-ep\nauth_mode: key\n"),
    ]);
    let (k, _) = keys(&s, "w", "token-ep");
    s.ok(&[
        "endpoint",
        "update",
        "token-ep",
        "-w",
        "w",
        "-f",
        &yaml(&s, "t.yml", "name: token-ep\nauth_mode: aml_token\n"),
    ]);
    let r = score(&s, "token-ep", Some(&k), DATA, &[]).await;
    assert_eq!(r.status, 401);
    assert!(r.body.contains("aml_token"), "{}", r.body);

    // a short-lived token is refused once its expiry has passed (waiting about a second)
    let t = json(&s.ok(&["endpoint", "get-token", "token-ep", "--expires-in", "1", "-w", "w", "-o", "json"]));
    let short = t["accessToken"].as_str().unwrap().to_string();
    let expiry_ms = t["expiryTimeUtc"].as_i64().unwrap() * 1000;
    loop {
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        if now_ms > expiry_ms {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis((expiry_ms - now_ms + 20) as u64)).await;
    }
    let r = score(&s, "token-ep", Some(&short), DATA, &[]).await;
    assert_eq!(r.status, 401);
    assert!(r.body.contains("expired"), "{}", r.body);
    assert_eq!(score(&s, "token-ep", Some(&token), DATA, &[]).await.status, 503, "the 1 h token still works");
}

#[test]
fn bad_endpoint_files_are_refused_naming_the_problem() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    let refuse = |file: &str, text: &str, needles: &[&str]| {
        let f = yaml(&s, file, text);
        let err = s.fails(&["endpoint", "create", "-f", &f, "-w", "w"]);
        for n in needles {
            assert!(err.contains(n), "{text:?}: {err}");
        }
    };
    refuse("u.yml", "name: wine-ep\ninstance_type: Standard_DS3_v2\n", &["unknown field `instance_type`"]);
    for bad in ["ab", "Wine-ep", "1wine", "wine-", "wine_ep", &"a".repeat(33)] {
        refuse("n.yml", &format!("name: {bad}\n"), &["invalid endpoint name", "3 to 32 characters", "400"]);
    }
    refuse("a.yml", "name: wine-ep\nauth_mode: aad_token\n", &["aad_token", "not supported"]);
    refuse("b.yml", "name: wine-ep\nauth_mode: none\n", &["unknown auth_mode \"none\""]);
    refuse(
        "t.yml",
        "name: wine-ep\ntraffic: {blue: 100}\n",
        &["no deployment \"blue\" on endpoint \"wine-ep\"", "400"],
    );
    refuse("s.yml", "name: wine-ep\ntraffic: {blue: 90, green: 5}\n", &["must sum to 100", "sum to 95"]);
    refuse("p.yml", "name: wine-ep\ntraffic: {blue: 120}\n", &["0 to 100"]);
    refuse("m.yml", "name: wine-ep\nmirror_traffic: {green: 60}\n", &["0 to 50"]);
    assert_eq!(
        json(&s.ok(&["endpoint", "list", "-w", "w", "-o", "json"])),
        serde_json::json!([]),
        "nothing half-made"
    );

    // the API refuses unknown keys too, naming them
    create(&s, "w", "wine-ep", "key");
    let f = yaml(&s, "up.yml", "name: wine-ep\ntraffic: {blue: 100}\n");
    let err = s.fails(&["endpoint", "update", "-f", &f, "-w", "w"]);
    assert!(err.contains("no deployment \"blue\" on endpoint \"wine-ep\""), "{err}");
    let err = s.fails(&["endpoint", "update", "wine-ep", "--traffic", "blue=50 green=40", "-w", "w"]);
    assert!(err.contains("sum to 90"), "{err}");
    let shown = json(&s.ok(&["endpoint", "show", "wine-ep", "-w", "w", "-o", "json"]));
    assert_eq!(shown["traffic"], serde_json::json!({}), "a refused update changes nothing");
    let out = s.ok(&["endpoint", "update", "wine-ep", "--traffic", "", "-w", "w", "-o", "json"]);
    assert_eq!(json(&out)["traffic"], serde_json::json!({}), "empty traffic is fine");
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthenticated_scoring_gets_one_401_whether_the_endpoint_exists_or_not() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    create(&s, "w", "wine-ep", "key");
    let wrong = "0".repeat(64);
    let exists = score(&s, "wine-ep", Some(&wrong), DATA, &[]).await;
    let missing = score(&s, "no-such-ep", Some(&wrong), DATA, &[]).await;
    assert_eq!((exists.status, missing.status), (401, 401));
    assert_eq!(exists.body, missing.body);
    assert_eq!(json(&exists.body)["message"], "invalid key or token");
    assert_eq!(exists.www_authenticate.as_deref(), Some("Bearer"));
    let exists = score(&s, "wine-ep", None, DATA, &[]).await;
    let missing = score(&s, "no-such-ep", None, DATA, &[]).await;
    assert_eq!((exists.status, missing.status), (401, 401));
    assert_eq!(exists.body, missing.body);
    assert!(exists.body.contains("Authorization: Bearer"), "{}", exists.body);
    // the control plane's token is not an endpoint key
    assert_eq!(score(&s, "wine-ep", Some(&s.token), DATA, &[]).await.status, 401);
    // health and swagger are behind the same door
    for path in ["wine-ep", "wine-ep/swagger.json", "no-such-ep", "no-such-ep/swagger.json"] {
        let r = reqwest::Client::new()
            .get(format!("{}/endpoints/{path}", s.url))
            .bearer_auth(&wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
        assert_eq!(r.text().await.unwrap(), exists_body_for_wrong_key(), "{path}");
    }
}

fn exists_body_for_wrong_key() -> String {
    serde_json::json!({"message": "invalid key or token"}).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn without_deployments_scoring_is_503_with_retry_after() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    create(&s, "w", "wine-ep", "key");
    let (key, _) = keys(&s, "w", "wine-ep");
    let r = score(&s, "wine-ep", Some(&key), DATA, &[]).await;
    assert_eq!(r.status, 503);
    assert!(r.retry_after.is_some_and(|v| v.parse::<u64>().is_ok()), "Retry-After in seconds");
    assert_eq!(
        json(&r.body)["message"],
        "endpoint \"wine-ep\" has no deployment yet: nothing can score this request"
    );
    let r = score(&s, "wine-ep", Some(&key), DATA, &[("azureml-model-deployment", "blue")]).await;
    assert_eq!(r.status, 404);
    assert!(json(&r.body)["message"]
        .as_str()
        .unwrap()
        .contains("no deployment \"blue\" on endpoint \"wine-ep\""));
    for path in ["wine-ep", "wine-ep/swagger.json"] {
        let r =
            reqwest::Client::new().get(format!("{}/endpoints/{path}", s.url)).bearer_auth(&key).send().await;
        let r = r.unwrap();
        assert_eq!(r.status().as_u16(), 503, "{path}");
        assert!(r.headers().contains_key("retry-after"));
    }
    let out = s.cli(&[
        "endpoint",
        "invoke",
        "wine-ep",
        "--request-file",
        &yaml(&s, "req.json", "{\"data\": [[1]]}"),
        "-w",
        "w",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no deployment yet") && err.contains("503"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_bodies_get_413_naming_the_limit_after_authentication() {
    let s = Server::start_with(Opts {
        args: vec!["--max-score-body-bytes".into(), "1024".into()],
        ..Opts::default()
    });
    s.ok(&["workspace", "create", "w"]);
    create(&s, "w", "wine-ep", "key");
    let (key, _) = keys(&s, "w", "wine-ep");
    let big = vec![b' '; 2048];
    let r = score(&s, "wine-ep", Some(&key), &big, &[]).await;
    assert_eq!(r.status, 413);
    assert!(json(&r.body)["message"].as_str().unwrap().contains("limit of 1024 bytes"), "{}", r.body);
    assert_eq!(
        score(&s, "wine-ep", Some("wrong"), &big, &[]).await.status,
        401,
        "authentication comes first"
    );
    assert_eq!(score(&s, "wine-ep", Some(&key), &big[..1024], &[]).await.status, 503, "at the limit is fine");

    // a chunked body (no Content-Length) is cut at the limit too
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..4).map(|_| Ok(vec![b' '; 512])).collect();
    let r = reqwest::Client::new()
        .post(format!("{}/endpoints/wine-ep/score", s.url))
        .bearer_auth(&key)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert!(r.text().await.unwrap().contains("1024"));
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_scoring_requests_by_endpoint_and_status() {
    let s = Server::start_with(Opts {
        args: vec!["--max-score-body-bytes".into(), "100".into()],
        ..Opts::default()
    });
    s.ok(&["workspace", "create", "w"]);
    create(&s, "w", "wine-ep", "key");
    let (key, _) = keys(&s, "w", "wine-ep");
    for _ in 0..3 {
        assert_eq!(score(&s, "wine-ep", Some(&key), DATA, &[]).await.status, 503);
    }
    assert_eq!(score(&s, "wine-ep", Some(&key), &[b' '; 200], &[]).await.status, 413);
    assert_eq!(score(&s, "wine-ep", Some("wrong"), DATA, &[]).await.status, 401);
    assert_eq!(score(&s, "guessed-name", Some("wrong"), DATA, &[]).await.status, 401);

    let http = reqwest::Client::new();
    let r = http.get(format!("{}/metrics", s.url)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401, "metrics need a Cairn token");
    let r = http.get(format!("{}/metrics", s.url)).bearer_auth(&s.token).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = r.text().await.unwrap();
    let has = |line: &str| assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    // No deployment was chosen for any of these: deployment="_none" (tests/serving.rs has pinned ones).
    has("cairn_endpoint_requests_total{endpoint=\"wine-ep\",deployment=\"_none\",status=\"503\"} 3");
    has("cairn_endpoint_requests_total{endpoint=\"wine-ep\",deployment=\"_none\",status=\"413\"} 1");
    has("cairn_endpoint_requests_total{endpoint=\"_unauthenticated\",deployment=\"_none\",status=\"401\"} 2");
    has("cairn_endpoint_request_duration_seconds_count{endpoint=\"wine-ep\",deployment=\"_none\"} 4");
    has("cairn_endpoint_request_duration_seconds_bucket{endpoint=\"wine-ep\",deployment=\"_none\",le=\"+Inf\"} 4");
    assert!(!text.contains("guessed-name"), "names tried by strangers are not recorded");

    let scoped = s
        .client()
        .create_token(&CreateToken { name: "scoped".into(), role: Role::Writer, workspace: Some("w".into()) })
        .await
        .unwrap()
        .token;
    let r = http.get(format!("{}/metrics", s.url)).bearer_auth(&scoped).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403, "metrics span workspaces");

    s.ok(&["endpoint", "delete", "wine-ep", "-w", "w"]);
    let text = http
        .get(format!("{}/metrics", s.url))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("wine-ep"), "a deleted endpoint's series go with it:\n{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_and_tokens_never_appear_in_the_server_log() {
    let s = Server::start_with(Opts {
        env: vec![("CAIRN_LOG".into(), "debug,sqlx=debug,tower_http=trace".into())],
        ..Opts::default()
    });
    s.ok(&["workspace", "create", "w"]);
    create(&s, "w", "wine-ep", "key");
    create(&s, "w", "token-ep", "aml_token");
    let (p, sec) = keys(&s, "w", "wine-ep");
    s.ok(&["endpoint", "regen-key", "wine-ep", "--key-type", "primary", "-w", "w"]);
    let (p2, _) = keys(&s, "w", "wine-ep");
    let t = json(&s.ok(&["endpoint", "get-token", "token-ep", "-w", "w", "-o", "json"]));
    let token = t["accessToken"].as_str().unwrap().to_string();
    score(&s, "wine-ep", Some(&p), DATA, &[]).await;
    score(&s, "wine-ep", Some(&p2), DATA, &[]).await;
    score(&s, "token-ep", Some(&token), DATA, &[]).await;
    assert!(s.wait_for_log("/endpoints/token-ep/score"), "the requests were logged at all");
    let log = s.log();
    for secret in [&p, &sec, &p2, &token] {
        assert!(!log.contains(secret.as_str()), "a key or token is in the log");
    }
    let token_mac = token.rsplit('.').next().unwrap();
    assert!(!log.contains(token_mac));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_secret_is_private_and_keeps_keys_across_restarts() {
    use std::os::unix::fs::PermissionsExt;
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    create(&s, "w", "wine-ep", "key");
    let before = keys(&s, "w", "wine-ep");
    let mode = std::fs::metadata(s.data_dir.join("secret-key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    for file in ["cairn.db", "cairn.db-wal"] {
        let stored = std::fs::read(s.data_dir.join(file)).unwrap_or_default();
        let stored = String::from_utf8_lossy(&stored);
        assert!(!stored.contains(&before.0) && !stored.contains(&before.1), "keys are not stored in clear");
    }

    let s = s.restart();
    assert_eq!(keys(&s, "w", "wine-ep"), before);
    assert_eq!(score(&s, "wine-ep", Some(&before.0), DATA, &[]).await.status, 503);

    // another secret cannot open the sealed keys: a clear error, and scoring by hash still works
    let mut s = s;
    s.opts.env.push(("CAIRN_SECRET_KEY".into(), "x".repeat(40)));
    let s = s.restart();
    let err = s.fails(&["endpoint", "get-keys", "wine-ep", "-w", "w"]);
    assert!(err.contains("sealed with another server secret") && err.contains("503"), "{err}");
    assert_eq!(score(&s, "wine-ep", Some(&before.0), DATA, &[]).await.status, 503);
    s.ok(&["endpoint", "regen-key", "wine-ep", "--key-type", "primary", "-w", "w"]);
    s.ok(&["endpoint", "regen-key", "wine-ep", "--key-type", "secondary", "-w", "w"]);
    assert_ne!(keys(&s, "w", "wine-ep"), before, "regenerated keys open with the new secret");
    let out = std::process::Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(s.tmp().join("other"))
        .env("CAIRN_SECRET_KEY", "short")
        .env("HOME", &s.home)
        .current_dir(s.tmp())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CAIRN_SECRET_KEY must be at least 32 characters"), "{err}");
}

/// The data plane keeps endpoint lookups in memory: every change through the API must still take
/// effect on the very next request.
#[tokio::test(flavor = "multi_thread")]
async fn key_changes_and_deletions_take_effect_on_the_next_scoring_request() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    create(&s, "w", "wine-ep", "key");
    let (primary, secondary) = keys(&s, "w", "wine-ep");
    // No deployment yet: a valid key gets 503, a wrong one 401.
    assert_eq!(score(&s, "wine-ep", Some(&primary), DATA, &[]).await.status, 503);
    s.ok(&["endpoint", "regen-key", "wine-ep", "--key-type", "primary", "-w", "w"]);
    assert_eq!(score(&s, "wine-ep", Some(&primary), DATA, &[]).await.status, 401, "the old key at once");
    let (new_primary, _) = keys(&s, "w", "wine-ep");
    assert_eq!(score(&s, "wine-ep", Some(&new_primary), DATA, &[]).await.status, 503);
    assert_eq!(score(&s, "wine-ep", Some(&secondary), DATA, &[]).await.status, 503);
    s.ok(&["endpoint", "delete", "wine-ep", "-w", "w"]);
    assert_eq!(
        score(&s, "wine-ep", Some(&new_primary), DATA, &[]).await.status,
        401,
        "a deleted endpoint at once"
    );
    // A new endpoint of the same name has new keys; the old ones open nothing.
    create(&s, "w", "wine-ep", "key");
    assert_eq!(score(&s, "wine-ep", Some(&secondary), DATA, &[]).await.status, 401);
    let (fresh, _) = keys(&s, "w", "wine-ep");
    assert_eq!(score(&s, "wine-ep", Some(&fresh), DATA, &[]).await.status, 503);
}
