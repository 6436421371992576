//! Several `cairn server`s on one PostgreSQL database (each with its own data directory, sharing
//! an artifact folder and an environment cache): a compute's `max_nodes` holds across servers,
//! each server recovers only its own runs, and a run shows which server runs it and whether that
//! server answers.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::jobs::*;
use common::*;

/// Two servers on one fresh PostgreSQL database, sharing `shared/artifacts` and `shared/envs`.
/// The second uses the first's admin token (one database, one token table).
struct Cluster {
    a: Server,
    b: Server,
    shared: tempfile::TempDir,
    _db: PgDatabase,
}

fn opts(db: &PgDatabase, shared: &Path, extra: &[&str]) -> Opts {
    let mut args = vec!["--env-cache".to_string(), shared.join("envs").display().to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    Opts {
        database_url: Some(db.url.clone()),
        artifact_store: Some(shared.join("artifacts").display().to_string()),
        args,
        ..Default::default()
    }
}

async fn cluster(extra: &[&str]) -> Cluster {
    let db = PgDatabase::create().await;
    let shared = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(shared.path().join("artifacts")).unwrap();
    let a = Server::start_with(opts(&db, shared.path(), extra));
    let mut b = Server::start_with(opts(&db, shared.path(), extra));
    b.token = a.token.clone();
    Cluster { a, b, shared, _db: db }
}

fn server_id(s: &Server) -> String {
    std::fs::read_to_string(s.data_dir.join("server-id")).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_submitted_through_two_servers_share_one_node_and_all_complete() {
    let c = cluster(&[]).await;
    let (a, b) = (&c.a, &c.b);
    let (id_a, id_b) = (server_id(a), server_id(b));
    assert_ne!(id_a, id_b, "each data directory has its own server id");
    assert!(a.wait_for_log(&format!("id={id_a}")), "the id is logged at start: {}", a.log());
    let dir = c.shared.path().join("spec");
    setup_in(a, &dir, 1);
    let trace = c.shared.path().join("trace");
    std::fs::create_dir_all(&trace).unwrap();
    let body = format!(
        "command: date +%s.%N > {t}/$CAIRN_RUN_ID.start; sleep 1; date +%s.%N > {t}/$CAIRN_RUN_ID.end\n",
        t = trace.display()
    );
    let file = job_file(&dir, "job.yml", &body);
    // Alternating, so that both servers are woken with queued runs and claim against each other.
    let ids: Vec<String> = (0..6).map(|i| submit(if i % 2 == 0 { a } else { b }, &file)).collect();
    let mut by_server: std::collections::BTreeMap<String, usize> = Default::default();
    for id in &ids {
        let r = wait_for(a, id, ended, 180);
        assert_eq!(r["status"], "Completed", "{r}");
        let server = r["server"]["id"].as_str().unwrap_or_else(|| panic!("no server in {r}")).to_string();
        assert!(server == id_a || server == id_b, "{r}");
        *by_server.entry(server).or_default() += 1;
    }
    let read = |id: &str, what: &str| -> f64 {
        std::fs::read_to_string(trace.join(format!("{id}.{what}"))).unwrap().trim().parse().unwrap()
    };
    let spans: Vec<(f64, f64)> = ids.iter().map(|id| (read(id, "start"), read(id, "end"))).collect();
    let overlap = spans
        .iter()
        .map(|(start, _)| spans.iter().filter(|(s2, e2)| s2 <= start && start < e2).count())
        .max()
        .unwrap();
    assert_eq!(
        overlap, 1,
        "two jobs ran at once on a 1-node compute: {spans:?} (runs per server: {by_server:?})"
    );
    // The other server answers the same, and says who ran each job.
    let r = show(b, &ids[0]);
    assert_eq!(r["server"]["alive"], true, "{r}");
    assert!(r["server"]["url"].as_str().unwrap().starts_with("http://127.0.0.1:"), "{r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_of_one_server_leaves_the_other_servers_runs_alone() {
    let c = cluster(&["--server-stale-after", "2"]).await;
    let dir = c.shared.path().join("spec");
    setup_in(&c.a, &dir, 2);
    let id_b = server_id(&c.b);
    let gated = "command: echo $$ > pid; while [ ! -f go ]; do sleep 0.05; done; echo finished-$((6*7))\n";
    let file = job_file(&dir, "gated.yml", gated);
    let run = submit(&c.b, &file);
    let r = wait_for(&c.a, &run, |r| r["status"] == "Running", 60);
    assert_eq!(r["server"]["id"], id_b.as_str(), "{r}");
    let run_dir: PathBuf = c.b.data_dir.join("runs").join(&run);
    let pid = read_pid(&run_dir.join("pid"));

    // Server A restarts (killed, as a crash): B's run is not its own, so it is left alone.
    let Cluster { a, b, shared, _db } = c;
    let a = a.restart_keeping_address();
    assert!(a.wait_for_log("cairn server ready"), "{}", a.log());
    std::thread::sleep(Duration::from_millis(500));
    let r = show(&a, &run);
    assert_eq!(r["status"], "Running", "A's restart touched B's run: {r}\n{}", a.log());
    assert!(running(pid), "B's job was stopped by A's restart");
    assert!(!a.log().contains(&run), "A's recovery looked at B's run: {}", a.log());

    // B dies: its run stays as it is, shown with an unreachable server; A refuses to cancel it.
    let mut b = b;
    b.kill9();
    let r = wait_for(&a, &run, |r| r["server"]["alive"] == false, 20);
    assert_eq!(r["status"], "Running", "{r}");
    let table = a.ok(&["job", "show", &run, "-w", "w"]);
    assert!(table.contains("UNREACHABLE"), "{table}");
    let err = a.fails(&["job", "cancel", &run, "-w", "w"]);
    assert!(err.contains("unreachable") && err.contains(&id_b), "{err}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(show(&a, &run)["status"], "Running");
    assert!(running(pid), "the job must outlive its server");

    // B comes back at its address, reattaches its job, which completes there.
    let mut b = b.restart_keeping_address();
    b.token = a.token.clone();
    assert!(b.wait_for_log("reattaching to a running job"), "{}", b.log());
    std::fs::write(run_dir.join("go"), "").unwrap();
    let r = wait_for(&a, &run, ended, 60);
    assert_eq!(r["status"], "Completed", "{r}");
    assert_eq!(r["server"]["id"], id_b.as_str(), "{r}");
    assert_eq!(r["server"]["alive"], true, "{r}");

    // A cancel sent to A for a job B runs is carried out by B, which alone reaches it.
    let file = job_file(&shared.path().join("spec"), "long.yml", "command: echo $$ > pid; sleep 300\n");
    let long = submit(&b, &file);
    wait_for(&a, &long, |r| r["status"] == "Running", 60);
    let pid = read_pid(&b.data_dir.join("runs").join(&long).join("pid"));
    a.ok(&["job", "cancel", &long, "-w", "w"]);
    assert_eq!(wait_for(&a, &long, ended, 30)["status"], "Canceled");
    let deadline = Instant::now() + Duration::from_secs(20);
    while running(pid) {
        assert!(Instant::now() < deadline, "B did not stop the job canceled through A: {}", b.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(b.log().contains("canceled through another server"), "{}", b.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_runs_on_the_server_that_created_it_and_others_send_callers_there() {
    let c = cluster(&[]).await;
    let dir = c.shared.path().join("dep");
    write_tree(
        &dir,
        &[
            ("env.yml", b"name: plain\npip: []\n"),
            ("model/coef.json", br#"{"b": 1.5}"#),
            ("ep.yml", b"name: lin-ep\nauth_mode: key\n"),
            (
                "src/score.py",
                b"import json\ndef init():\n    pass\ndef run(raw):\n    return {\"n\": len(json.loads(raw)[\"data\"])}\n",
            ),
            (
                "blue.yml",
                b"name: blue\nendpoint_name: lin-ep\nmodel: azureml:lin:1\n\
                  code_configuration:\n  code: src\n  scoring_script: score.py\n\
                  environment: plain\ninstance_count: 1\ninstance_type: Standard_DS2_v2\n",
            ),
        ],
    );
    let p = |f: &str| dir.join(f).display().to_string();
    let a = &c.a;
    a.ok(&["workspace", "create", "w"]);
    a.ok(&["env", "create", "-f", &p("env.yml"), "-w", "w"]);
    a.ok(&["model", "register", "--name", "lin", "--path", &p("model"), "-w", "w"]);
    a.ok(&["endpoint", "create", "-f", &p("ep.yml"), "-w", "w"]);
    a.ok(&["deployment", "create", "-f", &p("blue.yml"), "--all-traffic", "--wait", "-w", "w"]);
    let keys = json(&a.ok(&["endpoint", "get-keys", "lin-ep", "-w", "w", "-o", "json"]));
    let key = keys["primary_key"].as_str().unwrap().to_string();
    let score = |s: &Server| {
        let req = reqwest::Client::new()
            .post(format!("{}/endpoints/lin-ep/score", s.url))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(r#"{"data": [[1], [2]]}"#);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(score(a).await, (200, r#"{"n": 2}"#.to_string()));
    let (status, body) = score(&c.b).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("runs on another server") && body.contains(&a.url), "{body}");
    assert_eq!(a.replica_pids().len(), 1);

    // B restarts: it does not start A's deployment (before, every server started every one).
    let Cluster { a, b, _db, shared } = c;
    let mut b = b.restart();
    b.token = a.token.clone();
    assert!(b.wait_for_log("cairn server ready"), "{}", b.log());
    std::thread::sleep(Duration::from_secs(2));
    assert!(b.replica_pids().is_empty(), "B started A's replicas: {}", b.log());
    assert_eq!(a.replica_pids().len(), 1);
    assert_eq!(score(&a).await.0, 200);

    // An update through B is refused (only A can replace A's replicas), and nothing changes.
    let patch = serde_json::json!({"instance_count": 2});
    let path = "/api/v1/workspaces/w/endpoints/lin-ep/deployments/blue";
    let (status, body) = b.call(reqwest::Method::PATCH, path, Some(patch)).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.to_string().contains("runs on another server") && body.to_string().contains(&a.url),
        "{body}"
    );
    assert_eq!(a.replica_pids().len(), 1);
    // Deleting the endpoint (and so its deployment) through B: A notices on its next heartbeat
    // and stops the replicas.
    b.ok(&["endpoint", "delete", "lin-ep", "-w", "w"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !a.replica_pids().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(a.replica_pids().is_empty(), "A still runs the deleted deployment: {}", a.log());
    assert!(a.log().contains("deleted elsewhere: stopping its replicas"), "{}", a.log());
    drop(shared);
}
