//! The studio's operations pages against the real server, over HTTP with a signed-in session:
//! models (versions, files, lineage, escaping), endpoints (deployments, traffic, keys masked,
//! regeneration with CSRF, the test form through the gateway), data (folders, sizes, downloads,
//! traversal refused), environments (spec, build state and log) and compute (nodes, queue,
//! running jobs). Unknown names get the 404 page everywhere.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A signed-in browser: the session cookie and the page's CSRF token, no redirects followed.
struct Studio {
    http: reqwest::Client,
    base: String,
    cookie: String,
    /// The slowest page so far and its time (printed when the test ends, for the report).
    slowest: std::sync::Mutex<(Duration, String)>,
}

impl Drop for Studio {
    fn drop(&mut self) {
        let (t, path) = &*self.slowest.lock().unwrap();
        eprintln!("slowest studio page: {path} in {:.1} ms", t.as_secs_f64() * 1000.0);
    }
}

struct Page {
    status: u16,
    location: String,
    body: String,
}

impl Page {
    /// The session's CSRF token, from the page's `<meta name="csrf-token">`.
    fn csrf(&self) -> String {
        let marker = "name=\"csrf-token\" content=\"";
        let at = self.body.find(marker).unwrap_or_else(|| panic!("no csrf meta in {}", self.body));
        let rest = &self.body[at + marker.len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }

    fn has(&self, needle: &str) -> bool {
        self.body.contains(needle)
    }

    fn assert_has(&self, needle: &str) {
        assert!(self.has(needle), "expected {needle:?} in the page:\n{}", self.body);
    }

    fn assert_not_found(&self) {
        assert_eq!(self.status, 404, "{}", self.body);
        self.assert_has("<h1>Not found</h1>");
    }
}

impl Studio {
    async fn sign_in(s: &Server) -> Studio {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let r = studio_login(&http, &s.url, &s.token, "/").await;
        assert_eq!(r.status().as_u16(), 303, "sign-in failed: {}", r.text().await.unwrap());
        let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
        let cookie = set.split(';').next().unwrap().to_string();
        assert!(cookie.starts_with("cairn_session="), "{set}");
        Studio { http, base: s.url.clone(), cookie, slowest: Default::default() }
    }

    async fn page(&self, r: reqwest::RequestBuilder) -> Page {
        let started = Instant::now();
        let r = r.header("cookie", &self.cookie).send().await.unwrap();
        let took = started.elapsed();
        {
            let mut slowest = self.slowest.lock().unwrap();
            if took > slowest.0 {
                *slowest = (took, r.url().path().to_string());
            }
        }
        let status = r.status().as_u16();
        let location =
            r.headers().get("location").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        Page { status, location, body: r.text().await.unwrap() }
    }

    async fn get(&self, path: &str) -> Page {
        self.page(self.http.get(format!("{}{path}", self.base))).await
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        self.page(self.http.post(format!("{}{path}", self.base)).form(form)).await
    }

    async fn bytes(&self, path: &str) -> (u16, Vec<u8>) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
    }
}

/// `href="…"` of the first link whose attributes contain `attr` (e.g. `id="lineage-run"`).
fn href_of(body: &str, attr: &str) -> String {
    let at = body.find(attr).unwrap_or_else(|| panic!("no {attr} in {body}"));
    let tag_start = body[..at].rfind('<').unwrap();
    let tag = &body[tag_start..tag_start + body[tag_start..].find('>').unwrap()];
    let h = tag.find("href=\"").unwrap_or_else(|| panic!("no href in {tag}")) + 6;
    tag[h..h + tag[h..].find('"').unwrap()].to_string()
}

async fn api(s: &Server, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut rb =
        reqwest::Client::new().request(method, format!("{}/api/v1/{path}", s.url)).bearer_auth(&s.token);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, if text.is_empty() { Value::Null } else { json_of(&text) })
}

#[tokio::test(flavor = "multi_thread")]
async fn model_pages_show_versions_files_and_lineage_and_escape_user_text() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    // Version 1 from a run's artifacts, version 2 from local files.
    let (st, run) =
        api(&s, reqwest::Method::POST, "workspaces/w/runs", Some(json!({"experiment": "wine"}))).await;
    assert_eq!(st, 201, "{run}");
    let run = run["id"].as_str().unwrap().to_string();
    let pickle = b"pretend this is a pickled model".to_vec();
    let r = reqwest::Client::new()
        .put(format!("{}/api/v1/workspaces/w/runs/{run}/artifacts/outputs/model/model.pkl", s.url))
        .bearer_auth(&s.token)
        .body(pickle.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    s.ok(&[
        "model",
        "register",
        "--name",
        "wine",
        "--run",
        &run,
        "--path",
        "outputs/model",
        "--framework",
        "sklearn==1.5.2",
        "--tag",
        "stage=<script>alert(1)</script>",
        "--description",
        "<script>alert('desc')</script> elasticnet",
        "--property",
        "accuracy=0.93",
        "-w",
        "w",
    ]);
    let local = s.tmp().join("local-model");
    write_tree(&local, &[("coef.json", b"{\"w\": [1, 2]}"), ("sub dir/notes #1.txt", b"notes")]);
    s.ok(&["model", "register", "--name", "wine", "--path", local.to_str().unwrap(), "-w", "w"]);
    let (st, _) = api(
        &s,
        reqwest::Method::PUT,
        "workspaces/w/models/wine/aliases/champion",
        Some(json!({"version": 1})),
    )
    .await;
    assert_eq!(st, 200);

    let b = Studio::sign_in(&s).await;
    let list = b.get("/w/w/models").await;
    assert_eq!(list.status, 200, "{}", list.body);
    list.assert_has("id=\"models-table\"");
    list.assert_has("data-model=\"wine\"");
    list.assert_has("href=\"/w/w/models/wine/2\"");

    let model = b.get("/w/w/models/wine").await;
    assert_eq!(model.status, 200);
    // Newest first, and the alias points at version 1.
    let (v2, v1) =
        (model.body.find("data-version=\"2\"").unwrap(), model.body.find("data-version=\"1\"").unwrap());
    assert!(v2 < v1, "versions must be newest first");
    model.assert_has("@champion");

    let version = b.get("/w/w/models/wine/1").await;
    assert_eq!(version.status, 200, "{}", version.body);
    version.assert_has("id=\"model-version\"");
    assert_eq!(href_of(&version.body, "id=\"lineage-run\""), format!("/w/w/runs/{run}"));
    version.assert_has("sklearn 1.5.2");
    version.assert_has("accuracy");
    version.assert_has(&sha256_hex(&pickle));
    // User text is text: the tag and the description are escaped, never markup.
    assert!(!version.has("<script>alert"), "unescaped user text:\n{}", version.body);
    version.assert_has("&lt;script&gt;alert(1)&lt;/script&gt;");
    version.assert_has("&lt;script&gt;alert('desc')&lt;/script&gt; elasticnet");
    // Files download with the session, through the registry API.
    let link = href_of(&version.body, ">model.pkl<");
    assert_eq!(b.bytes(&link).await, (200, pickle.clone()));
    // The alias resolves; a local-files version has no run.
    let by_alias = b.get("/w/w/models/wine/@champion").await;
    assert_eq!(by_alias.status, 200);
    by_alias.assert_has("lineage-run");
    let v2 = b.get("/w/w/models/wine/2").await;
    assert!(!v2.has("lineage-run"), "no run, no lineage link");
    v2.assert_has("Registered from local files");
    // Paths with spaces and '#' are encoded in links and still download.
    let notes = href_of(&v2.body, ">sub dir/notes #1.txt<");
    assert!(notes.ends_with("/files/sub%20dir/notes%20%231.txt"), "{notes}");
    assert_eq!(b.bytes(&notes).await, (200, b"notes".to_vec()));

    b.get("/w/w/models/nope").await.assert_not_found();
    b.get("/w/w/models/wine/9").await.assert_not_found();
    b.get("/w/w/models/wine/not-a-version").await.assert_not_found();
    b.get("/w/w/models/wine/@nobody").await.assert_not_found();
    b.get("/w/nope/models").await.assert_not_found();
}

const SCORE_PY: &str = r#"
import json
from cairn.serving import Model

def init():
    global coef
    with open(Model.get_model_path("lin")) as f:
        coef = json.load(f)

def run(raw_data):
    rows = json.loads(raw_data)["data"]
    return [sum(w * x for w, x in zip(coef["w"], row)) + coef["b"] for row in rows]
"#;

async fn score(s: &Server, key: &str, body: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/endpoints/lin-ep/score", s.url))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoint_page_masks_keys_tests_through_the_gateway_and_regenerates_only_with_csrf() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    let dir = s.tmp().join("spec");
    write_tree(
        &dir,
        &[
            ("env.yml", b"name: plain\npip: []\n"),
            ("model/coef.json", br#"{"w": [2.0, -1.0, 0.5], "b": 1.0}"#),
            ("ep.yml", b"name: lin-ep\nauth_mode: key\n"),
            ("src/score.py", SCORE_PY.as_bytes()),
            (
                "blue.yml",
                b"name: blue\nendpoint_name: lin-ep\nmodel: azureml:lin:1\n\
                  code_configuration:\n  code: src\n  scoring_script: score.py\n\
                  environment: plain\ninstance_count: 1\n",
            ),
        ],
    );
    let p = |f: &str| dir.join(f).display().to_string();
    s.ok(&["env", "create", "-f", &p("env.yml"), "-w", "w"]);
    s.ok(&["model", "register", "--name", "lin", "--path", &p("model"), "-w", "w"]);
    s.ok(&["endpoint", "create", "-f", &p("ep.yml"), "-w", "w"]);
    s.ok(&["deployment", "create", "-f", &p("blue.yml"), "--all-traffic", "--wait", "-w", "w"]);
    let (_, keys) = api(&s, reqwest::Method::GET, "workspaces/w/endpoints/lin-ep/keys", None).await;
    let (primary, secondary) = (
        keys["primary_key"].as_str().unwrap().to_string(),
        keys["secondary_key"].as_str().unwrap().to_string(),
    );

    let b = Studio::sign_in(&s).await;
    let list = b.get("/w/w/endpoints").await;
    assert_eq!(list.status, 200, "{}", list.body);
    list.assert_has("data-endpoint=\"lin-ep\"");

    let page = b.get("/w/w/endpoints/lin-ep").await;
    assert_eq!(page.status, 200, "{}", page.body);
    page.assert_has("id=\"endpoint-state\"");
    page.assert_has(&format!("{}/endpoints/lin-ep/score", s.url));
    page.assert_has("id=\"traffic\"");
    page.assert_has("blue: 100%");
    page.assert_has("id=\"deployments-table\"");
    page.assert_has("data-deployment=\"blue\"");
    page.assert_has("data-status=\"Healthy\"");
    page.assert_has("1 / 1");
    page.assert_has("href=\"/w/w/models/lin/1\"");
    page.assert_has("No traffic yet");
    // Keys are never in the page; it only says where to fetch them.
    assert!(!page.has(&primary) && !page.has(&secondary), "a key is in the page");
    page.assert_has("id=\"primary-key\"");
    page.assert_has("id=\"reveal-primary\"");
    page.assert_has("data-keys-url=\"/api/v1/workspaces/w/endpoints/lin-ep/keys\"");
    page.assert_has("name=\"body\"");
    // Revealing is a GET of the keys API with the session cookie.
    let (st, body) = b.bytes("/api/v1/workspaces/w/endpoints/lin-ep/keys").await;
    assert_eq!(st, 200);
    assert_eq!(json_of(&String::from_utf8(body).unwrap())["primary_key"].as_str(), Some(primary.as_str()));

    // The test form needs the session's CSRF token.
    let csrf = page.csrf();
    let body = r#"{"data": [[1.0, 2.0, 3.0]]}"#;
    let refused = b.post("/w/w/endpoints/lin-ep/test", &[("body", body)]).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    let wrong = b.post("/w/w/endpoints/lin-ep/test", &[("body", body), ("csrf", "forged")]).await;
    assert_eq!(wrong.status, 403);
    let tested = b.post("/w/w/endpoints/lin-ep/test", &[("body", body), ("csrf", &csrf)]).await;
    assert_eq!(tested.status, 200, "{}", tested.body);
    // 2*1 - 1*2 + 0.5*3 + 1 = 2.5, answered by the replica through the gateway.
    tested.assert_has("HTTP 200");
    let pre_at = tested.body.find("id=\"test-response\"").unwrap();
    assert!(tested.body[pre_at..].contains("2.5"), "{}", &tested.body[pre_at..]);
    assert!(!tested.has(&primary), "the key used for the test is not in the page");
    // A body the script cannot read is the replica's error, shown as such.
    let bad = b.post("/w/w/endpoints/lin-ep/test", &[("body", "not json"), ("csrf", &csrf)]).await;
    assert_eq!(bad.status, 200);
    bad.assert_has("HTTP 500");
    // The tests went through the gateway, so its metrics counted them.
    let after = b.get("/w/w/endpoints/lin-ep").await;
    assert!(!after.has("No traffic yet"), "{}", after.body);
    after.assert_has("data-status=\"200\"");
    after.assert_has("data-status=\"500\"");
    after.assert_has("2 requests");

    // Regenerating needs the CSRF token too; refused, nothing changes.
    let refused = b.post("/w/w/endpoints/lin-ep/regenerate-key", &[("key_type", "primary")]).await;
    assert_eq!(refused.status, 403);
    assert_eq!(score(&s, &primary, body).await, 200);
    let done =
        b.post("/w/w/endpoints/lin-ep/regenerate-key", &[("key_type", "primary"), ("csrf", &csrf)]).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.location, "/w/w/endpoints/lin-ep?regenerated=primary");
    b.get(&done.location).await.assert_has("The primary key was regenerated.");
    assert_eq!(score(&s, &primary, body).await, 401, "the old primary key is dead");
    assert_eq!(score(&s, &secondary, body).await, 200, "the secondary key still works");
    let (_, keys) = api(&s, reqwest::Method::GET, "workspaces/w/endpoints/lin-ep/keys", None).await;
    assert_ne!(keys["primary_key"].as_str().unwrap(), primary);
    assert_eq!(keys["secondary_key"].as_str().unwrap(), secondary);
    let odd =
        b.post("/w/w/endpoints/lin-ep/regenerate-key", &[("key_type", "tertiary"), ("csrf", &csrf)]).await;
    assert_eq!(odd.status, 400, "{}", odd.body);

    b.get("/w/w/endpoints/nope").await.assert_not_found();
    let missing = b.post("/w/w/endpoints/nope/test", &[("body", body), ("csrf", &csrf)]).await;
    missing.assert_not_found();
    // Replicas are process groups of their own: stop them rather than orphan them.
    s.ok(&["endpoint", "update", "lin-ep", "--traffic", "", "-w", "w"]);
    s.ok(&["deployment", "delete", "lin-ep/blue", "-w", "w"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn data_pages_browse_one_folder_level_with_sizes_and_refuse_traversal() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    let src = s.tmp().join("src");
    write_tree(
        &src,
        &[("red.csv", b"a,b\n1,2\n"), ("deep/white.csv", b"a,b\n3,4\n5,6\n"), ("deep/er/x <b>.txt", b"x")],
    );
    s.ok(&["datastore", "upload", "-w", "w", src.to_str().unwrap(), "--target-path", "winedata", "-q"]);

    let b = Studio::sign_in(&s).await;
    let list = b.get("/w/w/data").await;
    assert_eq!(list.status, 200, "{}", list.body);
    list.assert_has("data-datastore=\"default\"");
    // Totals need every file listed: only on request.
    list.assert_has("<td class=\"files\">—</td>");
    assert_eq!(href_of(&list.body, "id=\"show-sizes\""), "/w/w/data?sizes=1");
    let list = b.get("/w/w/data?sizes=1").await;
    // 3 files, 8 + 12 + 1 bytes.
    list.assert_has("<td class=\"files\">3</td>");
    list.assert_has("21 B");

    let root = b.get("/w/w/data/default").await;
    assert_eq!(root.status, 200, "{}", root.body);
    root.assert_has("href=\"/w/w/data/default/winedata\"");

    let folder = b.get("/w/w/data/default/winedata").await;
    assert_eq!(folder.status, 200, "{}", folder.body);
    folder.assert_has("data-path=\"winedata/deep\"");
    folder.assert_has("data-path=\"winedata/red.csv\"");
    folder.assert_has("1 folder(s) and 1 file(s) here");
    assert!(!folder.has("13 B (2 files)"), "folder sizes are not computed unless asked");
    // One level only: the deeper file is behind its folder.
    assert!(!folder.has("white.csv"), "{}", folder.body);
    let sized = b.get(&href_of(&folder.body, "id=\"show-sizes\"")).await;
    assert_eq!(sized.status, 200, "{}", sized.body);
    sized.assert_has("13 B (2 files)");
    sized.assert_has("3 file(s), 21 B in this folder and below.");
    let deep = b.get("/w/w/data/default/winedata/deep/er").await;
    assert_eq!(deep.status, 200);
    // Breadcrumbs lead back up; user text is escaped.
    deep.assert_has("href=\"/w/w/data/default/winedata/deep\"");
    deep.assert_has("x &lt;b&gt;.txt");
    assert!(!deep.has("x <b>.txt"));
    let link = href_of(&deep.body, ">x &lt;b&gt;.txt<");
    assert_eq!(link, "/api/v1/workspaces/w/datastores/default/files/winedata/deep/er/x%20%3Cb%3E.txt");
    assert_eq!(b.bytes(&link).await, (200, b"x".to_vec()));
    // A file's studio URL sends the browser to its download.
    let file = b.get("/w/w/data/default/winedata/red.csv").await;
    assert_eq!(file.status, 303);
    assert_eq!(file.location, "/api/v1/workspaces/w/datastores/default/files/winedata/red.csv");

    // Traversal is refused before anything is listed, spelt out or percent-encoded (sent raw:
    // an HTTP client would resolve the dots itself).
    for path in ["winedata/../../etc", "winedata/%2e%2e/%2e%2e/etc", "%2E%2E"] {
        let request = format!(
            "GET /w/w/data/default/{path} HTTP/1.1\r\nHost: {}\r\nCookie: {}\r\nConnection: close\r\n\r\n",
            authority(&s.url),
            b.cookie
        );
        let (status, body) = raw_http(&s.url, request.as_bytes());
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("invalid path"), "{path}: {body}");
    }
    b.get("/w/w/data/default/nothing-here").await.assert_not_found();
    b.get("/w/w/data/nope").await.assert_not_found();

    // A long folder comes in pages of 200 entries, folders first.
    let many = s.tmp().join("many");
    let names: Vec<String> = (0..205).map(|i| format!("f{i:03}.txt")).collect();
    let mut tree: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), b"x" as &[u8])).collect();
    tree.push(("sub/inner.txt", b"y"));
    write_tree(&many, &tree);
    s.ok(&["datastore", "upload", "-w", "w", many.to_str().unwrap(), "--target-path", "many", "-q"]);
    let first = b.get("/w/w/data/default/many").await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(
        first.body.matches("<tr class=\"folder\"").count() + first.body.matches("<tr class=\"file\"").count(),
        200
    );
    first.assert_has("data-path=\"many/sub\"");
    first.assert_has("data-path=\"many/f198.txt\"");
    assert!(!first.has("data-path=\"many/f199.txt\""));
    first.assert_has("Page 1 of 2 (206 entries)");
    assert!(!first.has("id=\"prev-page\""));
    let second = b.get(&href_of(&first.body, "id=\"next-page\"")).await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.body.matches("<tr class=\"file\"").count(), 6);
    second.assert_has("data-path=\"many/f199.txt\"");
    second.assert_has("data-path=\"many/f204.txt\"");
    assert!(!second.has("id=\"next-page\""));
    for bad in ["3", "0", "x"] {
        b.get(&format!("/w/w/data/default/many?page={bad}")).await.assert_not_found();
    }
}

fn wait_for_status(s: &Server, run: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let r = json_of(&s.ok(&["job", "show", run, "-w", "w", "-o", "json"]));
        if r["status"] == status {
            return;
        }
        assert!(Instant::now() < deadline, "run {run} never got to {status}: {r}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn environment_and_compute_pages_show_builds_the_queue_and_running_jobs() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    let dir = s.tmp().join("spec");
    write_tree(
        &dir,
        &[
            ("compute.yml", b"name: cpu\ntype: amlcompute\nsize: small\nmin_instances: 0\nmax_instances: 1\nidle_time_before_scale_down: 120\n"),
            ("env.yml", b"name: plain\npip: []\nvariables:\n  GREETING: <b>hi</b>\n"),
            ("job.yml", b"experiment_name: tests\nenvironment: plain\ncompute: cpu\ncommand: sleep 600\n"),
        ],
    );
    let p = |f: &str| dir.join(f).display().to_string();
    s.ok(&["compute", "create", "-f", &p("compute.yml"), "-w", "w"]);
    s.ok(&["env", "create", "-f", &p("env.yml"), "-w", "w"]);
    s.ok(&["env", "create", "-f", &p("env.yml"), "-w", "w"]);

    let b = Studio::sign_in(&s).await;
    let envs = b.get("/w/w/environments").await;
    assert_eq!(envs.status, 200, "{}", envs.body);
    envs.assert_has("data-environment=\"plain\"");
    envs.assert_has("data-status=\"not built\"");
    let env = b.get("/w/w/environments/plain").await;
    assert_eq!(env.status, 200, "{}", env.body);
    env.assert_has("version 2");
    env.assert_has("href=\"/w/w/environments/plain?version=1\"");
    // The spec as YAML, its user text escaped.
    env.assert_has("GREETING");
    env.assert_has("&lt;b&gt;hi&lt;/b&gt;");
    env.assert_has("packages:");
    env.assert_has("Not built yet");

    let submit = |f: &str| json_of(&s.ok(&["job", "submit", "-f", f, "-w", "w", "-o", "json"]));
    let first = submit(&p("job.yml"))["id"].as_str().unwrap().to_string();
    let second = submit(&p("job.yml"))["id"].as_str().unwrap().to_string();
    wait_for_status(&s, &first, "Running");

    let computes = b.get("/w/w/compute").await;
    assert_eq!(computes.status, 200, "{}", computes.body);
    computes.assert_has("data-compute=\"cpu\"");
    computes.assert_has("data-busy=\"1\"");
    computes.assert_has("2 min 00 s");
    let cpu = b.get("/w/w/compute/cpu").await;
    assert_eq!(cpu.status, 200, "{}", cpu.body);
    let running_at = cpu.body.find("id=\"running-table\"").expect("a running table");
    let queue_at = cpu.body.find("id=\"queue-table\"").expect("a queue table");
    let first_at = cpu.body.find(&format!("href=\"/w/w/runs/{first}\"")).expect("a link to the running run");
    let second_at = cpu.body.find(&format!("href=\"/w/w/runs/{second}\"")).expect("a link to the queued run");
    assert!(queue_at < second_at && second_at < running_at, "the second run is queued");
    assert!(running_at < first_at, "the first run is running");

    // The job built the environment: the page says so and shows the log.
    let built = b.get("/w/w/environments/plain?version=1").await;
    assert_eq!(built.status, 200);
    built.assert_has("data-status=\"built\"");
    built.assert_has("id=\"build-log\"");
    built.assert_has("# built in");

    s.ok(&["job", "cancel", &second, "-w", "w"]);
    s.ok(&["job", "cancel", &first, "-w", "w"]);

    b.get("/w/w/environments/nope").await.assert_not_found();
    b.get("/w/w/environments/plain?version=9").await.assert_not_found();
    b.get("/w/w/environments/plain?version=x").await.assert_not_found();
    b.get("/w/w/compute/nope").await.assert_not_found();
}

#[tokio::test(flavor = "multi_thread")]
async fn operations_pages_send_a_signed_out_browser_to_sign_in() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for path in ["/w/w/models", "/w/w/endpoints/x", "/w/w/data/default", "/w/w/environments", "/w/w/compute"]
    {
        let r = http.get(format!("{}{path}", s.url)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 303, "{path}");
        let to = r.headers()["location"].to_str().unwrap();
        assert!(to.starts_with("/login?next="), "{path} → {to}");
    }
    // A form post without a session is not acted on.
    let r = http
        .post(format!("{}/w/w/endpoints/x/regenerate-key", s.url))
        .form(&[("key_type", "primary")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
}
