//! The MLflow tracking API with the stock MLflow client (`mlflow-skinny`, installed into .venv by
//! scripts/setup.sh): a real Python script logs through `MLFLOW_TRACKING_URI`, and the CLI sees
//! the same runs.

mod common;

use std::process::Command;

use common::{clear_cairn_env, repo_root, send_json, Server};
use serde_json::Value;

fn python() -> std::path::PathBuf {
    let py = repo_root().join(".venv/bin/python");
    assert!(py.exists(), "{} is missing: run scripts/setup.sh", py.display());
    py
}

/// Runs `script` with the MLflow client pointed at workspace `ws` of `s`; returns stdout.
fn run_mlflow(s: &Server, ws: &str, script: &str) -> String {
    let mut cmd = Command::new(python());
    clear_cairn_env(&mut cmd);
    let out = cmd
        .arg(repo_root().join("crates/cairn/tests/mlflow").join(script))
        .env("MLFLOW_TRACKING_URI", format!("{}/workspaces/{ws}/mlflow", s.url))
        .env("MLFLOW_TRACKING_TOKEN", &s.token)
        .env("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        .env("HOME", &s.home)
        .current_dir(s.tmp())
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        s.log()
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn stock_mlflow_client_logs_runs_that_cairn_shows() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    let stdout = run_mlflow(&s, "w", "client.py");
    let facts: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(facts["bad_key_message"].as_str().unwrap().contains("1 to 250"), "{facts}");

    let id = facts["run_id"].as_str().unwrap();
    let run: Value = serde_json::from_str(&s.ok(&["run", "show", id, "-w", "w", "-o", "json"])).unwrap();
    assert_eq!(run["status"], "Completed", "{run}");
    assert_eq!(run["experiment"], "wine_expt");
    assert_eq!(run["display_name"], "elasticnet-a");
    assert_eq!(run["params"]["alpha"], "0.5");
    assert_eq!(run["params"]["l1_ratio"], "0.1");
    assert_eq!(run["params"]["solver"], "cd");
    assert_eq!(run["metrics"]["rmse"]["value"], 0.7);
    assert_eq!(run["metrics"]["rmse"]["step"], 2);
    assert_eq!(run["metrics"]["r2"]["value"], 0.42);
    assert_eq!(run["tags"]["model"], "elasticnet");
    assert!(run["tags"].get("mlflow.runName").is_none(), "the name is the display name: {run}");
}

#[tokio::test]
async fn mlflow_errors_have_mlflows_shape() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    let base = "/workspaces/w/mlflow/api/2.0/mlflow";
    // No token: 401 before anything is looked up.
    let r = reqwest::get(format!("{}{base}/experiments/get-by-name?experiment_name=x", s.url)).await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error_code"], "UNAUTHENTICATED");
    let (status, body) = s.get(&format!("{base}/experiments/get-by-name?experiment_name=nope")).await;
    assert_eq!((status, &body["error_code"]), (404, &Value::from("RESOURCE_DOES_NOT_EXIST")), "{body}");
    let search = serde_json::json!({"experiment_ids": ["0"], "filter": "metrics.rmse < 'x'"});
    let (status, body) = s.post(&format!("{base}/runs/search"), search).await;
    assert_eq!((status, &body["error_code"]), (400, &Value::from("INVALID_PARAMETER_VALUE")), "{body}");
    let (status, body) = s.call(reqwest::Method::POST, &format!("{base}/no/such"), None).await;
    assert_eq!((status, &body["error_code"]), (404, &Value::from("ENDPOINT_NOT_FOUND")), "{body}");
}

/// MLflow's ListArtifacts (`artifacts/list`): one level of a run's artifacts, paths from the
/// run's artifact root, that root as `root_uri`, the run's artifacts as the proxy stored them.
#[tokio::test]
async fn a_runs_artifacts_are_listed_a_level_at_a_time() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    let base = "/workspaces/w/mlflow/api/2.0/mlflow";
    let (_, exp) =
        s.post(&format!("{base}/experiments/create"), serde_json::json!({"name": "listing"})).await;
    let eid = exp["experiment_id"].as_str().unwrap().to_string();
    let (_, run) = s.post(&format!("{base}/runs/create"), serde_json::json!({"experiment_id": eid})).await;
    let rid = run["run"]["info"]["run_id"].as_str().unwrap().to_string();
    let root = format!("{eid}/{rid}/artifacts");
    for (path, body) in [("model/MLmodel", "m"), ("model/data/w.bin", "weights"), ("notes.txt", "n")] {
        let resp = reqwest::Client::new()
            .put(format!("{}/workspaces/w/mlflow/api/2.0/mlflow-artifacts/artifacts/{root}/{path}", s.url))
            .bearer_auth(&s.token)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
    }
    let list = |query: String| {
        let s = &s;
        async move { s.get(&format!("{base}/artifacts/list?{query}")).await }
    };
    let (status, top) = list(format!("run_id={rid}")).await;
    assert_eq!(status, 200, "{top}");
    assert_eq!(top["root_uri"], format!("mlflow-artifacts:/{root}"));
    assert_eq!(
        top["files"],
        serde_json::json!([{"path": "model", "is_dir": true}, {"path": "notes.txt", "is_dir": false, "file_size": 1}])
    );
    let (_, model) = list(format!("run_id={rid}&path=model")).await;
    assert_eq!(
        model["files"],
        serde_json::json!([{"path": "model/MLmodel", "is_dir": false, "file_size": 1}, {"path": "model/data", "is_dir": true}])
    );
    let (_, file) = list(format!("run_id={rid}&path=notes.txt")).await;
    assert_eq!(file["files"], serde_json::json!([]), "a file lists nothing below it, as in MLflow");
    let (status, body) = list(format!("run_id={rid}&path=../other")).await;
    assert_eq!((status, &body["error_code"]), (400, &Value::from("INVALID_PARAMETER_VALUE")), "{body}");
    let (status, body) = list("run_id=nope".into()).await;
    assert_eq!((status, &body["error_code"]), (404, &Value::from("RESOURCE_DOES_NOT_EXIST")), "{body}");
    let (status, body) = list(String::new()).await;
    assert_eq!((status, &body["error_code"]), (400, &Value::from("INVALID_PARAMETER_VALUE")), "{body}");
}

/// A job whose script uses the stock MLflow client (installed into the job's environment by the
/// real `uv`): `mlflow.start_run()` resumes the job's own run (MLFLOW_RUN_ID), so its metrics,
/// params and artifacts land there.
#[tokio::test(flavor = "multi_thread")]
async fn a_jobs_mlflow_logging_lands_in_its_own_run() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    let dir = s.tmp().join("spec");
    let code = dir.join("code");
    std::fs::create_dir_all(&code).unwrap();
    std::fs::write(dir.join("compute.yml"), "name: cpu\ntype: amlcompute\nsize: small\nmax_instances: 1\n")
        .unwrap();
    std::fs::write(dir.join("env.yml"), "name: mlf\npip:\n  - mlflow-skinny==3.17.2\n").unwrap();
    std::fs::write(
        code.join("train.py"),
        "import mlflow\n\
         with mlflow.start_run() as run:\n\
         \x20   mlflow.log_param('alpha', '0.5')\n\
         \x20   for step, v in enumerate([0.5, 0.7, 0.9]):\n\
         \x20       mlflow.log_metric('acc', v, step=step)\n\
         \x20   mlflow.log_dict({'ok': True}, 'summary.json')\n\
         \x20   print('logged into', run.info.run_id)\n\
         \x20   score = mlflow.trace(name='score')(lambda x: x + 1)\n\
         \x20   score(1)\n\
         \x20   tid = mlflow.get_last_active_trace_id()\n\
         \x20   mlflow.flush_trace_async_logging()\n\
         \x20   t = mlflow.get_trace(tid)\n\
         \x20   print('traced', tid, t.info.state, [s.name for s in t.data.spans], t.info.request_metadata.get('mlflow.sourceRun'))\n\
         \x20   import os, tempfile\n\
         \x20   c = mlflow.MlflowClient()\n\
         \x20   m = c.create_logged_model(run.info.experiment_id, name='m', source_run_id=run.info.run_id)\n\
         \x20   d = tempfile.mkdtemp()\n\
         \x20   open(os.path.join(d, 'weights.txt'), 'w').write('42')\n\
         \x20   c.log_model_artifacts(m.model_id, d)\n\
         \x20   c.finalize_logged_model(m.model_id, 'READY')\n\
         \x20   print('model', m.model_id, 'weights', open(mlflow.artifacts.download_artifacts(m.artifact_location + '/weights.txt')).read())\n\
         \x20   from mlflow.exceptions import MlflowException\n\
         \x20   def refused(label, f):\n\
         \x20       try:\n\
         \x20           f()\n\
         \x20           print('allowed', label)\n\
         \x20       except MlflowException as e:\n\
         \x20           print('refused', label, e.error_code)\n\
         \x20   mv = mlflow.register_model('models:/' + m.model_id, 'jobmodel')\n\
         \x20   print('registered', mv.version, mv.run_id)\n\
         \x20   mlflow.log_text('artifact_path: model\\nflavors: {}\\n', 'model/MLmodel')\n\
         \x20   mv = mlflow.register_model('runs:/' + run.info.run_id + '/model', 'jobmodel')\n\
         \x20   print('registered', mv.version, mv.run_id)\n\
         \x20   other = os.environ['OTHER_RUN']\n\
         \x20   refused('other-run', lambda: c.create_model_version('jobmodel', 'runs:/' + other + '/model'))\n\
         \x20   refused('other-lineage', lambda: c.create_model_version('jobmodel', 'runs:/' + run.info.run_id + '/model', run_id=other))\n\
         \x20   refused('version-source', lambda: c.create_model_version('jobmodel', 'mlflow-artifacts:/registry/jobmodel/1'))\n\
         \x20   refused('alias', lambda: c.set_registered_model_alias('jobmodel', 'champion', '1'))\n\
         \x20   refused('delete', lambda: c.delete_registered_model('jobmodel'))\n\
         score(2)\n\
         outside = mlflow.get_last_active_trace_id()\n\
         mlflow.flush_trace_async_logging()\n\
         print('outside', mlflow.get_trace(outside).info.request_metadata.get('mlflow.sourceRun'))\n",
    )
    .unwrap();
    // A run the job's token must not register from.
    let (_, other) =
        s.post("/api/v1/workspaces/w/runs", serde_json::json!({"experiment": "elsewhere"})).await;
    let other = other["id"].as_str().unwrap_or_else(|| panic!("{other}")).to_string();
    std::fs::write(
        dir.join("job.yml"),
        format!(
            "experiment_name: mlflow_jobs\nenvironment: mlf\ncompute: cpu\ncode: ./code\n\
             command: python train.py\nenvironment_variables:\n  OTHER_RUN: {other}\n"
        ),
    )
    .unwrap();
    s.ok(&["compute", "create", "-f", dir.join("compute.yml").to_str().unwrap(), "-w", "w"]);
    s.ok(&["env", "create", "-f", dir.join("env.yml").to_str().unwrap(), "-w", "w"]);
    let out = s.ok(&[
        "job",
        "submit",
        "-f",
        dir.join("job.yml").to_str().unwrap(),
        "-w",
        "w",
        "--wait",
        "-o",
        "json",
    ]);
    let run: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{}", s.log()));
    let id = run["id"].as_str().unwrap();
    assert_eq!(run["status"], "Completed", "{run}");
    assert_eq!(run["experiment"], "mlflow_jobs");
    assert_eq!(run["params"]["alpha"], "0.5", "{run}");
    assert_eq!(run["metrics"]["acc"]["value"], 0.9, "{run}");
    assert_eq!(run["metrics"]["acc"]["step"], 2, "{run}");
    let files = s.ok(&["run", "show", id, "-w", "w", "-o", "json"]);
    let dest = s.tmp().join("dl");
    s.ok(&["job", "download", id, "--dest", dest.to_str().unwrap(), "-w", "w"]);
    let summary = std::fs::read_to_string(dest.join(id).join("summary.json"))
        .unwrap_or_else(|e| panic!("summary.json is not among the run's artifacts ({e}): {files}"));
    assert!(summary.contains("\"ok\": true"), "{summary}");
    let log = std::fs::read_to_string(dest.join(id).join("logs/std_log.txt")).unwrap();
    assert!(log.contains(&format!("logged into {id}")), "{log}");
    // The job's run-scoped token logged a trace of its run, spans and all, and read it back.
    assert!(log.contains(&format!(" OK ['score'] {id}")), "{log}");
    assert!(log.contains(&format!("outside {id}")), "a trace outside start_run is the job's too: {log}");
    let trace_id = log.split("traced ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap();
    let (_, got) = s.get(&format!("/workspaces/w/mlflow/api/3.0/mlflow/traces/{trace_id}")).await;
    assert_eq!(got["trace"]["trace_info"]["trace_metadata"]["mlflow.sourceRun"], id, "{got}");
    // The job's run-scoped token created, filled, finalized and read back a logged model of its
    // own run.
    assert!(log.contains(" weights 42"), "{log}");
    let model_id = log.split("model m-").nth(1).and_then(|r| r.split_whitespace().next()).unwrap();
    let (_, got) = s.get(&format!("/workspaces/w/mlflow/api/2.0/mlflow/logged-models/m-{model_id}")).await;
    assert_eq!(got["model"]["info"]["status"], "LOGGED_MODEL_READY", "{got}");
    assert_eq!(got["model"]["info"]["source_run_id"], id, "{got}");
    // `mlflow.register_model` with the run token registered its own logged model and its own run's
    // artifacts, and nothing else.
    assert!(log.contains(&format!("registered 1 {id}")), "{log}");
    assert!(log.contains(&format!("registered 2 {id}")), "{log}");
    for what in ["other-run", "other-lineage", "version-source", "alias", "delete"] {
        assert!(log.contains(&format!("refused {what} PERMISSION_DENIED")), "{what}: {log}");
    }
    let (_, versions) = s.get("/api/v1/workspaces/w/models/jobmodel/versions").await;
    let versions = versions.as_array().unwrap_or_else(|| panic!("{versions}"));
    assert_eq!(versions.len(), 2, "{versions:?}");
    let v1 = versions.iter().find(|v| v["version"] == 1).unwrap();
    assert_eq!(v1["run_id"], id, "{v1}");
    assert_eq!(v1["logged_model_id"], format!("m-{model_id}"), "{v1}");
    let v2 = versions.iter().find(|v| v["version"] == 2).unwrap();
    assert_eq!(v2["run_id"], id, "{v2}");
    assert!(v2["logged_model_id"].is_null(), "{v2}");
}

/// MLflow's proxied multipart upload (`mlflow-artifacts/mpu/*`), spoken by hand to reach each
/// refusal: part URLs work without a token but only with their signature, nothing is visible
/// before `complete`, a missing part is 400, an unknown upload 404, traversal 400, and `complete`
/// and `abort` leave no staging behind.
#[tokio::test]
async fn multipart_artifact_uploads_refuse_bad_parts_and_show_nothing_before_complete() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    let api = format!("{}/workspaces/w/mlflow/api/2.0", s.url);
    let http = reqwest::Client::new();
    let post = |path: String, body: Value| {
        let req = http.post(format!("{api}/{path}")).bearer_auth(&s.token).json(&body);
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, run) = post("mlflow/runs/create".into(), serde_json::json!({"experiment_id": "0"})).await;
    assert_eq!(status, 200, "{run}");
    let run = run["run"]["info"]["run_id"].as_str().unwrap().to_string();
    let dir = format!("0/{run}/artifacts/model");
    let staging = s.data_dir.join("artifacts/mlflow-uploads");
    let staged = || common::files_under(&staging);

    // No token: 401, before anything is looked up.
    let r = http
        .post(format!("{api}/mlflow-artifacts/mpu/create/{dir}"))
        .json(&serde_json::json!({"path": "/tmp/big.bin", "num_parts": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Traversal in the folder or the file name: 400, nothing staged.
    for (path, file) in [
        (format!("0/{run}/artifacts/..%2F..%2Fx"), "/tmp/big.bin"),
        (dir.clone(), "/tmp/.."),
        (dir.clone(), "/tmp/"),
    ] {
        let (status, body) = post(
            format!("mlflow-artifacts/mpu/create/{path}"),
            serde_json::json!({"path": file, "num_parts": 2}),
        )
        .await;
        assert_eq!(
            (status, body["error_code"].as_str()),
            (400, Some("INVALID_PARAMETER_VALUE")),
            "{path} {file}: {body}"
        );
    }
    let (status, body) = post(
        format!("mlflow-artifacts/mpu/create/{dir}"),
        serde_json::json!({"path": "/tmp/big.bin", "num_parts": 10001}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(staged().is_empty(), "{:?}", staged());

    let (status, created) = post(
        format!("mlflow-artifacts/mpu/create/{dir}"),
        serde_json::json!({"path": "/tmp/big.bin", "num_parts": 2}),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let upload_id = created["upload_id"].as_str().unwrap().to_string();
    let urls: Vec<String> = created["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["url"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(urls.len(), 2, "{created}");
    assert!(urls[0].starts_with(&s.url), "part URLs point back at this server: {urls:?}");

    // Part 1 with its URL and no token: accepted, with an ETag.
    let part1 = vec![b'a'; 300_000];
    let r = http.put(&urls[0]).body(part1.clone()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), format!("\"{}\"", common::sha256_hex(&part1)),);
    // A forged or altered URL: 403, and the part is not replaced.
    let (without_sig, _) = urls[1].split_once("&signature=").unwrap();
    let later = urls[1].replace("expires=", "expires=9");
    let other_part = urls[1].replace(&format!("{upload_id}/2?"), &format!("{upload_id}/1?"));
    for bad in [format!("{without_sig}&signature=00"), without_sig.to_string(), later, other_part] {
        let r = http.put(&bad).body("evil").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 403, "{bad}");
        assert_eq!(r.json::<Value>().await.unwrap()["error_code"], "PERMISSION_DENIED");
    }

    let artifact = format!("{api}/mlflow-artifacts/artifacts/{dir}/big.bin");
    let complete = |id: &str, parts: Value| {
        post(
            format!("mlflow-artifacts/mpu/complete/{dir}"),
            serde_json::json!({"path": "/tmp/big.bin", "upload_id": id, "parts": parts}),
        )
    };
    let both = serde_json::json!([{"part_number": 1, "etag": ""}, {"part_number": 2, "etag": ""}]);
    // Part 2 never arrived: 400 naming it, and nothing visible.
    let (status, body) = complete(&upload_id, both.clone()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("part 2"), "{body}");
    let (status, body) = complete(&upload_id, serde_json::json!([{"part_number": 1}])).await;
    assert_eq!(status, 400, "{body}");
    let r = http.get(&artifact).bearer_auth(&s.token).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    // Unknown upload ids: 404.
    for id in ["0123456789abcdef0123456789abcdef", "../../x"] {
        let (status, body) = complete(id, both.clone()).await;
        assert_eq!(
            (status, body["error_code"].as_str()),
            (404, Some("RESOURCE_DOES_NOT_EXIST")),
            "{id}: {body}"
        );
    }
    // Another file name than the upload's: refused.
    let (status, body) = post(
        format!("mlflow-artifacts/mpu/complete/{dir}"),
        serde_json::json!({"path": "/tmp/other.bin", "upload_id": upload_id, "parts": both}),
    )
    .await;
    assert_eq!(status, 400, "{body}");

    let part2 = vec![b'b'; 1234];
    let r = http.put(&urls[1]).body(part2.clone()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (status, body) = complete(&upload_id, both.clone()).await;
    assert_eq!(status, 200, "{body}");
    let got = http.get(&artifact).bearer_auth(&s.token).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(got.len(), part1.len() + part2.len());
    assert_eq!(common::sha256_hex(&got), common::sha256_hex(&[part1, part2].concat()));
    assert!(staged().is_empty(), "{:?}", staged());
    // Completed: the id is gone, and so are its part URLs.
    let (status, _) = complete(&upload_id, both.clone()).await;
    assert_eq!(status, 404);
    let r = http.put(&urls[0]).body("again").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // Abort: staged parts go, the upload is unknown afterwards.
    let (_, created) = post(
        format!("mlflow-artifacts/mpu/create/{dir}"),
        serde_json::json!({"path": "/tmp/c.bin", "num_parts": 1}),
    )
    .await;
    let id = created["upload_id"].as_str().unwrap().to_string();
    let url = created["credentials"][0]["url"].as_str().unwrap().to_string();
    assert_eq!(http.put(&url).body("part").send().await.unwrap().status().as_u16(), 200);
    assert!(!staged().is_empty());
    let abort = serde_json::json!({"path": "/tmp/c.bin", "upload_id": id});
    let (status, body) = post(format!("mlflow-artifacts/mpu/abort/{dir}"), abort.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert!(staged().is_empty(), "{:?}", staged());
    assert_eq!(http.put(&url).body("part").send().await.unwrap().status().as_u16(), 404);
    let (status, _) = post(format!("mlflow-artifacts/mpu/abort/{dir}"), abort).await;
    assert_eq!(status, 404);
    let r = http
        .get(format!("{api}/mlflow-artifacts/artifacts/{dir}/c.bin"))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // An upload abandoned past its lifetime (24 h): the next create sweeps its staging away.
    let (_, created) = post(
        format!("mlflow-artifacts/mpu/create/{dir}"),
        serde_json::json!({"path": "/tmp/old.bin", "num_parts": 1}),
    )
    .await;
    let old_url = created["credentials"][0]["url"].as_str().unwrap().to_string();
    assert_eq!(http.put(&old_url).body("part").send().await.unwrap().status().as_u16(), 200);
    let old_files = staged();
    assert_eq!(old_files.len(), 2, "{old_files:?}");
    let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(25 * 3600);
    for f in &old_files {
        std::fs::File::options().write(true).open(staging.join(f)).unwrap().set_modified(long_ago).unwrap();
    }
    let (status, body) = post(
        format!("mlflow-artifacts/mpu/create/{dir}"),
        serde_json::json!({"path": "/tmp/new.bin", "num_parts": 1}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while staged().iter().any(|f| old_files.contains(f)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the expired upload was not swept: {:?}\n{}",
            staged(),
            s.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(staged().len(), 1, "only the new upload's description stays: {:?}", staged());
    assert!(!s.log().contains("panicked"), "{}", s.log());

    // The client asks /server-info whether to use all this.
    let info = send_json(
        http.get(format!("{}/workspaces/w/mlflow/api/3.0/mlflow/server-info", s.url)).bearer_auth(&s.token),
    )
    .await;
    assert_eq!(info["multipart_uploads_enabled"], false, "not advertised: slower than one PUT here; {info}");
}
