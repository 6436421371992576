//! Deployment updates and probes with real processes: a rolling replacement under continuous load
//! from several clients (nothing fails, answers switch from the old code and model to the new),
//! a failing new generation that leaves the old one serving, the current generation coming back
//! after a restart, a restart in the middle of an update (the update is abandoned, its model
//! version released), scaling that keeps the running replicas, and liveness/readiness probes
//! against a replica frozen with SIGSTOP.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A score.py answering its version (a constant in the code), the model's bias and its pid.
fn score_py(version: &str) -> String {
    format!(
        r#"
import json, os
from cairn.serving import Model

def init():
    global coef
    with open(Model.get_model_path("lin")) as f:
        coef = json.load(f)

def run(raw_data):
    return {{"version": "{version}", "b": coef["b"], "pid": os.getpid()}}
"#
    )
}

const BROKEN_PY: &str = "def init():\n    raise RuntimeError('broken v3')\n\ndef run(raw):\n    return raw\n";

/// A deployment YAML for `blue` on `lin-ep`.
fn deployment_yaml(code: &str, model: &str, instances: u32, extra: &str) -> String {
    format!(
        "name: blue\nendpoint_name: lin-ep\nmodel: azureml:{model}\n\
         code_configuration:\n  code: {code}\n  scoring_script: score.py\n\
         environment: plain\ninstance_count: {instances}\n\
         request_settings:\n  request_timeout_ms: 30000\n  max_concurrent_requests_per_instance: 8\n{extra}"
    )
}

/// Workspace `w`, environment `plain`, models `lin:1` (b = 1) and `lin:2` (b = 2), endpoint
/// `lin-ep`, code folders `v1`, `v2` and `broken`; returns the spec folder.
fn setup(s: &Server) -> std::path::PathBuf {
    s.ok(&["workspace", "create", "w"]);
    let dir = s.tmp().join("spec");
    write_tree(
        &dir,
        &[
            ("env.yml", b"name: plain\npip: []\n"),
            ("model1/coef.json", br#"{"b": 1}"#),
            ("model2/coef.json", br#"{"b": 2}"#),
            ("ep.yml", b"name: lin-ep\nauth_mode: key\n"),
            ("v1/score.py", score_py("v1").as_bytes()),
            ("v2/score.py", score_py("v2").as_bytes()),
            ("broken/score.py", BROKEN_PY.as_bytes()),
        ],
    );
    let p = |f: &str| dir.join(f).display().to_string();
    s.ok(&["env", "create", "-f", &p("env.yml"), "-w", "w"]);
    s.ok(&["model", "register", "--name", "lin", "--path", &p("model1"), "-w", "w"]);
    s.ok(&["model", "register", "--name", "lin", "--path", &p("model2"), "-w", "w"]);
    s.ok(&["endpoint", "create", "-f", &p("ep.yml"), "-w", "w"]);
    dir
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn key(s: &Server) -> String {
    let keys = json(&s.ok(&["endpoint", "get-keys", "lin-ep", "-w", "w", "-o", "json"]));
    keys["primary_key"].as_str().unwrap().to_string()
}

async fn score(client: &reqwest::Client, url: &str, key: &str) -> (u16, String) {
    match client
        .post(format!("{url}/endpoints/lin-ep/score"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(r#"{"data": [[1]]}"#)
        .send()
        .await
    {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// Continuous load: `clients` tasks scoring back to back until stopped; each keeps its answers
/// in order (status and body).
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<(u16, String)>>>,
}

impl Load {
    fn start(url: &str, key: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let (url, key, stop) = (url.to_string(), key.to_string(), stop.clone());
                tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        seen.push(score(&client, &url, &key).await);
                    }
                    seen
                })
            })
            .collect();
        Load { stop, tasks }
    }

    /// Stops the clients; returns each one's answers, after checking that every one was a 200.
    async fn finish(self) -> Vec<Vec<Value>> {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Vec::new();
        for t in self.tasks {
            let seen = t.await.unwrap();
            let failed: Vec<_> = seen.iter().filter(|(status, _)| *status != 200).collect();
            assert!(
                failed.is_empty(),
                "{} of {} requests failed, e.g. {:?}",
                failed.len(),
                seen.len(),
                failed[0]
            );
            all.push(seen.iter().map(|(_, body)| json(body)).collect());
        }
        all
    }
}

/// Runs a CLI command from inside the runtime without stalling the load's tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_rolling_update_under_load_drops_nothing() {
    rolling_update_under_load_drops_nothing(None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_rolling_update_under_load_drops_nothing() {
    let db = PgDatabase::create().await;
    rolling_update_under_load_drops_nothing(Some(db)).await
}

async fn rolling_update_under_load_drops_nothing(db: Option<PgDatabase>) {
    let opts = Opts { database_url: db.as_ref().map(|d| d.url.clone()), ..Default::default() };
    let s = Server::start_with(opts);
    let dir = setup(&s);
    let v1 = write(&dir, "blue1.yml", &deployment_yaml("v1", "lin:1", 2, ""));
    s.ok(&["deployment", "create", "-f", &v1, "--all-traffic", "--wait", "-w", "w"]);
    let key = key(&s);
    let before = s.replica_pids();
    assert_eq!(before.len(), 2, "{before:?}");

    // Code and model change while 4 clients score continuously.
    let load = Load::start(&s.url, &key, 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let v2 = write(&dir, "blue2.yml", &deployment_yaml("v2", "lin:2", 2, ""));
    let update_started = Instant::now();
    let out = blocking(|| s.ok(&["deployment", "update", "-f", &v2, "--wait", "-w", "w", "-o", "json"]));
    let update_took = update_started.elapsed();
    let d = json(&out);
    assert_eq!((d["state"].as_str(), d["generation"].as_i64()), (Some("Healthy"), Some(1)), "{d}");
    assert_eq!(d["model"], "lin:2");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answers = load.finish().await;
    let all: Vec<&Value> = answers.iter().flatten().collect();
    eprintln!(
        "rolling update under load: {} requests from 4 clients, all 200 ({} v1, {} v2); update --wait took {:?}",
        all.len(),
        all.iter().filter(|a| a["version"] == "v1").count(),
        all.iter().filter(|a| a["version"] == "v2").count(),
        update_took
    );

    // Every client saw the old generation, then the new one, never back.
    for seen in &answers {
        let versions: Vec<(&str, i64)> =
            seen.iter().map(|a| (a["version"].as_str().unwrap(), a["b"].as_i64().unwrap())).collect();
        assert_eq!(versions.first(), Some(&("v1", 1)), "{versions:?}");
        assert_eq!(versions.last(), Some(&("v2", 2)), "{versions:?}");
        let switch = versions.iter().position(|v| *v == ("v2", 2)).unwrap();
        assert!(versions[switch..].iter().all(|v| *v == ("v2", 2)), "went back to v1: {versions:?}");
        assert!(versions[..switch].iter().all(|v| *v == ("v1", 1)), "{versions:?}");
    }
    // The old replicas are gone; lin:1 is no longer used, lin:2 is.
    let after = s.replica_pids();
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after.iter().all(|p| !before.contains(p)), "{before:?} {after:?}");
    s.ok(&["model", "delete", "lin:1", "-w", "w"]);
    let err = s.fails(&["model", "delete", "lin:2", "-w", "w"]);
    assert!(err.contains("blue") || err.contains("use"), "{err}");

    // A new generation that cannot start: the old one keeps serving, the failure is recorded.
    let load = Load::start(&s.url, &key, 4);
    let broken = write(&dir, "blue3.yml", &deployment_yaml("broken", "lin:2", 2, ""));
    let err = blocking(|| s.fails(&["deployment", "update", "-f", &broken, "--wait", "-w", "w"]));
    assert!(err.contains("broken v3") && err.contains("generation 1 still serves"), "{err}");
    let answers = load.finish().await;
    assert!(answers.iter().flatten().all(|a| a["version"] == "v2"), "{answers:?}");
    let d = json(&s.ok(&["deployment", "show", "lin-ep/blue", "-w", "w", "-o", "json"]));
    assert_eq!((d["state"].as_str(), d["generation"].as_i64()), (Some("Healthy"), Some(1)), "{d}");
    assert!(d["update_error"].as_str().unwrap().contains("RuntimeError: broken v3"), "{d}");
    // Each generation has its own log: the failed update's tail shows only generation 2.
    let update_error = d["update_error"].as_str().unwrap();
    assert!(update_error.contains("generation 2: starting"), "{update_error}");
    assert!(!update_error.contains("generation 1: starting"), "an older generation's lines: {update_error}");
    assert_eq!(d["spec"]["code_configuration"]["code"], json(&out)["spec"]["code_configuration"]["code"]);
    let logs = s.ok(&["deployment", "logs", "lin-ep/blue", "-w", "w"]);
    assert!(logs.contains("broken v3"), "{logs}");
    assert_eq!(
        s.replica_pids(),
        after,
        "the failed generation's replicas are gone, the serving ones untouched"
    );

    // Unknown keys and renames are refused; nothing changes.
    let typo = write(&dir, "typo.yml", &deployment_yaml("v2", "lin:2", 2, "instance_cnt: 3\n"));
    let err = s.fails(&["deployment", "update", "-f", &typo, "-w", "w"]);
    assert!(err.contains("instance_cnt"), "{err}");
    let client = reqwest::Client::new();
    let api = format!("{}/api/v1/workspaces/w/endpoints/lin-ep/deployments/blue", s.url);
    let r = client
        .patch(&api)
        .bearer_auth(&s.token)
        .json(&serde_json::json!({"name": "green"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap().contains("cannot rename"));

    // After a restart the current generation is what serves.
    let s = s.restart();
    let _keep = db;
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (0, String::new());
    while Instant::now() < deadline {
        last = score(&client, &s.url, &key).await;
        if last.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last.0, 200, "{}", last.1);
    assert_eq!((json(&last.1)["version"].as_str(), json(&last.1)["b"].as_i64()), (Some("v2"), Some(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scaling_adds_and_removes_replicas_without_restarting_the_others() {
    let s = Server::start();
    let dir = setup(&s);
    let file = write(&dir, "blue.yml", &deployment_yaml("v1", "lin:1", 2, ""));
    s.ok(&["deployment", "create", "-f", &file, "--all-traffic", "--wait", "-w", "w"]);
    let key = key(&s);
    let two = s.replica_pids();
    assert_eq!(two.len(), 2);

    // Up to 3 with the CLI, under load.
    let load = Load::start(&s.url, &key, 4);
    let three_yml = write(&dir, "blue3.yml", &deployment_yaml("v1", "lin:1", 3, ""));
    let d = json(&blocking(|| {
        s.ok(&["deployment", "update", "-f", &three_yml, "--wait", "-w", "w", "-o", "json"])
    }));
    assert_eq!((d["state"].as_str(), d["generation"].as_i64()), (Some("Healthy"), Some(0)), "{d}");
    let three = s.replica_pids();
    assert_eq!(three.len(), 3, "{three:?}");
    assert!(two.iter().all(|p| three.contains(p)), "a running replica was restarted: {two:?} → {three:?}");

    // Down to 1 with a merge patch; a second update meanwhile is refused.
    let client = reqwest::Client::new();
    let api = format!("{}/api/v1/workspaces/w/endpoints/lin-ep/deployments/blue", s.url);
    let r = client
        .patch(&api)
        .bearer_auth(&s.token)
        .json(&serde_json::json!({"instance_count": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(json(&r.text().await.unwrap())["state"], "Updating");
    let r = client
        .patch(&api)
        .bearer_auth(&s.token)
        .json(&serde_json::json!({"instance_count": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409, "an update while one runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    let d = loop {
        let d = json(&s.ok(&["deployment", "show", "lin-ep/blue", "-w", "w", "-o", "json"]));
        if d["state"] != "Updating" || Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (d["state"].as_str(), d["spec"]["instance_count"].as_i64()),
        (Some("Healthy"), Some(1)),
        "{d}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answers = load.finish().await;
    let one = s.replica_pids();
    assert_eq!(one.len(), 1, "{one:?}");
    assert!(two.contains(&one[0]), "the replica kept is one of the first two: {two:?} → {one:?}");
    // Every answer came from a replica of this one generation.
    assert!(answers
        .iter()
        .flatten()
        .all(|a| a["version"] == "v1" && three.contains(&(a["pid"].as_i64().unwrap() as i32))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_replica_fails_liveness_and_is_restarted() {
    let s = Server::start();
    let dir = setup(&s);
    let probe = "liveness_probe:\n  initial_delay: 1\n  period: 1\n  timeout: 1\n  failure_threshold: 2\n";
    let file = write(&dir, "blue.yml", &deployment_yaml("v1", "lin:1", 1, probe));
    s.ok(&["deployment", "create", "-f", &file, "--all-traffic", "--wait", "-w", "w"]);
    let key = key(&s);
    let pids = s.replica_pids();
    assert_eq!(pids.len(), 1);
    unsafe { libc::kill(pids[0], libc::SIGSTOP) };

    // A request sent to the frozen replica gets a quick 502 once liveness kills it: no hang until
    // the 30 s request timeout.
    let client = reqwest::Client::new();
    let sent = Instant::now();
    let (status, body) = score(&client, &s.url, &key).await;
    assert!([502, 503].contains(&status), "{status} {body}");
    assert!(sent.elapsed() < Duration::from_secs(10), "took {:?}", sent.elapsed());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (0, String::new());
    while Instant::now() < deadline {
        last = score(&client, &s.url, &key).await;
        if last.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last.0, 200, "{}", last.1);
    assert_ne!(json(&last.1)["pid"].as_i64(), Some(pids[0] as i64), "a new worker answers");
    let logs = s.ok(&["deployment", "logs", "lin-ep/blue", "-w", "w"]);
    assert!(logs.contains("failed its liveness probe 2 time(s)"), "{logs}");
    assert!(!std::path::Path::new(&format!("/proc/{}", pids[0])).exists(), "the frozen worker was killed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_failing_readiness_leaves_the_rotation_until_it_answers() {
    let s = Server::start();
    let dir = setup(&s);
    let probe = "readiness_probe:\n  initial_delay: 1\n  period: 1\n  timeout: 1\n  failure_threshold: 1\n  success_threshold: 2\n";
    let file = write(&dir, "blue.yml", &deployment_yaml("v1", "lin:1", 2, probe));
    s.ok(&["deployment", "create", "-f", &file, "--all-traffic", "--wait", "-w", "w"]);
    let key = key(&s);
    let pids = s.replica_pids();
    assert_eq!(pids.len(), 2);
    let (frozen, other) = (pids[0], pids[1]);
    unsafe { libc::kill(frozen, libc::SIGSTOP) };
    // The log says so first, then the state follows.
    let show = || json(&s.ok(&["deployment", "show", "lin-ep/blue", "-w", "w", "-o", "json"]));
    let wait_state = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let d = show();
            if d["state"] == want || Instant::now() > deadline {
                return d;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let d = blocking(|| wait_state("Unhealthy"));
    assert_eq!(d["state"], "Unhealthy", "{d}");
    assert!(d["reason"].as_str().unwrap().contains("readiness"), "{d}");

    // Only the other replica answers meanwhile, and the frozen one is not killed (liveness is at
    // its defaults: 30 failures 10 s apart).
    let client = reqwest::Client::new();
    for _ in 0..20 {
        let (status, body) = score(&client, &s.url, &key).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(json(&body)["pid"].as_i64(), Some(other as i64));
    }
    unsafe { libc::kill(frozen, libc::SIGCONT) };
    // Eight requests at a time: a request takes whichever worker is free, so lone requests need
    // not visit both; eight at once need both once both are in the rotation.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut back = false;
    while !back && Instant::now() < deadline {
        let answers = futures::future::join_all((0..8).map(|_| score(&client, &s.url, &key))).await;
        for (status, body) in answers {
            assert_eq!(status, 200, "{body}");
            back |= json(&body)["pid"].as_i64() == Some(frozen as i64);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "the replica never came back into rotation");
    let logs = s.ok(&["deployment", "logs", "lin-ep/blue", "-w", "w"]);
    assert!(logs.contains("back in rotation"), "{logs}");
    let d = blocking(|| wait_state("Healthy"));
    assert_eq!(d["state"], "Healthy", "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_over_its_instance_types_memory_is_killed_and_restarted() {
    let s = Server::start();
    let dir = setup(&s);
    s.ok(&["compute", "size", "add", "tiny", "--cores", "1", "--memory-gb", "0.125", "-w", "w"]);
    let greedy = "import os, time\n\ndef init():\n    pass\n\ndef run(raw):\n    if 'grow' in raw:\n        \
                  global hog\n        hog = b'x' * (400 << 20)\n        time.sleep(30)\n    \
                  return {'pid': os.getpid(), 'omp': os.environ.get('OMP_NUM_THREADS')}\n";
    std::fs::create_dir_all(dir.join("greedy")).unwrap();
    std::fs::write(dir.join("greedy/score.py"), greedy).unwrap();
    let file = write(&dir, "blue.yml", &deployment_yaml("greedy", "lin:1", 1, "instance_type: tiny\n"));
    s.ok(&["deployment", "create", "-f", &file, "--all-traffic", "--wait", "-w", "w"]);
    let key = key(&s);
    let client = reqwest::Client::new();
    let post = |body: &'static str| {
        client.post(format!("{}/endpoints/lin-ep/score", s.url)).bearer_auth(&key).body(body).send()
    };
    let first = json(&post("{}").await.unwrap().text().await.unwrap());
    assert_eq!(first["omp"], "1", "the size's cores become thread limits: {first}");

    let sent = Instant::now();
    let r = post(r#"{"grow": 1}"#).await.unwrap();
    assert_eq!(r.status().as_u16(), 502, "{}", r.text().await.unwrap());
    assert!(sent.elapsed() < Duration::from_secs(20), "{:?}", sent.elapsed());
    let logs = s.ok(&["deployment", "logs", "lin-ep/blue", "-w", "w"]);
    assert!(logs.contains("exceeded its instance_type's memory (128 MiB resident)"), "{logs}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = (0, String::new());
    while Instant::now() < deadline {
        let r = post("{}").await.unwrap();
        last = (r.status().as_u16(), r.text().await.unwrap());
        if last.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last.0, 200, "{}", last.1);
    assert_ne!(json(&last.1)["pid"], first["pid"], "a new worker answers");
}

/// A server restart while generation 1 is still starting: the recorded generation (0, with
/// `lin:1`) comes back, and `lin:2`, which the abandoned update had marked as used, is released
/// (deletable), as are the abandoned generation's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_during_a_rolling_update_releases_the_abandoned_version() {
    let s = Server::start();
    let dir = setup(&s);
    write_tree(
        &dir,
        &[(
            "slow/score.py",
            b"import time\n\ndef init():\n    time.sleep(60)\n\ndef run(raw):\n    return raw\n",
        )],
    );
    let v1 = write(&dir, "blue1.yml", &deployment_yaml("v1", "lin:1", 1, ""));
    s.ok(&["deployment", "create", "-f", &v1, "--all-traffic", "--wait", "-w", "w"]);
    let key = key(&s);
    let slow = write(&dir, "slow.yml", &deployment_yaml("slow", "lin:2", 1, ""));
    let d = json(&s.ok(&["deployment", "update", "-f", &slow, "-w", "w", "-o", "json"]));
    assert_eq!(d["state"], "Updating", "{d}");
    assert_eq!(d["pending_update"]["model"], "azureml:lin:2", "{d}");
    let id = d["id"].as_str().unwrap().to_string();
    let deployment_dir = s.data_dir.join("deployments").join(&id);
    // Wait until generation 1's replica is starting (its init sleeps).
    let gen1_log = deployment_dir.join("logs/generation-1.log");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&gen1_log).unwrap_or_default().contains("generation 1: starting") {
        assert!(Instant::now() < deadline, "generation 1 never started:\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let err = s.fails(&["model", "delete", "lin:2", "-w", "w"]);
    assert!(err.contains("blue") || err.contains("use"), "the update holds lin:2: {err}");

    let s = s.restart();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = (0, String::new());
    while Instant::now() < deadline {
        last = score(&client, &s.url, &key).await;
        if last.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last.0, 200, "{}", last.1);
    assert_eq!((json(&last.1)["version"].as_str(), json(&last.1)["b"].as_i64()), (Some("v1"), Some(1)));
    let d = json(&s.ok(&["deployment", "show", "lin-ep/blue", "-w", "w", "-o", "json"]));
    assert_eq!((d["generation"].as_i64(), d["model"].as_str()), (Some(0), Some("lin:1")), "{d}");
    assert!(d.get("pending_update").is_none(), "the abandoned update is not pending: {d}");
    s.ok(&["model", "delete", "lin:2", "-w", "w"]);
    let err = s.fails(&["model", "delete", "lin:1", "-w", "w"]);
    assert!(err.contains("blue") || err.contains("use"), "lin:1 still serves: {err}");
    assert!(!deployment_dir.join("gen/1").exists(), "the abandoned generation's files stay");
    let logs = s.ok(&["deployment", "logs", "lin-ep/blue", "-w", "w"]);
    assert!(logs.contains("released 1 model version"), "{logs}");
    // The sleeping replica of the abandoned generation outlived the killed server; end it.
    for pid in s.replica_pids() {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if String::from_utf8_lossy(&environ).contains("/gen/1/") {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// While an update runs, `show` gives what serves (`spec`, `model`) and what the update asked for
/// (`pending_update`); once it is done, the asked-for spec is the spec and `pending_update` goes.
/// The same for scaling.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn show_during_an_update_gives_what_was_asked_for_beside_what_serves() {
    let s = Server::start();
    let dir = setup(&s);
    // Generation 1's init takes 3 s, long enough to look at the deployment while it starts.
    let slow = score_py("v2").replace("def init():\n", "def init():\n    import time; time.sleep(3)\n");
    write_tree(&dir, &[("slow/score.py", slow.as_bytes()), ("other.yml", b"name: other\npip: []\n")]);
    s.ok(&["env", "create", "-f", &dir.join("other.yml").display().to_string(), "-w", "w"]);
    let v1 = write(&dir, "blue1.yml", &deployment_yaml("v1", "lin:1", 1, ""));
    s.ok(&["deployment", "create", "-f", &v1, "--all-traffic", "--wait", "-w", "w"]);
    // The update also moves the deployment to environment `other`.
    let v2 = deployment_yaml("slow", "lin:2", 1, "").replace("environment: plain\n", "environment: other\n");
    let v2 = write(&dir, "blue2.yml", &v2);
    let answered = json(&s.ok(&["deployment", "update", "-f", &v2, "-w", "w", "-o", "json"]));
    // The environment the update rolls out is in use as much as the one that serves.
    for env in ["other@1", "plain@1"] {
        let err = s.fails(&["env", "delete", env, "-w", "w"]);
        assert!(err.contains("in use by deployment(s) lin-ep/blue"), "{env}: {err}");
    }
    let shown = json(&s.ok(&["deployment", "show", "lin-ep/blue", "-w", "w", "-o", "json"]));
    for d in [&answered, &shown] {
        assert_eq!(d["state"], "Updating", "{d}");
        assert_eq!((d["model"].as_str(), d["generation"].as_i64()), (Some("lin:1"), Some(0)), "{d}");
        assert_eq!(d["spec"]["model"], "azureml:lin:1", "{d}");
        assert_eq!(d["pending_update"]["model"], "azureml:lin:2", "{d}");
        assert_ne!(
            d["pending_update"]["code_configuration"]["code"], d["spec"]["code_configuration"]["code"],
            "the pending update's code is the new snapshot: {d}"
        );
    }
    let table = s.ok(&["deployment", "show", "lin-ep/blue", "-w", "w"]);
    assert!(table.contains("pending_update") && table.contains("azureml:lin:2"), "{table}");
    let wait_done = || {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let d = json(&s.ok(&["deployment", "show", "lin-ep/blue", "-w", "w", "-o", "json"]));
            if d["state"] != "Updating" || Instant::now() > deadline {
                return d;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let d = wait_done();
    assert_eq!((d["state"].as_str(), d["generation"].as_i64()), (Some("Healthy"), Some(1)), "{d}");
    assert_eq!(d["spec"]["model"], "azureml:lin:2", "{d}");
    assert!(d.get("pending_update").is_none(), "{d}");

    // Scaling: what serves stays 1 replica until the new one is ready.
    let r = reqwest::Client::new()
        .patch(format!("{}/api/v1/workspaces/w/endpoints/lin-ep/deployments/blue", s.url))
        .bearer_auth(&s.token)
        .json(&serde_json::json!({"instance_count": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let d = json(&r.text().await.unwrap());
    assert_eq!(d["state"], "Updating", "{d}");
    assert_eq!(
        (d["spec"]["instance_count"].as_i64(), d["pending_update"]["instance_count"].as_i64()),
        (Some(1), Some(2)),
        "{d}"
    );
    let d = wait_done();
    assert_eq!(
        (d["state"].as_str(), d["spec"]["instance_count"].as_i64()),
        (Some("Healthy"), Some(2)),
        "{d}"
    );
    assert!(d.get("pending_update").is_none(), "{d}");
}
