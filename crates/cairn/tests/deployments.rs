//! Online deployments end to end with real processes: a registered model (JSON coefficients,
//! stdlib only), an environment with no packages, a `score.py` shaped like the walkthrough's,
//! `deployment create --wait`, scoring through the endpoint's key, a failing `init()`, the
//! model-version use, a replica killed with SIGKILL, and a deployment of several models (Azure ML
//! v1's layout, each version held, one swapped by an update). Runs on SQLite and on PostgreSQL.

#[macro_use]
mod common;

use common::*;
use serde_json::Value;

on_both_backends!(
    a_deployment_scores_survives_sigkill_and_holds_its_model_version,
    a_failing_init_fails_the_deployment_with_its_traceback,
    a_hung_run_gets_504_and_deployments_come_back_after_a_restart,
    deleting_the_workspace_with_force_stops_its_replicas,
    a_deployment_of_two_models_loads_both_holds_both_and_an_update_swaps_one,
    bad_model_lists_are_refused_and_write_nothing,
    a_restart_during_an_update_of_two_models_keeps_both_recorded_versions,
    azures_sample_yaml_with_an_inline_model_and_environment_deploys,
    deleting_a_deployment_or_its_endpoint_while_it_starts_leaves_nothing_behind,
    an_endpoint_deleted_while_deployments_are_created_answers_no_500_and_leaves_nothing,
    max_queue_wait_ms_is_validated_and_a_request_waiting_longer_gets_503,
    logs_follow_prints_what_replicas_write_and_ends_with_the_deployment,
);

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

const SCORE_PY: &str = r#"
import json, os
from cairn.serving import Model

def init():
    global coef
    # A one-file model's path is the file itself (as in Azure ML).
    path = Model.get_model_path("lin")
    assert path == os.path.join(os.environ["AZUREML_MODEL_DIR"], "coef.json"), path
    with open(path) as f:
        coef = json.load(f)

def run(raw_data):
    rows = json.loads(raw_data)["data"]
    return [sum(w * x for w, x in zip(coef["w"], row)) + coef["b"] for row in rows]
"#;

/// Workspace `w`, environment `plain`, model `lin:1`, endpoint `ep` and a deployment folder with
/// `score.py` (its text given); returns the deployment YAML's path.
fn setup(s: &Server, score_py: &str) -> String {
    s.ok(&["workspace", "create", "w"]);
    let dir = s.tmp().join("spec");
    write_tree(
        &dir,
        &[
            ("env.yml", b"name: plain\npip: []\n"),
            ("model/coef.json", br#"{"w": [2.0, -1.0, 0.5], "b": 1.0}"#),
            ("ep.yml", b"name: lin-ep\nauth_mode: key\n"),
            ("src/score.py", score_py.as_bytes()),
            (
                "blue.yml",
                b"$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json\n\
                  name: blue\nendpoint_name: lin-ep\nmodel: azureml:lin:1\n\
                  code_configuration:\n  code: src\n  scoring_script: score.py\n\
                  environment: plain\ninstance_count: 2\ninstance_type: Standard_DS2_v2\n\
                  request_settings:\n  request_timeout_ms: 30000\n  max_concurrent_requests_per_instance: 4\n\
                  environment_variables:\n  FOO: bar\n",
            ),
        ],
    );
    let p = |f: &str| dir.join(f).display().to_string();
    s.ok(&["env", "create", "-f", &p("env.yml"), "-w", "w"]);
    s.ok(&["model", "register", "--name", "lin", "--path", &p("model"), "-w", "w"]);
    s.ok(&["endpoint", "create", "-f", &p("ep.yml"), "-w", "w"]);
    p("blue.yml")
}

async fn score(s: &Server, key: &str, body: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!("{}/endpoints/lin-ep/score", s.url))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn a_deployment_scores_survives_sigkill_and_holds_its_model_version(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    let file = setup(&s, SCORE_PY);
    // Unknown keys are refused by name before anything is uploaded or stored.
    let bad = s.tmp().join("spec/bad.yml");
    std::fs::write(&bad, std::fs::read_to_string(&file).unwrap() + "instance_cnt: 3\n").unwrap();
    let err = s.fails(&["deployment", "create", "-f", bad.to_str().unwrap(), "-w", "w"]);
    assert!(err.contains("instance_cnt"), "{err}");

    let out =
        s.cli(&["deployment", "create", "-f", &file, "--all-traffic", "--wait", "-w", "w", "-o", "json"]);
    assert!(out.status.success(), "{out:?}");
    let d = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(d["state"], "Healthy", "{d}");
    assert_eq!(d["model"], "lin:1");
    // --wait follows the states and the log on stderr; stdout holds the answer alone.
    let followed = String::from_utf8_lossy(&out.stderr);
    assert!(followed.contains("deployment lin-ep/blue: Creating"), "{followed}");
    assert!(followed.contains("deployment lin-ep/blue: Healthy"), "{followed}");
    let logged = s.ok(&["deployment", "logs", "lin-ep/blue", "-w", "w"]);
    let first = logged.lines().next().unwrap();
    assert!(followed.contains(first), "the log's first line {first:?} was not followed: {followed}");
    // A follower reads from where it was: the answer says the generation and the next offset.
    let logs_api = format!("{}/api/v1/workspaces/w/endpoints/lin-ep/deployments/blue/logs", s.url);
    let http = reqwest::Client::new();
    let r = http.get(&logs_api).bearer_auth(&s.token).send().await.unwrap();
    let header = |r: &reqwest::Response, h: &str| r.headers()[h].to_str().unwrap().to_string();
    let (generation, offset) = (header(&r, "x-cairn-log-generation"), header(&r, "x-cairn-log-offset"));
    assert_eq!(generation, "0");
    assert_eq!(offset.parse::<usize>().unwrap(), r.text().await.unwrap().len(), "the whole log, ASCII");
    let r = http
        .get(format!("{logs_api}?since={offset}&generation=0"))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!((header(&r, "x-cairn-log-offset"), r.text().await.unwrap()), (offset.clone(), String::new()));
    let r = http.get(format!("{logs_api}?since=5&generation=7")).bearer_auth(&s.token).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), logged, "another generation's offset: the whole log");
    let r = http.get(format!("{logs_api}?since=5&lines=2")).bearer_auth(&s.token).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let listed = json(&s.ok(&["deployment", "list", "--endpoint", "lin-ep", "-w", "w", "-o", "json"]));
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let ep = json(&s.ok(&["endpoint", "show", "lin-ep", "-w", "w", "-o", "json"]));
    assert_eq!(ep["traffic"]["blue"], 100);

    let keys = json(&s.ok(&["endpoint", "get-keys", "lin-ep", "-w", "w", "-o", "json"]));
    let key = keys["primary_key"].as_str().unwrap().to_string();
    // 2*1 - 1*2 + 0.5*4 + 1 = 3; 2*0 - 0 + 0 + 1 = 1
    let (status, body) = score(&s, &key, r#"{"data": [[1, 2, 4], [0, 0, 0]]}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body), serde_json::json!([3.0, 1.0]));
    let (status, body) = score(&s, "wrong-key", r#"{"data": [[1, 2, 4]]}"#).await;
    assert_eq!(status, 401, "{body}");
    // run() raising on a wrong shape is the script's error, and the replica survives it.
    let (status, _) = score(&s, &key, r#"{"rows": []}"#).await;
    assert!(status >= 400, "{status}");

    // The model version is in use: deleting it is refused.
    let err = s.fails(&["model", "delete", "lin:1", "-w", "w"]);
    assert!(err.contains("409") || err.to_lowercase().contains("in use") || err.contains("used"), "{err}");

    // SIGKILL every replica; the supervisor restarts them and later requests succeed.
    let pids = s.replica_pids();
    assert_eq!(pids.len(), 2, "{pids:?}");
    for pid in &pids {
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    let mut ok = false;
    for _ in 0..200 {
        let (status, body) = score(&s, &key, r#"{"data": [[1, 2, 4]]}"#).await;
        if status == 200 {
            assert_eq!(json(&body), serde_json::json!([3.0]));
            ok = true;
            break;
        }
        assert!([502, 503].contains(&status), "{status} {body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ok, "no successful score after the replicas were killed");
    let logs = s.ok(&["deployment", "logs", "lin-ep/blue", "-w", "w"]);
    assert!(logs.contains("restarting"), "{logs}");

    // Its environment cannot go while it is deployed (the replicas come back in it after a
    // restart), as its model version cannot.
    let err = s.fails(&["env", "delete", "plain@1", "-w", "w"]);
    assert!(err.contains("in use by deployment(s) lin-ep/blue") && err.contains("409"), "{err}");

    // Delete: traffic first, then the deployment; its model version and environment can then go.
    s.ok(&["endpoint", "update", "lin-ep", "--traffic", "", "-w", "w"]);
    s.ok(&["deployment", "delete", "lin-ep/blue", "-w", "w"]);
    assert!(s.replica_pids().is_empty());
    s.ok(&["model", "delete", "lin:1", "-w", "w"]);
    s.ok(&["env", "delete", "plain@1", "-w", "w"]);
}

async fn a_failing_init_fails_the_deployment_with_its_traceback(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    let file = setup(
        &s,
        "def init():\n    raise RuntimeError('no weights here')\n\ndef run(raw):\n    return raw\n",
    );
    let err = s.fails(&["deployment", "create", "-f", &file, "--all-traffic", "--wait", "-w", "w"]);
    assert!(err.contains("no weights here") && err.contains("Traceback"), "{err}");
    // --all-traffic moves traffic only to a Healthy deployment.
    assert!(err.contains("traffic was left as it was"), "{err}");
    let ep = json(&s.ok(&["endpoint", "show", "lin-ep", "-w", "w", "-o", "json"]));
    assert_eq!(ep["traffic"], serde_json::json!({}), "{ep}");
    s.ok(&["endpoint", "update", "lin-ep", "--traffic", "blue=100", "-w", "w"]);
    let d = json(&s.ok(&["deployment", "show", "lin-ep/blue", "-w", "w", "-o", "json"]));
    assert_eq!(d["state"], "Failed");
    assert!(d["reason"].as_str().unwrap().contains("RuntimeError: no weights here"), "{d}");
    let logs = s.ok(&["deployment", "logs", "lin-ep/blue", "-w", "w"]);
    assert!(logs.contains("RuntimeError: no weights here"), "{logs}");
    assert!(s.replica_pids().is_empty());
    // The last lines only (Azure's get-logs --lines), and the same through the endpoint.
    let last: Vec<&str> = logs.lines().collect();
    let tail = s.ok(&["deployment", "logs", "lin-ep/blue", "--lines", "2", "-w", "w"]);
    assert_eq!(tail.lines().collect::<Vec<_>>(), last[last.len() - 2..], "{tail}");
    assert_eq!(s.ok(&["endpoint", "logs", "lin-ep", "-w", "w"]), logs, "one deployment: its log as is");
    assert_eq!(s.ok(&["endpoint", "logs", "lin-ep", "-d", "blue", "-l", "2", "-w", "w"]), tail);
    let err = s.fails(&["deployment", "logs", "lin-ep/blue", "--lines", "0", "-w", "w"]);
    assert!(err.contains("lines 0: must be 1 to 100000"), "{err}");
    let err = s.fails(&["endpoint", "logs", "lin-ep", "-d", "nope", "-w", "w"]);
    assert!(err.contains("nope"), "{err}");
    // Scoring it is a failed dependency, not a 503 to retry: nothing serves until an update.
    let keys = json(&s.ok(&["endpoint", "get-keys", "lin-ep", "-w", "w", "-o", "json"]));
    let (status, body) = score(&s, keys["primary_key"].as_str().unwrap(), r#"{"data": [[1, 2, 4]]}"#).await;
    assert_eq!(status, 424, "{body}");
    let message = json(&body)["message"].as_str().unwrap().to_string();
    assert!(message.contains("deployment \"blue\" of endpoint \"lin-ep\" has failed"), "{message}");
    assert!(message.contains("the scoring script failed to import or its init() raised"), "{message}");
    assert!(message.contains("cairn deployment logs lin-ep/blue"), "{message}");
}

async fn a_hung_run_gets_504_and_deployments_come_back_after_a_restart(b: Backend) {
    let (s, db) = start_on(b, Opts::default()).await;
    let hanging = format!("{SCORE_PY}\n_run = run\ndef run(raw_data):\n    if 'hang' in raw_data:\n        import time; time.sleep(3600)\n    return _run(raw_data)\n");
    let file = setup(&s, &hanging);
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("request_timeout_ms: 30000", "request_timeout_ms: 500");
    std::fs::write(&file, text).unwrap();
    s.ok(&["deployment", "create", "-f", &file, "--all-traffic", "--wait", "-w", "w"]);
    let keys = json(&s.ok(&["endpoint", "get-keys", "lin-ep", "-w", "w", "-o", "json"]));
    let key = keys["primary_key"].as_str().unwrap().to_string();
    let (status, body) = score(&s, &key, r#"{"data": [[1, 2, 4]], "hang": 1}"#).await;
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("request_timeout_ms"), "{body}");

    // The server dies; its replicas go with it; a new server re-launches the deployment.
    let s = s.restart();
    let _keep = db;
    let mut last = (0, String::new());
    for _ in 0..300 {
        last = score(&s, &key, r#"{"data": [[1, 2, 4]]}"#).await;
        if last.0 == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(last.0, 200, "{}", last.1);
    assert_eq!(json(&last.1), serde_json::json!([3.0]));
    // One ready replica answers; Healthy needs both (the second may still be starting).
    let mut d = Value::Null;
    for _ in 0..100 {
        d = json(&s.ok(&["deployment", "show", "lin-ep/blue", "-w", "w", "-o", "json"]));
        if d["state"] == "Healthy" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(d["state"], "Healthy", "{d}");

    // Deleting the endpoint stops its deployments' replicas and releases the model version.
    s.ok(&["endpoint", "delete", "lin-ep", "-w", "w"]);
    assert!(s.replica_pids().is_empty());
    s.ok(&["model", "delete", "lin:1", "-w", "w"]);
}

/// The gateway's answers that need a running deployment; they do not depend on the store, so they
/// run on SQLite only.
async fn deleting_the_workspace_with_force_stops_its_replicas(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    let file = setup(&s, SCORE_PY);
    s.ok(&["deployment", "create", "-f", &file, "--all-traffic", "--wait", "-w", "w"]);
    let pids = s.replica_pids();
    assert_eq!(pids.len(), 2, "two replicas run");
    let err = s.fails(&["workspace", "delete", "w"]);
    assert!(err.contains("endpoints lin-ep") && err.contains("--force"), "{err}");
    s.ok(&["workspace", "delete", "w", "--force"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !s.replica_pids().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "replicas outlived their workspace: {:?}",
            s.replica_pids()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // The endpoint's URI is gone with it.
    let (status, _) = score(&s, "any-key", r#"{"data": [[1, 2, 3]]}"#).await;
    assert_eq!(status, 401, "an unknown endpoint answers like a wrong key");
}

/// Loads two models by name from Azure ML v1's several-model layout and answers with both.
const TWO_MODELS_PY: &str = r#"
import json, os, stat
from cairn.serving import Model

def init():
    global coef, scale, enc_version
    root = os.environ["AZUREML_MODEL_DIR"]
    # Several models: AZUREML_MODEL_DIR holds NAME/VERSION for each, and nothing else.
    assert sorted(os.listdir(root)) == ["enc", "lin"], os.listdir(root)
    with open(Model.get_model_path("lin")) as f:
        coef = json.load(f)
    path = Model.get_model_path("enc")
    assert os.stat(path).st_mode & 0o222 == 0, "model files are read-only"
    enc_version = int(os.path.basename(os.path.dirname(path)))
    assert path == os.path.join(root, "enc", str(enc_version), "scale.json"), path
    with open(path) as f:
        scale = json.load(f)
    try:
        Model.get_model_path("other")
        raise AssertionError("an absent model was found")
    except LookupError as e:
        # Exactly this generation's versions, never the next one an update brings beside it.
        assert str(e).endswith("(models deployed here: enc:%d, lin:1)" % enc_version), e

def run(raw_data):
    rows = json.loads(raw_data)["data"]
    y = [sum(w * x for w, x in zip(coef["w"], row)) + coef["b"] for row in rows]
    return {"y": [v * scale["s"] for v in y], "enc": enc_version}
"#;

/// `setup` plus models `enc:1` (scale 10) and `enc:2` (scale 100) and a two-model deployment YAML
/// of `lin:1` and `enc:ENC`; returns a function giving that YAML's path for a version of `enc`.
fn setup_two_models(s: &Server) -> impl Fn(u32) -> String + '_ {
    setup(s, TWO_MODELS_PY);
    let dir = s.tmp().join("spec");
    for (v, scale) in [(1, 10), (2, 100)] {
        let folder = dir.join(format!("enc{v}"));
        write_tree(&folder, &[("scale.json", format!(r#"{{"s": {scale}}}"#).as_bytes())]);
        s.ok(&[
            "model",
            "register",
            "--name",
            "enc",
            "--path",
            &folder.join("scale.json").display().to_string(),
            "-w",
            "w",
        ]);
    }
    move |enc: u32| {
        let f = dir.join(format!("two-{enc}.yml"));
        std::fs::write(
            &f,
            format!(
                "name: duo\nendpoint_name: lin-ep\nmodels:\n- azureml:lin:1\n- enc:{enc}\n\
                 code_configuration:\n  code: src\n  scoring_script: score.py\nenvironment: plain\n"
            ),
        )
        .unwrap();
        f.display().to_string()
    }
}

async fn a_deployment_of_two_models_loads_both_holds_both_and_an_update_swaps_one(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    let yaml = setup_two_models(&s);
    let d = json(&s.ok(&[
        "deployment",
        "create",
        "-f",
        &yaml(1),
        "--all-traffic",
        "--wait",
        "-w",
        "w",
        "-o",
        "json",
    ]));
    assert_eq!(d["state"], "Healthy", "{d}");
    assert_eq!(d["models"], serde_json::json!(["lin:1", "enc:1"]), "{d}");
    assert!(d["model"].is_null(), "one `model` only for one model: {d}");
    let listed = json(&s.ok(&["deployment", "list", "--endpoint", "lin-ep", "-w", "w", "-o", "json"]));
    assert_eq!(listed[0]["models"], serde_json::json!(["lin:1", "enc:1"]), "{listed}");
    let table = s.ok(&["deployment", "show", "lin-ep/duo", "-w", "w"]);
    assert!(table.contains("lin:1, enc:1"), "{table}");

    let keys = json(&s.ok(&["endpoint", "get-keys", "lin-ep", "-w", "w", "-o", "json"]));
    let key = keys["primary_key"].as_str().unwrap().to_string();
    // (2*1 - 1*2 + 0.5*4 + 1) * 10 = 30
    let (status, body) = score(&s, &key, r#"{"data": [[1, 2, 4]]}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body), serde_json::json!({"y": [30.0], "enc": 1}));

    // Both versions are held.
    for v in ["lin:1", "enc:1"] {
        let err = s.fails(&["model", "delete", v, "-w", "w"]);
        assert!(err.contains("in use by deployment \"lin-ep/duo\""), "named as users know it: {v}: {err}");
    }

    // The inference protocol's metadata answers for each model of the script deployment.
    let meta = |model: &'static str| {
        let (url, key) = (s.url.clone(), key.clone());
        async move {
            let r = reqwest::Client::new()
                .get(format!("{url}/endpoints/lin-ep/v2/models/{model}"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), json(&r.text().await.unwrap()))
        }
    };
    let (status, m) = meta("enc").await;
    assert_eq!(status, 200, "{m}");
    assert_eq!(
        (&m["name"], &m["versions"], &m["platform"]),
        (&"enc".into(), &serde_json::json!(["1"]), &"cairn_score_py".into())
    );
    assert_eq!((m["inputs"].clone(), m["outputs"].clone()), (serde_json::json!([]), serde_json::json!([])));
    let (status, m) = meta("lin").await;
    assert_eq!((status, &m["name"]), (200, &"lin".into()), "{m}");
    let (status, m) = meta("other").await;
    assert_eq!(status, 404, "{m}");
    assert!(m["error"].as_str().unwrap().contains("lin:1, enc:1 (duo)"), "{m}");

    // The studio lists both models with links.
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let login = studio_login(&http, &s.url, &s.token, "/").await;
    let cookie = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("cairn_session="))
        .expect("a session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page =
        http.get(format!("{}/w/w/endpoints/lin-ep", s.url)).header("cookie", cookie).send().await.unwrap();
    let page = page.text().await.unwrap();
    assert!(
        page.contains("href=\"/w/w/models/lin/1\"") && page.contains("href=\"/w/w/models/enc/1\""),
        "{page}"
    );

    // A patch that sets `model` beside the spec's `models` is refused, and changes nothing.
    let r = reqwest::Client::new()
        .patch(format!("{}/api/v1/workspaces/w/endpoints/lin-ep/deployments/duo", s.url))
        .bearer_auth(&s.token)
        .json(&serde_json::json!({"model": "lin:1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let message = json(&r.text().await.unwrap())["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("not both"), "{message}");
    let d = json(&s.ok(&["deployment", "show", "lin-ep/duo", "-w", "w", "-o", "json"]));
    assert_eq!((&d["state"], &d["generation"]), (&"Healthy".into(), &0.into()), "{d}");

    // An update swapping enc:1 for enc:2 rolls the replicas and releases enc:1 only.
    let d = json(&s.ok(&["deployment", "update", "-f", &yaml(2), "--wait", "-w", "w", "-o", "json"]));
    assert_eq!(d["models"], serde_json::json!(["lin:1", "enc:2"]), "{d}");
    assert_eq!(d["generation"], 1, "{d}");
    let (status, body) = score(&s, &key, r#"{"data": [[1, 2, 4]]}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body), serde_json::json!({"y": [300.0], "enc": 2}));
    s.ok(&["model", "delete", "enc:1", "-w", "w"]);
    for v in ["lin:1", "enc:2"] {
        let err = s.fails(&["model", "delete", v, "-w", "w"]);
        assert!(err.contains("in use by deployment"), "{v}: {err}");
    }

    // Deleting the deployment releases both.
    s.ok(&["endpoint", "update", "lin-ep", "--traffic", "", "-w", "w"]);
    s.ok(&["deployment", "delete", "lin-ep/duo", "-w", "w"]);
    assert!(s.replica_pids().is_empty());
    s.ok(&["model", "delete", "enc:2", "-w", "w"]);
    s.ok(&["model", "delete", "lin:1", "-w", "w"]);
}

/// An update swapping one of two models, cut short by a restart: the recorded generation comes
/// back with both its versions still held, and only the version the update had reserved is freed.
async fn a_restart_during_an_update_of_two_models_keeps_both_recorded_versions(b: Backend) {
    let (s, db) = start_on(b, Opts::default()).await;
    let yaml = setup_two_models(&s);
    let (first, second) = (yaml(1), yaml(2));
    drop(yaml);
    let d = json(&s.ok(&[
        "deployment",
        "create",
        "-f",
        &first,
        "--all-traffic",
        "--wait",
        "-w",
        "w",
        "-o",
        "json",
    ]));
    let deployment_dir = s.data_dir.join("deployments").join(d["id"].as_str().unwrap());
    let key = json(&s.ok(&["endpoint", "get-keys", "lin-ep", "-w", "w", "-o", "json"]))["primary_key"]
        .as_str()
        .unwrap()
        .to_string();
    // Generation 1 (enc:2) never gets ready: its init() sleeps.
    let slow = s.tmp().join("spec/slow");
    write_tree(
        &slow,
        &[("score.py", b"import time\n\ndef init():\n    time.sleep(60)\n\ndef run(raw):\n    return raw\n")],
    );
    let update =
        std::fs::read_to_string(&second).unwrap().replace("code: src", &format!("code: {}", slow.display()));
    let update_file = s.tmp().join("spec/slow.yml");
    std::fs::write(&update_file, update).unwrap();
    let d =
        json(&s.ok(&["deployment", "update", "-f", update_file.to_str().unwrap(), "-w", "w", "-o", "json"]));
    assert_eq!(d["state"], "Updating", "{d}");
    let gen1_log = deployment_dir.join("logs/generation-1.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_to_string(&gen1_log).unwrap_or_default().contains("generation 1: starting") {
        assert!(std::time::Instant::now() < deadline, "generation 1 never started:\n{}", s.log());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let err = s.fails(&["model", "delete", "enc:2", "-w", "w"]);
    assert!(err.contains("in use by deployment"), "the update holds enc:2: {err}");

    let s = s.restart();
    let _keep = db;
    let mut last = (0, String::new());
    for _ in 0..600 {
        last = score(&s, &key, r#"{"data": [[1, 2, 4]]}"#).await;
        if last.0 == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(last.0, 200, "{}", last.1);
    assert_eq!(json(&last.1), serde_json::json!({"y": [30.0], "enc": 1}));
    let d = json(&s.ok(&["deployment", "show", "lin-ep/duo", "-w", "w", "-o", "json"]));
    assert_eq!((&d["generation"], &d["models"]), (&0.into(), &serde_json::json!(["lin:1", "enc:1"])), "{d}");
    s.ok(&["model", "delete", "enc:2", "-w", "w"]);
    for v in ["lin:1", "enc:1"] {
        let err = s.fails(&["model", "delete", v, "-w", "w"]);
        assert!(err.contains("in use by deployment"), "{v} still serves: {err}");
    }
    assert!(!deployment_dir.join("gen/1").exists(), "the abandoned generation's files stay");
    assert!(!deployment_dir.join("model/enc/2").exists(), "the abandoned version's files stay");
    // The sleeping replica of the abandoned generation outlived the killed server; end it.
    for pid in s.replica_pids() {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if String::from_utf8_lossy(&environ).contains("/gen/1/") {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

async fn bad_model_lists_are_refused_and_write_nothing(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    let yaml = setup_two_models(&s);
    let file = yaml(1);
    let req: Value = serde_yaml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    // Models are checked before the code snapshot, so none is uploaded.
    let post = |spec: Value| {
        let (url, token) = (s.url.clone(), s.token.clone());
        async move {
            let r = reqwest::Client::new()
                .post(format!("{url}/api/v1/workspaces/w/endpoints/lin-ep/deployments"))
                .bearer_auth(token)
                .json(&spec)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let with = |models: Value| {
        let mut spec = req.clone();
        spec["models"] = models;
        spec["code_configuration"]["code"] = "none-uploaded".into();
        spec
    };
    let many: Vec<String> = (0..33).map(|i| format!("m{i}:1")).collect();
    let mut both = with(serde_json::json!(["lin:1"]));
    both["model"] = "enc:1".into();
    let mut no_code = with(serde_json::json!(["lin:1", "enc:1"]));
    no_code.as_object_mut().unwrap().remove("code_configuration");
    let cases = [
        (both, 400, "not both"),
        (with(serde_json::json!([])), 400, "models is empty"),
        (with(serde_json::json!(["lin:1", "enc:1", "azureml:enc:2"])), 400, "model \"enc\" twice"),
        (with(serde_json::json!(many)), 400, "at most 32"),
        (with(serde_json::json!(["lin:1", "enc"])), 400, "expected NAME:VERSION"),
        (no_code, 400, "without code_configuration"),
        (with(serde_json::json!(["lin:1", "enc:9"])), 404, "enc:9"),
        (with(serde_json::json!(["lin:1", "ghost:1"])), 404, "ghost"),
    ];
    for (spec, status, message) in cases {
        let (got, body) = post(spec.clone()).await;
        assert_eq!(got, status, "{spec}: {body}");
        let said = json(&body)["error"]["message"].as_str().unwrap_or_default().to_string();
        assert!(said.contains(message), "{spec}: {body}");
    }
    // Nothing was written: no deployment, and every version can go.
    let listed = json(&s.ok(&["deployment", "list", "--endpoint", "lin-ep", "-w", "w", "-o", "json"]));
    assert_eq!(listed, serde_json::json!([]));
    for v in ["lin:1", "enc:1", "enc:2"] {
        s.ok(&["model", "delete", v, "-w", "w"]);
    }
}

mod gateway {
    use super::*;
    use std::time::{Duration, Instant};

    /// Answers its deployment's colour (an environment variable) and its pid; sleeps when asked.
    const COLOR_PY: &str = r#"
import json, os, time

def init():
    pass

def run(raw_data):
    req = json.loads(raw_data)
    time.sleep(req.get("sleep", 0))
    return {"color": os.environ["COLOR"], "pid": os.getpid()}
"#;

    fn deployment(s: &Server, name: &str, instances: u32, per_instance: u32) -> String {
        let f = s.tmp().join(format!("spec/{name}.yml"));
        std::fs::write(
            &f,
            format!(
                "name: {name}\nendpoint_name: lin-ep\nmodel: azureml:lin:1\n\
                 code_configuration:\n  code: src\n  scoring_script: score.py\n\
                 environment: plain\ninstance_count: {instances}\n\
                 request_settings:\n  request_timeout_ms: 30000\n  max_concurrent_requests_per_instance: {per_instance}\n\
                 environment_variables:\n  COLOR: {name}\n"
            ),
        )
        .unwrap();
        f.display().to_string()
    }

    async fn post(s: &Server, key: &str, body: &str, pin: Option<&str>) -> reqwest::Response {
        let mut r = reqwest::Client::new()
            .post(format!("{}/endpoints/lin-ep/score", s.url))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(d) = pin {
            r = r.header("azureml-model-deployment", d);
        }
        r.send().await.unwrap()
    }

    fn key_of(s: &Server) -> String {
        let keys = json(&s.ok(&["endpoint", "get-keys", "lin-ep", "-w", "w", "-o", "json"]));
        keys["primary_key"].as_str().unwrap().to_string()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn past_the_concurrency_limit_is_429_and_a_replica_dying_mid_request_is_502() {
        let s = Server::start();
        setup(&s, COLOR_PY);
        let file = deployment(&s, "blue", 1, 1);
        s.ok(&["deployment", "create", "-f", &file, "--all-traffic", "--wait", "-w", "w"]);
        let key = key_of(&s);

        // One slot (1 × 1): a second request while the first runs is refused at once.
        let (s2, k2) = (s.url.clone(), key.clone());
        let slow = tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(format!("{s2}/endpoints/lin-ep/score"))
                .bearer_auth(k2)
                .body(r#"{"sleep": 2}"#)
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        });
        tokio::time::sleep(Duration::from_millis(700)).await;
        let r = post(&s, &key, "{}", None).await;
        assert_eq!(r.status().as_u16(), 429);
        assert_eq!(
            r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string()).as_deref(),
            Some("10")
        );
        let body = r.text().await.unwrap();
        assert!(body.contains("limit of 1 concurrent requests"), "{body}");
        assert_eq!(slow.await.unwrap(), 200, "the admitted request finishes");
        assert_eq!(post(&s, &key, "{}", None).await.status().as_u16(), 200, "the slot is free again");

        // The replica dies while it holds a request: that request gets 502 at once, later ones 200.
        let (s2, k2) = (s.url.clone(), key.clone());
        let doomed = tokio::spawn(async move {
            let sent = Instant::now();
            let r = reqwest::Client::new()
                .post(format!("{s2}/endpoints/lin-ep/score"))
                .bearer_auth(k2)
                .body(r#"{"sleep": 20}"#)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap(), sent.elapsed())
        });
        tokio::time::sleep(Duration::from_millis(700)).await;
        let pids = s.replica_pids();
        assert_eq!(pids.len(), 1);
        unsafe { libc::kill(pids[0], libc::SIGKILL) };
        let (status, body, took) = doomed.await.unwrap();
        assert_eq!(status, 502, "{body}");
        assert!(body.contains("failed mid-request"), "{body}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut status = 0;
        while status != 200 && Instant::now() < deadline {
            status = post(&s, &key, "{}", None).await.status().as_u16();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(status, 200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_90_10_split_holds_over_1000_requests_and_the_header_pins_a_deployment() {
        let s = Server::start();
        setup(&s, COLOR_PY);
        for name in ["blue", "green"] {
            let file = deployment(&s, name, 1, 16);
            s.ok(&["deployment", "create", "-f", &file, "--wait", "-w", "w"]);
        }
        s.ok(&["endpoint", "update", "lin-ep", "--traffic", "blue=90 green=10", "-w", "w"]);
        let key = key_of(&s);

        let client = reqwest::Client::new();
        let url = format!("{}/endpoints/lin-ep/score", s.url);
        // 8 clients at a time: below either deployment's limit of 16, so none is refused.
        use futures::StreamExt;
        let answers: Vec<String> = futures::stream::iter(0..1000)
            .map(|_| {
                let (client, url, key) = (client.clone(), url.clone(), key.clone());
                async move {
                    let r = client.post(url).bearer_auth(key).body("{}").send().await.unwrap();
                    assert_eq!(r.status().as_u16(), 200);
                    json(&r.text().await.unwrap())["color"].as_str().unwrap().to_string()
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        let green = answers.iter().filter(|c| *c == "green").count();
        let blue = answers.iter().filter(|c| *c == "blue").count();
        assert_eq!(green + blue, 1000);
        // Binomial(1000, 0.1): sd ≈ 9.5 requests, so ±40 is over 4 sd.
        eprintln!("traffic 90/10 over 1000 requests: blue {blue}, green {green}");
        assert!((60..=140).contains(&green), "green took {green} of 1000 (expected 100 ± 40)");

        // Mirror traffic: half of blue's requests are also sent to green, whose answers are
        // dropped (callers all get blue's); pinned requests are not mirrored.
        s.ok(&["endpoint", "update", "lin-ep", "--traffic", "blue=100", "-w", "w"]);
        let mirror = s.tmp().join("mirror.yml");
        std::fs::write(&mirror, "name: lin-ep\nmirror_traffic:\n  green: 50\n").unwrap();
        s.ok(&["endpoint", "update", "-f", mirror.to_str().unwrap(), "-w", "w"]);
        let green_count = |metrics: &str| -> u64 {
            metrics
                .lines()
                .filter(|l| {
                    l.starts_with("cairn_endpoint_requests_total{") && l.contains("deployment=\"green\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum()
        };
        let metrics = || async {
            let r = reqwest::Client::new()
                .get(format!("{}/metrics", s.url))
                .bearer_auth(&s.token)
                .send()
                .await
                .unwrap();
            r.text().await.unwrap()
        };
        let before = green_count(&metrics().await);
        for _ in 0..200 {
            let r = post(&s, &key, "{}", None).await;
            assert_eq!(r.status().as_u16(), 200);
            assert_eq!(json(&r.text().await.unwrap())["color"], "blue");
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let mirrored = green_count(&metrics().await) - before;
        // Binomial(200, 0.5): sd ≈ 7 requests, so ±40 is over 5 sd.
        assert!(
            (60..=140).contains(&mirrored),
            "green got {mirrored} mirrored requests of 200 (expected 100 ± 40)"
        );
        std::fs::write(&mirror, "name: lin-ep\nmirror_traffic: {}\n").unwrap();
        s.ok(&["endpoint", "update", "-f", mirror.to_str().unwrap(), "-w", "w"]);

        // The header pins a deployment whatever the split says, even one with 0 %.
        for _ in 0..20 {
            let r = post(&s, &key, "{}", Some("green")).await;
            assert_eq!(r.status().as_u16(), 200);
            assert_eq!(json(&r.text().await.unwrap())["color"], "green");
        }
        let r = post(&s, &key, "{}", Some("red")).await;
        assert_eq!(r.status().as_u16(), 404);
        let message = json(&r.text().await.unwrap())["message"].as_str().unwrap().to_string();
        assert!(message.contains("no deployment \"red\""), "{message}");
    }
}

/// Azure ML's own sample shape: `model: {path: …}` and `environment: {conda_file: …, image: …}`
/// written in the deployment. The CLI registers both (named ENDPOINT-DEPLOYMENT), the image is
/// named in a note, and running `update` with unchanged files registers nothing new.
async fn azures_sample_yaml_with_an_inline_model_and_environment_deploys(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    s.ok(&["workspace", "create", "w"]);
    let dir = s.tmp().join("sample");
    let score_py = SCORE_PY.replace("Model.get_model_path(\"lin\")", "Model.get_model_path(\"lin-ep-blue\")");
    write_tree(
        &dir,
        &[
            ("model-1/model/coef.json", br#"{"w": [2.0, -1.0, 0.5], "b": 1.0}"#),
            ("model-1/onlinescoring/score.py", score_py.as_bytes()),
            (
                "model-1/environment/conda.yaml",
                b"name: model-env\nchannels: [conda-forge]\ndependencies:\n  - pip\n  - pip: []\n",
            ),
            ("endpoint.yml", b"name: lin-ep\nauth_mode: key\n"),
            (
                "deployment/blue-deployment.yml",
                b"$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json\n\
                  name: blue\nendpoint_name: lin-ep\nmodel:\n  path: ../model-1/model/\n\
                  code_configuration:\n  code: ../model-1/onlinescoring/\n  scoring_script: score.py\n\
                  environment:\n  conda_file: ../model-1/environment/conda.yaml\n\
                  \x20 image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest\n\
                  instance_type: Standard_DS3_v2\ninstance_count: 1\n\
                  app_insights_enabled: true\nscale_settings:\n  type: default\n\
                  tags: {version: 2, team: wine}\nproperties: {owner: ml}\n\
                  environment_variables: {WORKER_COUNT: 1, VERBOSE: true}\n",
            ),
        ],
    );
    let p = |f: &str| dir.join(f).display().to_string();
    s.ok(&["endpoint", "create", "-f", &p("endpoint.yml"), "-w", "w"]);
    let out = s.cli(&[
        "deployment",
        "create",
        "-f",
        &p("deployment/blue-deployment.yml"),
        "--all-traffic",
        "--wait",
        "-w",
        "w",
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let d = json(&stdout);
    assert_eq!((d["state"].as_str(), d["model"].as_str()), (Some("Healthy"), Some("lin-ep-blue:1")), "{d}");
    assert_eq!(d["spec"]["environment"], "lin-ep-blue:1", "{d}");
    // Numbers and booleans in tags and variables are their text, as Azure's files mean them.
    assert_eq!(d["spec"]["tags"], serde_json::json!({"version": "2", "team": "wine"}), "{d}");
    assert_eq!(d["spec"]["properties"], serde_json::json!({"owner": "ml"}), "{d}");
    assert_eq!(d["spec"]["environment_variables"]["VERBOSE"], "true", "{d}");
    assert!(stderr.contains("openmpi4.1.0") && stderr.contains("not used"), "{stderr}");
    assert!(stderr.contains("registered model lin-ep-blue:1"), "{stderr}");
    assert!(!stderr.contains("is not a size"), "Standard_DS3_v2 is shipped: {stderr}");
    assert!(
        stderr.contains("app_insights_enabled is not used") && stderr.contains("scale_settings"),
        "{stderr}"
    );
    let keys = json(&s.ok(&["endpoint", "get-keys", "lin-ep", "-w", "w", "-o", "json"]));
    let (status, body) = score(&s, keys["primary_key"].as_str().unwrap(), r#"{"data": [[1, 2, 4]]}"#).await;
    assert_eq!((status, json(&body)), (200, serde_json::json!([3.0])), "{body}");

    // The same files again: no new model or environment version.
    let out =
        s.cli(&["deployment", "update", "-f", &p("deployment/blue-deployment.yml"), "--wait", "-w", "w"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("registered"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let versions = json(&s.ok(&["model", "show", "lin-ep-blue", "-w", "w", "-o", "json"]));
    assert_eq!(versions["model"]["latest_version"], 1, "{versions}");
    // Only the tags change: stored, the replicas keep running (same generation).
    let text = std::fs::read_to_string(dir.join("deployment/blue-deployment.yml")).unwrap();
    let retagged = dir.join("deployment/retagged.yml");
    std::fs::write(&retagged, text.replace("version: 2", "version: 3")).unwrap();
    let out = s.ok(&[
        "deployment",
        "update",
        "-f",
        &retagged.display().to_string(),
        "--wait",
        "-w",
        "w",
        "-o",
        "json",
    ]);
    let d = json(&out);
    assert_eq!(
        (d["spec"]["tags"]["version"].as_str(), d["generation"].as_i64()),
        (Some("3"), Some(0)),
        "{d}"
    );
    let shown = s.ok(&["deployment", "show", "lin-ep/blue", "-w", "w"]);
    assert!(shown.contains("team=wine") && shown.contains("version=3"), "{shown}");
    // A changed model file is a new version.
    std::fs::write(dir.join("model-1/model/coef.json"), br#"{"w": [0.0, 0.0, 0.0], "b": 7.0}"#).unwrap();
    let out =
        s.cli(&["deployment", "update", "-f", &p("deployment/blue-deployment.yml"), "--wait", "-w", "w"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("registered model lin-ep-blue:2"), "{out:?}");
    let (status, body) = score(&s, keys["primary_key"].as_str().unwrap(), r#"{"data": [[1, 2, 4]]}"#).await;
    assert_eq!((status, json(&body)), (200, serde_json::json!([7.0])), "{body}");

    // An inline model whose folder is missing says so, and nothing is deployed.
    let bad = dir.join("deployment/bad.yml");
    let text = std::fs::read_to_string(dir.join("deployment/blue-deployment.yml")).unwrap();
    std::fs::write(&bad, text.replace("name: blue", "name: green").replace("model-1/model/", "nowhere/"))
        .unwrap();
    let err = s.fails(&["deployment", "create", "-f", bad.to_str().unwrap(), "-w", "w"]);
    assert!(err.contains("model") && err.contains("nowhere"), "{err}");
    let listed = json(&s.ok(&["deployment", "list", "--endpoint", "lin-ep", "-w", "w", "-o", "json"]));
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");

    // A size Cairn does not have is accepted (Azure has many more), and said at once and in the log.
    let gpu = dir.join("deployment/gpu.yml");
    std::fs::write(
        &gpu,
        // blue's model, which score.py looks up by name
        text.replace("name: blue", "name: green")
            .replace("model:\n  path: ../model-1/model/\n", "model: lin-ep-blue:2\n")
            .replace("Standard_DS3_v2", "Standard_NC6s_v3"),
    )
    .unwrap();
    let out = s.cli(&["deployment", "create", "-f", &gpu.display().to_string(), "--wait", "-w", "w"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("instance_type Standard_NC6s_v3 is not a size of this workspace")
            && stderr.contains("no thread or memory limits"),
        "{stderr}"
    );
    let log = s.ok(&["deployment", "logs", "lin-ep/green", "-w", "w"]);
    assert!(
        log.contains("instance_type Standard_NC6s_v3 is not a known size: no per-replica limits"),
        "{log}"
    );
    s.ok(&["deployment", "delete", "lin-ep/green", "-w", "w"]);
}

/// Watches for `for_how_long`: no replica of the server runs and deployment `id`'s folder does not
/// come back (a start that outlived its delete would make both).
fn assert_nothing_comes_back(s: &Server, id: &str, for_how_long: std::time::Duration) {
    let folder = s.data_dir.join("deployments").join(id);
    let until = std::time::Instant::now() + for_how_long;
    while std::time::Instant::now() < until {
        assert_eq!(s.replica_pids(), Vec::<i32>::new(), "a replica started after its deployment was deleted");
        assert!(!folder.exists(), "{} came back after the delete", folder.display());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A deployment deleted while it starts (its new environment still being built, or its replicas
/// starting) leaves no replica, no folder and no model-version use behind; the same when its
/// endpoint is deleted.
async fn deleting_a_deployment_or_its_endpoint_while_it_starts_leaves_nothing_behind(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    let file = setup(&s, SCORE_PY);
    let dir = s.tmp().join("spec");
    let yaml = std::fs::read_to_string(&file).unwrap();
    for (case, delay_ms) in [("deployment", 0), ("endpoint", 0), ("deployment", 700), ("endpoint", 700)] {
        // A new environment each time: the start spends its first moments building it.
        let env_name = format!("fresh-{case}-{delay_ms}");
        let env_file = dir.join(format!("{env_name}.yml"));
        std::fs::write(&env_file, format!("name: {env_name}\npip: []\nvariables:\n  CASE: {env_name}\n"))
            .unwrap();
        s.ok(&["env", "create", "-f", env_file.to_str().unwrap(), "-w", "w"]);
        let spec = dir.join(format!("{env_name}-blue.yml"));
        std::fs::write(&spec, yaml.replace("environment: plain", &format!("environment: {env_name}")))
            .unwrap();
        if !s.cli(&["endpoint", "show", "lin-ep", "-w", "w"]).status.success() {
            s.ok(&["endpoint", "create", "-f", dir.join("ep.yml").to_str().unwrap(), "-w", "w"]);
        }
        let d = json(&s.ok(&["deployment", "create", "-f", spec.to_str().unwrap(), "-w", "w", "-o", "json"]));
        assert_eq!(d["state"], "Creating", "{d}");
        let id = d["id"].as_str().unwrap().to_string();
        tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
        match case {
            "deployment" => s.ok(&["deployment", "delete", "lin-ep/blue", "-w", "w"]),
            _ => s.ok(&["endpoint", "delete", "lin-ep", "-w", "w"]),
        };
        let (status, body) = s.get("/api/v1/workspaces/w/endpoints/lin-ep/deployments/blue").await;
        assert_eq!(status, 404, "{case} after {delay_ms} ms: {body}");
        assert_nothing_comes_back(&s, &id, std::time::Duration::from_secs(4));
    }
    // No use of lin:1 was left behind: it can be deleted.
    s.ok(&["model", "delete", "lin:1", "-w", "w"]);
    assert!(!s.log().contains("panicked"), "{}", s.log());
}

/// Deployments created while their endpoint is deleted: each create is either done before the
/// delete (and deleted with the endpoint) or refused with 404 (the endpoint is gone), never a 500;
/// afterwards no replica, no folder and no model-version use remain.
async fn an_endpoint_deleted_while_deployments_are_created_answers_no_500_and_leaves_nothing(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    let file = setup(&s, SCORE_PY);
    let dir = s.tmp().join("spec");
    // The code snapshot the deployments use, uploaded once (as `deployment create` does).
    let created = json(&s.ok(&["deployment", "create", "-f", &file, "-w", "w", "-o", "json"]));
    let code = created["spec"]["code_configuration"]["code"].as_str().unwrap().to_string();
    s.ok(&["deployment", "delete", "lin-ep/blue", "-w", "w"]);
    let http = reqwest::Client::new();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for round in 0..6 {
        if round > 0 {
            s.ok(&["endpoint", "create", "-f", dir.join("ep.yml").to_str().unwrap(), "-w", "w"]);
        }
        let creates: Vec<_> = (0..4)
            .map(|i| {
                let (http, url, token, code) = (http.clone(), s.url.clone(), s.token.clone(), code.clone());
                tokio::spawn(async move {
                    let body = serde_json::json!({
                        "name": format!("d{i}-r{round}"),
                        "model": "lin:1",
                        "code_configuration": {"code": code, "scoring_script": "score.py"},
                        "environment": "plain",
                        "instance_count": 1,
                    });
                    let r = http
                        .post(format!("{url}/api/v1/workspaces/w/endpoints/lin-ep/deployments"))
                        .bearer_auth(token)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    (r.status().as_u16(), r.text().await.unwrap())
                })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(round * 5)).await;
        let (status, body) =
            s.call(reqwest::Method::DELETE, "/api/v1/workspaces/w/endpoints/lin-ep", None).await;
        assert_eq!(status, 204, "{body}");
        for c in creates {
            let (status, body) = c.await.unwrap();
            assert!(
                matches!(status, 201 | 404 | 409),
                "a create beside the endpoint's delete: {status} {body}"
            );
            if status == 404 {
                assert!(body.contains("endpoint") && body.contains("lin-ep"), "{body}");
            }
            *statuses.entry(status).or_default() += 1;
        }
    }
    eprintln!("creates beside an endpoint delete, by status: {statuses:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while !s.replica_pids().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_nothing_comes_back(&s, "none", std::time::Duration::from_secs(3));
    let left: Vec<_> = std::fs::read_dir(s.data_dir.join("deployments"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "deployment folders left: {left:?}");
    s.ok(&["model", "delete", "lin:1", "-w", "w"]);
}

const SLOW_PY: &str = r#"
import json, time

def init():
    pass

def run(raw_data):
    time.sleep(json.loads(raw_data).get("sleep", 0))
    return "done"
"#;

/// max_queue_wait_ms is checked (1 to request_timeout_ms, named in the message), and a request
/// that waits longer than it for a worker gets 503 with Retry-After while the busy worker finishes
/// its own request.
async fn max_queue_wait_ms_is_validated_and_a_request_waiting_longer_gets_503(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    let file = setup(&s, SLOW_PY);
    let yaml = std::fs::read_to_string(&file)
        .unwrap()
        .replace("instance_count: 2", "instance_count: 1")
        .replace("request_timeout_ms: 30000", "request_timeout_ms: 10000");
    let dir = s.tmp().join("spec");
    for (wait, rule) in [
        ("0", "must be 1 to request_timeout_ms (10000)"),
        ("10001", "must be 1 to request_timeout_ms (10000)"),
        ("-5", "must be 1"),
    ] {
        let bad = dir.join(format!("bad-{wait}.yml"));
        std::fs::write(
            &bad,
            yaml.replace(
                "request_timeout_ms: 10000",
                &format!("request_timeout_ms: 10000\n  max_queue_wait_ms: {wait}"),
            ),
        )
        .unwrap();
        let err = s.fails(&["deployment", "create", "-f", bad.to_str().unwrap(), "-w", "w"]);
        assert!(err.contains("max_queue_wait_ms") && err.contains(rule), "{wait}: {err}");
    }
    let (status, _) = s.get("/api/v1/workspaces/w/endpoints/lin-ep/deployments/blue").await;
    assert_eq!(status, 404, "a refused spec stores nothing");

    let good = dir.join("good.yml");
    std::fs::write(
        &good,
        yaml.replace("request_timeout_ms: 10000", "request_timeout_ms: 10000\n  max_queue_wait_ms: 300"),
    )
    .unwrap();
    let d = json(&s.ok(&[
        "deployment",
        "create",
        "-f",
        good.to_str().unwrap(),
        "--all-traffic",
        "--wait",
        "-w",
        "w",
        "-o",
        "json",
    ]));
    assert_eq!(d["spec"]["request_settings"]["max_queue_wait_ms"], 300, "{d}");
    let keys = json(&s.ok(&["endpoint", "get-keys", "lin-ep", "-w", "w", "-o", "json"]));
    let key = keys["primary_key"].as_str().unwrap().to_string();

    // One worker: a 2 s request holds it; the next waits in the queue and gives up after 300 ms.
    let busy = {
        let (url, key) = (s.url.clone(), key.clone());
        tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(format!("{url}/endpoints/lin-ep/score"))
                .bearer_auth(key)
                .body(r#"{"sleep": 2}"#)
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let r = reqwest::Client::new()
        .post(format!("{}/endpoints/lin-ep/score", s.url))
        .bearer_auth(&key)
        .body(r#"{"sleep": 0}"#)
        .send()
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().contains_key("retry-after"), "{:?}", r.headers());
    let body = r.text().await.unwrap();
    assert!(body.contains("max_queue_wait_ms (300 ms)"), "{body}");
    assert!(waited >= std::time::Duration::from_millis(250), "gave up after {waited:?}, before its 300 ms");
    assert!(
        waited < std::time::Duration::from_millis(1500),
        "waited {waited:?}: past max_queue_wait_ms, until the worker was free"
    );
    assert_eq!(busy.await.unwrap(), 200, "the request that held the worker finishes");
    // A free worker answers at once again.
    let (status, body) = score(&s, &key, r#"{"sleep": 0}"#).await;
    assert!(status == 200 && body.contains("done"), "{status} {body}");
}

const TALKING_PY: &str = r#"
import json, sys

def init():
    pass

def run(raw_data):
    sys.stderr.write("scoring %s\n" % json.loads(raw_data)["tag"])
    sys.stderr.flush()
    return "ok"
"#;

/// `deployment logs --follow` prints the tail, then what the replicas write as they write it, and
/// ends (rc 0) when the deployment is deleted.
async fn logs_follow_prints_what_replicas_write_and_ends_with_the_deployment(b: Backend) {
    use std::io::BufRead;
    let (s, _db) = start_on(b, Opts::default()).await;
    let file = setup(&s, TALKING_PY);
    s.ok(&["deployment", "create", "-f", &file, "--wait", "-w", "w"]);
    let keys = json(&s.ok(&["endpoint", "get-keys", "lin-ep", "-w", "w", "-o", "json"]));
    let key = keys["primary_key"].as_str().unwrap().to_string();
    let mut child = s
        .cmd()
        .args(["deployment", "logs", "lin-ep/blue", "--follow", "--lines", "3", "-w", "w"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait_for = |needle: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        let mut seen = Vec::new();
        while std::time::Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
                if line.contains(needle) {
                    return seen;
                }
                seen.push(line);
            }
        }
        panic!("{needle:?} was not followed; printed: {seen:?}");
    };
    // The tail first: the last of the 3 lines is the readiness line written before we started.
    wait_for("Healthy");
    for tag in ["first-marker", "second-marker"] {
        let r = reqwest::Client::new()
            .post(format!("{}/endpoints/lin-ep/score", s.url))
            .bearer_auth(&key)
            .header("azureml-model-deployment", "blue")
            .body(format!(r#"{{"tag": "{tag}"}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let between = wait_for(&format!("scoring {tag}"));
        assert!(between.iter().all(|l| !l.contains("scoring")), "a line printed twice: {between:?}");
    }
    s.ok(&["deployment", "delete", "lin-ep/blue", "-w", "w"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("logs --follow outlived its deployment");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success() && err.contains("is gone"), "{status:?} {err}");
}
