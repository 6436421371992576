//! Training runs end to end: environments built with uv, a local compute cluster, jobs with
//! real Python processes, tracking through the in-job runtime, cancel, timeout, and restarts
//! (jobs outlive the server and are reattached).

mod common;

use std::time::{Duration, Instant};

use common::jobs::*;
use common::*;
use serde_json::Value;

/// Workspace `w` with compute `cpu` of `max_nodes` nodes and environment `plain`, their files in
/// the server's `spec` folder (returned: job files go there too).
fn setup(s: &Server, max_nodes: u32) -> std::path::PathBuf {
    let dir = s.tmp().join("spec");
    setup_in(s, &dir, max_nodes);
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn the_walkthrough_trains_logs_metrics_and_keeps_its_model() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    let wine = repo_root().join("examples/wine");
    s.ok(&[
        "datastore",
        "upload",
        "-w",
        "w",
        wine.join("winedata").to_str().unwrap(),
        "--target-path",
        "winedata",
        "-q",
    ]);
    s.ok(&["compute", "create", "-f", wine.join("compute.yml").to_str().unwrap(), "-w", "w"]);
    s.ok(&["env", "create", "-f", wine.join("env.yml").to_str().unwrap(), "-w", "w"]);
    let out = s
        .cmd()
        .args([
            "job",
            "submit",
            "-f",
            wine.join("job.yml").to_str().unwrap(),
            "-w",
            "w",
            "--wait",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let run = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(run["status"], "Completed");
    let rmse = run["metrics"]["rmse"]["value"].as_f64().unwrap();
    assert!(rmse > 0.3 && rmse < 1.5, "rmse {rmse}");
    assert_eq!(run["metrics"]["max depth"]["value"].as_f64(), Some(10.0));
    let statuses: Vec<_> = run["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(statuses, ["Queued", "Preparing", "Starting", "Running", "Finalizing", "Completed"]);
    let id = run["id"].as_str().unwrap();
    let dest = s.tmp().join("dl");
    s.ok(&["job", "download", id, "--dest", dest.to_str().unwrap(), "-w", "w"]);
    let model = dest.join(id).join("outputs/wine_model.pkl");
    let pickled = std::fs::read(&model).unwrap();
    assert!(pickled.len() > 100);
    let log = std::fs::read_to_string(dest.join(id).join("logs/std_log.txt")).unwrap();
    assert!(log.contains("RMSE is"), "{log}");
    // A second download would replace local files: refused, naming them, and nothing is touched.
    std::fs::write(&model, b"changed locally").unwrap();
    let err = s.fails(&["job", "download", id, "--dest", dest.to_str().unwrap(), "-w", "w"]);
    assert!(
        err.contains("already exist") && err.contains("wine_model.pkl") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(std::fs::read(&model).unwrap(), b"changed locally");
    s.ok(&["job", "download", id, "--dest", dest.to_str().unwrap(), "-w", "w", "--overwrite"]);
    assert_eq!(std::fs::read(&model).unwrap(), pickled);
    let leftovers: Vec<_> = files_under(&dest).into_iter().filter(|p| p.contains("cairn-partial")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let err = s.fails(&["job", "download", "no-such-run", "--dest", dest.to_str().unwrap(), "-w", "w"]);
    assert!(err.contains("no-such-run"), "{err}");
    // The environment is cached: building it again does no work.
    let built = json(&s.ok(&["env", "build", "wine-experiment-env", "-w", "w", "-o", "json"]));
    assert_eq!(built["reused"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn five_jobs_on_two_nodes_never_run_more_than_two_at_once() {
    let s = Server::start();
    let dir = setup(&s, 2);
    let trace = s.tmp().join("trace");
    std::fs::create_dir_all(&trace).unwrap();
    let body = format!(
        "command: date +%s.%N > {t}/$CAIRN_RUN_ID.start; sleep 1.5; date +%s.%N > {t}/$CAIRN_RUN_ID.end\n",
        t = trace.display()
    );
    let file = job_file(&dir, "job.yml", &body);
    let ids: Vec<String> = (0..5).map(|_| submit(&s, &file)).collect();
    let show = json(&s.ok(&["compute", "show", "cpu", "-w", "w", "-o", "json"]));
    assert!(show["state"]["running_runs"].as_array().unwrap().len() <= 2, "{show}");
    for id in &ids {
        assert_eq!(wait_for(&s, id, ended, 120)["status"], "Completed");
    }
    let read = |id: &str, what: &str| -> f64 {
        std::fs::read_to_string(trace.join(format!("{id}.{what}"))).unwrap().trim().parse().unwrap()
    };
    let spans: Vec<(f64, f64)> = ids.iter().map(|id| (read(id, "start"), read(id, "end"))).collect();
    let max_overlap = spans
        .iter()
        .map(|(start, _)| spans.iter().filter(|(s2, e2)| s2 <= start && start < e2).count())
        .max()
        .unwrap();
    assert!(max_overlap <= 2, "more than 2 jobs ran at once: {spans:?}");
    assert_eq!(max_overlap, 2, "two nodes should run two jobs at once: {spans:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_start_for_jobs_stay_idle_then_scale_down_to_the_minimum() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    let dir = s.tmp().join("spec");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("compute.yml"),
        "name: cpu\ntype: amlcompute\nsize: small\nmin_instances: 1\nmax_instances: 3\nidle_time_before_scale_down: 6\n",
    )
    .unwrap();
    std::fs::write(dir.join("env.yml"), "name: plain\npip: []\n").unwrap();
    s.ok(&["compute", "create", "-f", dir.join("compute.yml").to_str().unwrap(), "-w", "w"]);
    s.ok(&["env", "create", "-f", dir.join("env.yml").to_str().unwrap(), "-w", "w"]);
    let show = || json(&s.ok(&["compute", "show", "cpu", "-w", "w", "-o", "json"]))["state"].clone();
    let states = |st: &Value| -> Vec<String> {
        st["nodes"].as_array().unwrap().iter().map(|n| n["state"].as_str().unwrap().to_string()).collect()
    };
    // The minimum is allocated (idle) before any job.
    assert_eq!(states(&show()), ["idle"]);

    let gate = s.tmp().join("gate");
    let file = job_file(
        &dir,
        "job.yml",
        &format!("command: while [ ! -e {} ]; do sleep 0.1; done\n", gate.display()),
    );
    let ids: Vec<String> = (0..3).map(|_| submit(&s, &file)).collect();
    for id in &ids {
        wait_for(&s, id, |r| r["status"] == "Running", 120);
    }
    let st = show();
    assert_eq!((st["current_nodes"].as_i64(), st["busy_nodes"].as_i64()), (Some(3), Some(3)), "{st}");

    std::fs::write(&gate, "").unwrap();
    for id in &ids {
        assert_eq!(wait_for(&s, id, ended, 60)["status"], "Completed");
    }
    // Right after the jobs, the three nodes are idle; after the idle time only the minimum stays.
    let st = show();
    assert_eq!(states(&st), ["idle", "idle", "idle"], "{st}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = show();
        if st["current_nodes"] == 1 {
            assert_eq!(states(&st), ["idle"]);
            break;
        }
        assert!(Instant::now() < deadline, "nodes were not released after the idle time: {st}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let text = s.ok(&["compute", "show", "cpu", "-w", "w"]);
    assert!(text.contains("1 nodes: 0 busy, 0 starting, 1 idle"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_workspace_with_force_stops_its_running_and_queued_jobs() {
    let s = Server::start();
    let dir = setup(&s, 1);
    let pid_file = s.tmp().join("job.pid");
    let file = job_file(&dir, "job.yml", &format!("command: echo $$ > {}; sleep 300\n", pid_file.display()));
    let running = submit(&s, &file);
    let queued = submit(&s, &file);
    wait_for(&s, &running, |r| r["status"] == "Running", 120);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pid_file.exists() {
        assert!(Instant::now() < deadline, "the job did not write its pid");
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    let err = s.fails(&["workspace", "delete", "w"]);
    assert!(err.contains("1 experiments; 1 environments; 1 computes") && err.contains("--force"), "{err}");
    s.ok(&["workspace", "delete", "w", "--force"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    // SAFETY: kill(pid, 0) only checks whether the process exists.
    while unsafe { libc::kill(pid, 0) } == 0 {
        assert!(Instant::now() < deadline, "the job's process {pid} outlived its workspace");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The queued job (it would write the pid file again) never starts: the scheduler passes
    // every 2 s at the latest.
    std::fs::remove_file(&pid_file).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    assert!(!pid_file.exists(), "the queued job {queued} started after its workspace was deleted");
    let err = s.fails(&["job", "show", &queued, "-w", "w"]);
    assert!(err.contains("not found"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_and_timeout_stop_the_whole_process_tree() {
    let s = Server::start();
    let dir = setup(&s, 2);
    let body = "command: sleep 300 & echo $! > child.pid; echo started; wait\n";
    let file = job_file(&dir, "long.yml", body);
    let id = submit(&s, &file);
    wait_for(&s, &id, |r| r["status"] == "Running", 60);
    let pid_file = s.data_dir.join("runs").join(&id).join("child.pid");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pid_file.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let child: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    s.ok(&["job", "cancel", &id, "-w", "w"]);
    let r = wait_for(&s, &id, ended, 30);
    assert_eq!(r["status"], "Canceled");
    std::thread::sleep(Duration::from_millis(200));
    let state = std::fs::read_to_string(format!("/proc/{child}/status")).unwrap_or_default();
    assert!(state.is_empty() || state.contains("State:\tZ"), "the grandchild survived the cancel: {state}");

    let file = job_file(&dir, "timeout.yml", &format!("{body}timeout: 2\n"));
    let id = submit(&s, &file);
    let r = wait_for(&s, &id, ended, 60);
    assert_eq!(r["status"], "Failed");
    assert!(r["error"].as_str().unwrap().contains("timed out after 2 s"), "{r}");
    // A canceled queued job never starts; a finished job cannot be canceled again.
    let err = s.fails(&["job", "cancel", &id, "-w", "w"]);
    assert!(err.contains("already ended"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_command_reports_its_exit_code_and_log_tail() {
    let s = Server::start();
    let dir = setup(&s, 1);
    let file = job_file(&dir, "fail.yml", "command: echo something broke >&2; exit 3\n");
    let out = s.cmd().args(["job", "submit", "-f", &file, "-w", "w", "--wait"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Failed") && err.contains("exit code 3") && err.contains("something broke"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runtime_logs_through_a_run_scoped_token_that_cannot_touch_other_runs() {
    let s = Server::start();
    let dir = setup(&s, 2);
    code_file(
        &dir,
        "log.py",
        r#"
import json, os, sys, urllib.request
from cairn import Run
run = Run.get_context()
for i in range(5):
    run.log("loss", 1.0 / (i + 1))
run.log("weird", float("nan"))
run.log_list("accuracies", [0.5, 0.6, 0.7])
run.log_row("scores", precision=0.9, recall=0.8)
run.log_param("max_depth", 5)
run.set_tags({"model": "tree"})
try:
    run.log("bad", "not a number")
except TypeError as e:
    print("refused:", e)
os.makedirs("outputs", exist_ok=True)
open("outputs/result.txt", "w").write("ok")
run.flush()
other = sys.argv[1]
req = urllib.request.Request(
    f"{os.environ['CAIRN_TRACKING_URI']}/api/v1/workspaces/w/runs/{other}/log-batch",
    data=json.dumps({"metrics": [{"key": "x", "value": 1}]}).encode(),
    headers={"Authorization": "Bearer " + os.environ["CAIRN_RUN_TOKEN"], "Content-Type": "application/json"},
    method="POST")
try:
    urllib.request.urlopen(req)
    print("OTHER RUN WRITABLE")
except urllib.error.HTTPError as e:
    print("other run:", e.code)
run.complete()
"#,
    );
    // A first run the job's token must not be able to write to.
    let other = json(&s.ok(&[
        "job",
        "submit",
        "-f",
        &job_file(&dir, "a.yml", "command: 'true'\n"),
        "-w",
        "w",
        "-o",
        "json",
    ]));
    let other = other["id"].as_str().unwrap().to_string();
    wait_for(&s, &other, ended, 60);
    let file = job_file(&dir, "log.yml", &format!("code: ./code\ncommand: python log.py {other}\n"));
    let out =
        s.cmd().args(["job", "submit", "-f", &file, "-w", "w", "--stream", "-o", "json"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("other run: 403"), "{stdout}");
    assert!(stdout.contains("refused:"), "{stdout}");
    let run = json(&stdout[stdout.find("{\n").unwrap()..]);
    let id = run["id"].as_str().unwrap();
    let m = json(&s.ok(&["run", "metrics", id, "-w", "w", "-o", "json"]));
    assert_eq!(m["metrics"]["loss"].as_array().unwrap().len(), 5);
    assert_eq!(m["metrics"]["weird"][0]["value"], "NaN", "NaN is stored and rendered as such");
    assert_eq!(m["metrics"]["accuracies"].as_array().unwrap().len(), 3);
    assert_eq!(m["metrics"]["scores.precision"][0]["value"], 0.9);
    assert_eq!(run["params"]["max_depth"], "5");
    assert_eq!(run["tags"]["model"], "tree");
    assert_eq!(run["metrics"]["loss"]["value"], 0.2);
}

/// Azure ML v2's inputs: literals (hyper-parameters) become text in the command, a data input may
/// name its datastore the Azure way, and `job show` tells both.
#[tokio::test(flavor = "multi_thread")]
async fn literal_inputs_fill_the_command_and_azure_datastore_uris_are_data() {
    let s = Server::start();
    let dir = setup(&s, 1);
    let data = s.tmp().join("data");
    write_tree(&data, &[("a.csv", b"1,2\n")]);
    s.ok(&["datastore", "upload", "-w", "w", data.to_str().unwrap(), "--target-path", "d", "-q"]);
    code_file(&dir, "args.py", "import sys\nprint('ARGS', sys.argv[1:])\nprint('DATA', open(sys.argv[-1] + '/a.csv').read().strip())\n");
    let file = job_file(
        &dir,
        "lit.yml",
        "code: ./code\ncommand: python args.py ${{inputs.depth}} ${{ inputs.lr }} ${{inputs.bag}} \"${{inputs.penalty}}\" ${{inputs.data}}\n\
         inputs:\n  depth: 10\n  lr: 0.05\n  bag: false\n  penalty: l2 norm\n\
         \x20 data:\n    type: uri_folder\n    path: azureml://datastores/default/paths/d/\n    mode: download\n",
    );
    let id = submit(&s, &file);
    let run = wait_for(&s, &id, ended, 120);
    assert_eq!(run["status"], "Completed", "{run}");
    let log = s.ok(&["job", "logs", &id, "-w", "w"]);
    assert!(log.contains("ARGS ['10', '0.05', 'false', 'l2 norm', '"), "{log}");
    assert!(log.contains("DATA 1,2"), "{log}");
    assert_eq!(run["job"]["inputs"]["depth"], 10);
    assert_eq!(run["job"]["inputs"]["lr"], 0.05);
    assert_eq!(run["job"]["inputs"]["data"]["path"], "azureml://datastores/default/paths/d/");
    let shown = s.ok(&["job", "show", &id, "-w", "w"]);
    assert!(
        shown.contains("bag=false") && shown.contains("depth=10") && shown.contains("penalty=l2 norm"),
        "{shown}"
    );
    assert!(shown.contains("data=azureml://datastores/default/paths/d/ (download)"), "{shown}");

    // What cannot be an input is refused by name, and nothing is queued.
    let cases = [
        (
            "inputs:\n  x:\n    path: datastore://default/d\n    colour: 1\n",
            "inputs.x: unknown field `colour`",
        ),
        (
            "inputs:\n  x:\n    type: integer\n    default: 3\n",
            "inputs.x: an integer input is written as its value (e.g. `x: 0.5`)",
        ),
        (
            "inputs:\n  x:\n    type: mltable\n    path: datastore://default/d\n",
            "inputs.x.type: \"mltable\" is not supported",
        ),
        ("inputs:\n  x: [1, 2]\n", "inputs.x: expected a literal"),
        ("inputs:\n  x:\n", "inputs.x has no value"),
        (
            "inputs:\n  x: azureml://datastores/default/d\n",
            "must look like datastore://NAME/path or azureml://datastores/NAME/paths/path",
        ),
        (
            "inputs:\n  x: azureml://datastores/default/paths/nope\n",
            "does not exist in datastore \"default\"",
        ),
    ];
    for (i, (body, expect)) in cases.iter().enumerate() {
        let file =
            job_file(&dir, &format!("bad{i}.yml"), &format!("command: echo ${{{{inputs.x}}}}\n{body}"));
        let err = s.fails(&["job", "submit", "-f", &file, "-w", "w"]);
        assert!(err.contains(expect), "case {i}: {err}");
    }
    // Through the API, a literal is any JSON number, string or boolean; anything else is named.
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/api/v1/workspaces/w/jobs", s.url))
        .bearer_auth(&s.token)
        .json(&serde_json::json!({"experiment": "tests", "command": "echo ${{inputs.x}}", "environment": "plain",
                                  "compute": "cpu", "inputs": {"x": {"path": "datastore://default/d", "mod": "download"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let text = resp.text().await.unwrap();
    assert!(text.contains("unknown field `mod`"), "{text}");
    let runs = json(&s.ok(&["job", "list", "-w", "w", "-o", "json"]));
    assert_eq!(runs.as_array().unwrap().len(), 1, "only the good job was queued");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_jobs_and_bad_metrics_get_clear_errors() {
    let s = Server::start();
    let dir = setup(&s, 1);
    let cases = [
        (
            "environment: nope\ncompute: cpu\ncommand: 'true'\n",
            "environment \"nope\" in workspace \"w\" not found",
        ),
        ("environment: plain@7\ncompute: cpu\ncommand: 'true'\n", "latest is 1"),
        (
            "environment: plain\ncompute: gpu\ncommand: 'true'\n",
            "compute \"gpu\" in workspace \"w\" not found",
        ),
        ("environment: plain\ncompute: cpu\ncommand: ' '\n", "command must not be empty"),
        ("environment: plain\ncompute: cpu\ncommand: echo ${{inputs.data}}\n", "no input named \"data\""),
        (
            "environment: plain\ncompute: cpu\ncommand: 'true'\ninputs:\n  d: datastore://default/missing\n",
            "does not exist",
        ),
        ("environment: plain\ncompute: cpu\ncommand: 'true'\ncolour: blue\n", "unknown field `colour`"),
    ];
    for (i, (body, expect)) in cases.iter().enumerate() {
        let p = dir.join(format!("bad{i}.yml"));
        std::fs::write(&p, format!("experiment_name: tests\n{body}")).unwrap();
        let err = s.fails(&["job", "submit", "-f", p.to_str().unwrap(), "-w", "w"]);
        assert!(err.contains(expect), "case {i}: {err}");
    }
    let runs = json(&s.ok(&["job", "list", "-w", "w", "-o", "json"]));
    assert_eq!(runs.as_array().unwrap().len(), 0, "no bad job was queued");

    // The tracking API's own checks.
    let http = reqwest::Client::new();
    let run = send_json(
        http.post(format!("{}/api/v1/workspaces/w/runs", s.url))
            .bearer_auth(&s.token)
            .json(&serde_json::json!({"experiment": "manual"})),
    )
    .await;
    let id = run["id"].as_str().unwrap();
    let post = |body: Value| {
        http.post(format!("{}/api/v1/workspaces/w/runs/{id}/log-batch", s.url))
            .bearer_auth(&s.token)
            .json(&body)
            .send()
    };
    let many: Vec<Value> = (0..1001).map(|i| serde_json::json!({"key": "m", "value": i})).collect();
    for (body, expect) in [
        (serde_json::json!({"metrics": [{"key": "m", "value": "high"}]}), "not a number"),
        (serde_json::json!({"metrics": [{"key": "k".repeat(251), "value": 1}]}), "1 to 250"),
        (serde_json::json!({"metrics": many}), "at most 1000 metrics"),
    ] {
        let resp = post(body).await.unwrap();
        assert_eq!(resp.status(), 400);
        assert!(resp.text().await.unwrap().contains(expect), "{expect}");
    }
    let resp = post(serde_json::json!({"metrics": [{"key": "inf", "value": "Infinity"}], "params": [{"key": "p", "value": "1"}]})).await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = post(serde_json::json!({"params": [{"key": "p", "value": "2"}]})).await.unwrap();
    assert_eq!(resp.status(), 400, "params cannot change");
    let m = json(&s.ok(&["run", "metrics", id, "-w", "w", "-o", "json"]));
    assert_eq!(m["metrics"]["inf"][0]["value"], "Infinity");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_running_when_the_server_dies_is_reattached_and_completes() {
    let s = Server::start();
    let dir = setup(&s, 1);
    // The job waits at two gates: `go` (opened while the server is down: its second metric must
    // wait for the next server) and `go2` (opened once the test has seen it reattached).
    code_file(
        &dir,
        "train.py",
        r#"
import os, time
from cairn import Run
run = Run.get_context()
def gate(name):
    while not os.path.exists(name):
        time.sleep(0.05)
print("first-" + str(6 * 7), flush=True)
run.log("before", 1.0)
run.flush()
gate("go")
run.log("after", 2.0)
print("second-" + str(6 * 8), flush=True)
os.makedirs("outputs", exist_ok=True)
open("outputs/x.txt", "w").write("made across a restart")
gate("go2")
"#,
    );
    let file = job_file(&dir, "train.yml", "code: ./code\ncommand: python train.py\n");
    let id = submit(&s, &file);
    wait_for(&s, &id, |r| r["metrics"]["before"]["value"] == 1.0, 60);
    let run_dir = s.data_dir.join("runs").join(&id);
    let mut s = s;
    s.kill9();
    std::fs::write(run_dir.join("go"), "").unwrap();
    // The job goes on without a server: it prints, writes its output, keeps its metric to retry.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(run_dir.join("logs/std_log.txt")).unwrap().contains("second-48") {
        assert!(Instant::now() < deadline, "the job stopped with the server");
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = s.restart_keeping_address();
    assert!(s.wait_for_log("reattaching to a running job"), "{}", s.log());
    let r = json(&s.ok(&["job", "show", &id, "-w", "w", "-o", "json"]));
    assert_eq!(r["status"], "Running", "{r}");
    std::fs::write(run_dir.join("go2"), "").unwrap();
    let r = wait_for(&s, &id, ended, 60);
    assert_eq!(r["status"], "Completed", "{r}");
    // The metric logged while the server was away arrived (the job's token survived the restart).
    assert_eq!(r["metrics"]["before"]["value"], 1.0, "{r}");
    assert_eq!(r["metrics"]["after"]["value"], 2.0, "{r}");
    let dest = s.tmp().join("dl");
    s.ok(&["job", "download", &id, "--dest", dest.to_str().unwrap(), "-w", "w"]);
    assert_eq!(
        std::fs::read_to_string(dest.join(&id).join("outputs/x.txt")).unwrap(),
        "made across a restart"
    );
    let log = std::fs::read_to_string(dest.join(&id).join("logs/std_log.txt")).unwrap();
    let (first, second) = (log.find("first-42").unwrap(), log.find("second-48").unwrap());
    assert!(first < second, "{log}");
    assert!(log.contains("reattached to the job"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_ends_while_the_server_is_down_is_finalized_at_restart() {
    let s = Server::start();
    let dir = setup(&s, 1);
    let body = "command: echo up-$((1+1)); while [ ! -f go ]; do sleep 0.05; done; mkdir -p outputs; \
                echo kept > outputs/x.txt; echo boom-$((2+3)) >&2; exit 3\n";
    let id = submit(&s, &job_file(&dir, "fail.yml", body));
    wait_for(&s, &id, |r| r["status"] == "Running", 60);
    let run_dir = s.data_dir.join("runs").join(&id);
    let mut s = s;
    s.kill9();
    std::fs::write(run_dir.join("go"), "").unwrap();
    // The shim records how the command ended, with nobody to tell.
    wait_for_file(&run_dir.join(".cairn/exit.json"), 10);
    let s = s.restart();
    let r = wait_for(&s, &id, ended, 30);
    assert_eq!(r["status"], "Failed", "{r}");
    let error = r["error"].as_str().unwrap();
    assert!(error.contains("exit code 3") && error.contains("boom-5"), "{error}");
    let dest = s.tmp().join("dl");
    s.ok(&["job", "download", &id, "--dest", dest.to_str().unwrap(), "-w", "w"]);
    assert_eq!(std::fs::read_to_string(dest.join(&id).join("outputs/x.txt")).unwrap(), "kept\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reattached_job_can_be_canceled_and_times_out_on_its_original_deadline() {
    let s = Server::start();
    let dir = setup(&s, 2);
    let body = "command: sleep 300 & echo $! > child.pid; wait\n";
    let canceled = submit(&s, &job_file(&dir, "long.yml", body));
    let timed = submit(&s, &job_file(&dir, "timed.yml", &format!("{body}timeout: 8\n")));
    let started = wait_for(&s, &timed, |r| r["status"] == "Running", 60)["started_at"].as_i64().unwrap();
    wait_for(&s, &canceled, |r| r["status"] == "Running", 60);
    let child = read_pid(&s.data_dir.join("runs").join(&canceled).join("child.pid"));
    // Half of the timeout passes before the restart: a deadline counted again from the restart
    // would end the job 12 s or more after its start.
    let now =
        || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    std::thread::sleep(Duration::from_millis((started + 4000 - now()).max(0) as u64));
    let s = s.restart();
    assert_eq!(json(&s.ok(&["job", "show", &canceled, "-w", "w", "-o", "json"]))["status"], "Running");
    assert!(running(child), "the job did not survive the restart");
    s.ok(&["job", "cancel", &canceled, "-w", "w"]);
    assert_eq!(wait_for(&s, &canceled, ended, 30)["status"], "Canceled");
    let deadline = Instant::now() + Duration::from_secs(5);
    while running(child) {
        assert!(Instant::now() < deadline, "the grandchild {child} survived the cancel");
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = wait_for(&s, &timed, ended, 30);
    assert_eq!(r["status"], "Failed", "{r}");
    assert!(r["error"].as_str().unwrap().contains("timed out after 8 s"), "{r}");
    let took = r["ended_at"].as_i64().unwrap() - started;
    assert!((8000..11_000).contains(&took), "the timeout did not keep its original deadline: {took} ms");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_whose_supervisor_died_with_the_server_fails_clearly_and_queued_ones_stay() {
    let s = Server::start();
    let dir = setup(&s, 1);
    let file = job_file(&dir, "long.yml", "command: sleep 300 & echo $! > child.pid; wait\n");
    let running_id = submit(&s, &file);
    let queued = submit(&s, &file);
    wait_for(&s, &running_id, |r| r["status"] == "Running", 60);
    assert_eq!(json(&s.ok(&["job", "show", &queued, "-w", "w", "-o", "json"]))["status"], "Queued");
    let run_dir = s.data_dir.join("runs").join(&running_id);
    let child = read_pid(&run_dir.join("child.pid"));
    let mut s = s;
    s.kill9();
    // The shim dies with the server (as when the machine restarts), its job's command survives.
    let shim: Value = json(&std::fs::read_to_string(run_dir.join(".cairn/shim.json")).unwrap());
    let shim_pid = shim["pid"].as_i64().unwrap() as i32;
    // SAFETY: kill(2) on the shim only, not its group.
    unsafe { libc::kill(shim_pid, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while running(shim_pid) {
        assert!(Instant::now() < deadline, "the shim {shim_pid} did not die");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(running(child));
    let s = s.restart();
    let r = wait_for(&s, &running_id, ended, 30);
    assert_eq!(r["status"], "Failed");
    let error = r["error"].as_str().unwrap();
    assert!(
        error.contains("server stopped while this run was Running") && error.contains("supervisor is gone"),
        "{r}"
    );
    // Its leftover processes were stopped.
    let deadline = Instant::now() + Duration::from_secs(5);
    while running(child) {
        assert!(Instant::now() < deadline, "the job's process {child} was left running");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The queued job survived and now runs on the freed node.
    wait_for(&s, &queued, |r| r["status"] == "Running", 60);
    s.ok(&["job", "cancel", &queued, "-w", "w"]);
    assert_eq!(wait_for(&s, &queued, ended, 30)["status"], "Canceled");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_adds_immutable_properties_and_logs_to_child_runs_with_its_token() {
    let s = Server::start();
    let dir = setup(&s, 2);
    code_file(
        &dir,
        "props.py",
        r#"
import json, os, urllib.request
from cairn import Run, ServerError
run = Run.get_context()
run.add_properties({"dataset": "wine", "folds": 2})
try:
    run.add_properties({"dataset": "iris"})
    print("PROPERTY CHANGED")
except ServerError as e:
    print("property change:", e.status)
for fold in range(2):
    child = run.child_run(f"fold-{fold}")
    child.log("rmse", 0.5 + fold)
    child.log_param("fold", fold)
    child.complete()
# The job's token creates children of its own run only.
req = urllib.request.Request(
    f"{os.environ['CAIRN_TRACKING_URI']}/api/v1/workspaces/w/runs",
    data=json.dumps({"experiment": "tests"}).encode(),
    headers={"Authorization": "Bearer " + os.environ["CAIRN_RUN_TOKEN"], "Content-Type": "application/json"},
    method="POST")
try:
    urllib.request.urlopen(req)
    print("TOP-LEVEL RUN CREATED")
except urllib.error.HTTPError as e:
    print("top-level run:", e.code)
"#,
    );
    let file = job_file(&dir, "props.yml", "code: ./code\ncommand: python props.py\n");
    let out =
        s.cmd().args(["job", "submit", "-f", &file, "-w", "w", "--stream", "-o", "json"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("property change: 409"), "{stdout}");
    assert!(stdout.contains("top-level run: 403"), "{stdout}");
    let run = json(&stdout[stdout.find("{\n").unwrap()..]);
    assert_eq!(run["status"], "Completed", "{run}");
    let id = run["id"].as_str().unwrap();
    let shown = json(&s.ok(&["run", "show", id, "-w", "w", "-o", "json"]));
    assert_eq!(shown["properties"], serde_json::json!({"dataset": "wine", "folds": "2"}));
    assert_eq!(shown["created_by"], "admin", "the submitter's token: {shown}");
    let children = send_json(
        reqwest::Client::new()
            .get(format!("{}/api/v1/workspaces/w/runs?parent={id}", s.url))
            .bearer_auth(&s.token),
    )
    .await;
    let mut children: Vec<&Value> = children.as_array().unwrap().iter().collect();
    children.sort_by_key(|c| c["display_name"].as_str().unwrap().to_string());
    assert_eq!(children.len(), 2, "{children:?}");
    for (fold, child) in children.iter().enumerate() {
        assert_eq!(child["display_name"], format!("fold-{fold}"));
        assert_eq!(child["parent_id"], id);
        assert_eq!(child["status"], "Completed");
        assert_eq!(child["metrics"]["rmse"]["value"], 0.5 + fold as f64);
        assert_eq!(child["params"]["fold"], fold.to_string());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_over_its_nodes_memory_is_stopped_with_a_clear_reason() {
    let s = Server::start();
    let dir = setup(&s, 1); // size `small`: 2 GiB per node
                            // A child process (in the job's group) fills 3 GiB, touching every page; then both wait.
    let body = "command: python -c \"import subprocess, sys, time; \
                subprocess.Popen([sys.executable, '-c', 'import time; x = bytearray(b\\\"x\\\") * (3 << 30); time.sleep(120)']); \
                time.sleep(120)\"\ntimeout: 100\n";
    let id = submit(&s, &job_file(&dir, "oom.yml", body));
    let done = wait_for(&s, &id, ended, 90);
    assert_eq!(done["status"], "Failed", "{done}");
    let error = done["error"].as_str().unwrap();
    assert!(error.contains("exceeded the memory limit of 2 GiB"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_registers_its_model_with_its_own_run_token() {
    let s = Server::start();
    let dir = setup(&s, 1);
    code_file(
        &dir,
        "train.py",
        r#"
import os
from cairn import Run
run = Run.get_context()
run.log("rmse", 0.61)
os.makedirs("outputs", exist_ok=True)
open("outputs/wine_model.pkl", "wb").write(b"pretend pickle")
model = run.register_model(model_name="wine_model", model_path="outputs/wine_model.pkl",
                           tags={"area": "wine"}, description="from a job", properties={"rmse": 0.61})
print("REGISTERED", model.name, model.id, model.version)
try:
    run.register_model(model_name="wine_model", model_path="outputs/missing.pkl")
except Exception as e:
    print("REFUSED", getattr(e, "status", None))
"#,
    );
    let file = job_file(&dir, "train.yml", "code: ./code\ncommand: python train.py\n");
    let out =
        s.cmd().args(["job", "submit", "-f", &file, "-w", "w", "--stream", "-o", "json"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("REGISTERED wine_model wine_model:1 1"), "{stdout}");
    assert!(stdout.contains("REFUSED 404"), "{stdout}");
    let run = json(&stdout[stdout.find("{\n").unwrap()..]);
    let v = json(&s.ok(&["model", "show", "wine_model:1", "-w", "w", "-o", "json"]));
    assert_eq!(v["run_id"], run["id"], "{v}");
    assert_eq!((v["tags"]["area"].as_str(), v["properties"]["rmse"].as_str()), (Some("wine"), Some("0.61")));
    assert_eq!(v["description"], "from a job");
    assert_eq!(v["size"], "pretend pickle".len());
    assert!(v["created_by"].as_str().unwrap().contains(run["id"].as_str().unwrap()), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_followed_log_streams_while_the_job_runs_and_closes_when_it_ends() {
    let s = Server::start();
    let dir = setup(&s, 1);
    // A workspace size is what the job's node gets.
    let cores = std::thread::available_parallelism().unwrap().get().to_string();
    s.ok(&["compute", "size", "add", "whole", "--cores", &cores, "--memory-gb", "1", "-w", "w"]);
    std::fs::write(dir.join("whole.yml"), "name: whole\ntype: amlcompute\nsize: whole\nmax_instances: 1\n")
        .unwrap();
    s.ok(&["compute", "create", "-f", dir.join("whole.yml").to_str().unwrap(), "-w", "w"]);
    // The job prints a line, then waits for the test to let it go on. (The markers are computed so
    // that the command line, which the log also shows, does not contain them.)
    let body =
        "command: echo begin-$((40+2)) cores=$CAIRN_NODE_CORES; while [ ! -f go ]; do sleep 0.1; done; \
                echo end-$((50+1))\n";
    let file = dir.join("gate.yml");
    std::fs::write(&file, format!("experiment_name: tests\nenvironment: plain\ncompute: whole\n{body}"))
        .unwrap();
    let id = submit(&s, file.to_str().unwrap());
    let mut resp = reqwest::Client::new()
        .get(format!("{}/api/v1/workspaces/w/runs/{id}/logs?follow=true", s.url))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let mut got = String::new();
    while !got.contains("begin-42 cores=") || !got[got.find("begin-42").unwrap()..].contains('\n') {
        let chunk = resp.chunk().await.unwrap().unwrap_or_else(|| panic!("stream ended early: {got}"));
        got.push_str(&String::from_utf8_lossy(&chunk));
    }
    // The first line arrived while the job is still running (it waits for `go`).
    let r = json(&s.ok(&["job", "show", &id, "-w", "w", "-o", "json"]));
    assert_eq!(r["status"], "Running", "{r}");
    assert!(got.contains(&format!("begin-42 cores={cores}\n")), "{got}");
    std::fs::write(s.data_dir.join("runs").join(&id).join("go"), "").unwrap();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        got.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(got.contains("end-51"), "{got}");
    let r = json(&s.ok(&["job", "show", &id, "-w", "w", "-o", "json"]));
    assert_eq!(r["status"], "Completed", "the stream closed only once the run ended: {r}");
    // The same log again, from an offset, and for a run that has ended: all of it, then the end.
    let offset = got.find("end-51").unwrap();
    let again = reqwest::Client::new()
        .get(format!("{}/api/v1/workspaces/w/runs/{id}/logs?follow=true&offset={offset}", s.url))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(again, got[offset..]);

    // A stopping server ends a follow stream instead of waiting for the run (which never ends).
    let file = job_file(&dir, "forever.yml", "command: echo up-$((1+1)); sleep 600\n");
    let id = submit(&s, &file);
    let mut resp = reqwest::Client::new()
        .get(format!("{}/api/v1/workspaces/w/runs/{id}/logs?follow=true", s.url))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    let mut got = String::new();
    while !got.contains("up-2") {
        let chunk = resp.chunk().await.unwrap().unwrap_or_else(|| panic!("stream ended early: {got}"));
        got.push_str(&String::from_utf8_lossy(&chunk));
    }
    let mut s = s;
    let stopper = std::thread::spawn(move || {
        let ok = s.terminate();
        (ok, s.log())
    });
    while let Ok(Some(_)) = resp.chunk().await {}
    let (ok, log) = stopper.join().unwrap();
    assert!(ok, "{log}");
    assert!(!log.contains("did not finish"), "the follow stream held the stop: {log}");
    // The job is not stopped with the server: it is left for the next one to reattach.
    assert!(log.contains("1 jobs keep running; they will be reattached at next start"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn job_submit_stream_prints_the_log_from_the_follow_stream() {
    let s = Server::start();
    let dir = setup(&s, 1);
    // `job submit --stream` prints the log from the stream.
    let file = job_file(&dir, "echo.yml", "command: echo streamed-$((6*7))\n");
    let out = s.ok(&["job", "submit", "-f", &file, "-w", "w", "--stream"]);
    assert!(out.contains("streamed-42"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("status") && l.contains("Completed")), "{out}");
}

/// A run whose environment, code and inputs were not ready when the server died (issue 3): it
/// is failed at restart saying so, rather than re-queued, because a preparation that brings the
/// server down (a huge input, a build that exhausts memory) would otherwise do it again at every
/// start; nothing of the job's command has run, so submitting again is safe. The queued job
/// behind it stays queued and runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_left_preparing_at_restart_is_failed_clearly_and_the_queue_goes_on() {
    let cache = tempfile::tempdir().unwrap();
    let s = Server::start_with(Opts {
        args: vec!["--env-cache".into(), cache.path().display().to_string()],
        ..Default::default()
    });
    let dir = setup(&s, 1);
    // The test holds the environment's build lock, as another server building it would: the
    // run waits in `Preparing` for as long as the test wants.
    let hash =
        json(&s.ok(&["env", "show", "plain", "-w", "w", "-o", "json"]))["hash"].as_str().unwrap().to_string();
    let lock = std::fs::File::create(cache.path().join(format!("{hash}.lock"))).unwrap();
    lock.lock().unwrap();
    let file = job_file(&dir, "job.yml", "command: echo done-$((40+2))\n");
    let preparing = submit(&s, &file);
    let queued = submit(&s, &file);
    wait_for(&s, &preparing, |r| r["status"] == "Preparing", 30);
    let log = s.data_dir.join("runs").join(&preparing).join("logs/std_log.txt");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("preparing environment") {
        assert!(Instant::now() < deadline, "the run did not start preparing");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Held there by the lock (the build of an empty environment takes well under a second).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(json(&s.ok(&["job", "show", &preparing, "-w", "w", "-o", "json"]))["status"], "Preparing");
    assert_eq!(json(&s.ok(&["job", "show", &queued, "-w", "w", "-o", "json"]))["status"], "Queued");

    let s = s.restart();
    let r = wait_for(&s, &preparing, ended, 30);
    assert_eq!(r["status"], "Failed", "{r}");
    let error = r["error"].as_str().unwrap();
    assert!(
        error.contains("server stopped while this run was Preparing")
            && error.contains("Submit the job again"),
        "{error}"
    );
    assert!(s.log().contains("marked Failed"), "{}", s.log());
    // The queued job takes the freed node, waits for the environment like the first, and
    // completes once the lock is released.
    wait_for(&s, &queued, |r| r["status"] == "Preparing", 30);
    drop(lock);
    let r = wait_for(&s, &queued, ended, 120);
    assert_eq!(r["status"], "Completed", "{r}");
}
