//! The MLflow tracking API with the stock MLflow client (`mlflow-skinny`, installed into .venv by
//! scripts/setup.sh): a real Python script logs through `MLFLOW_TRACKING_URI`, and the CLI sees
//! the same runs.

mod common;

use std::process::Command;

use common::{clear_cairn_env, repo_root, Server};
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
    let base = format!("{}/workspaces/w/mlflow/api/2.0/mlflow", s.url);
    let http = reqwest::Client::new();
    // No token: 401 before anything is looked up.
    let r = http.get(format!("{base}/experiments/get-by-name?experiment_name=x")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error_code"], "UNAUTHENTICATED");
    let r = http
        .get(format!("{base}/experiments/get-by-name?experiment_name=nope"))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error_code"], "RESOURCE_DOES_NOT_EXIST");
    let r = http
        .post(format!("{base}/runs/search"))
        .bearer_auth(&s.token)
        .json(&serde_json::json!({"experiment_ids": ["0"], "filter": "metrics.rmse < 'x'"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error_code"], "INVALID_PARAMETER_VALUE");
    let r = http.post(format!("{base}/no/such")).bearer_auth(&s.token).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error_code"], "ENDPOINT_NOT_FOUND");
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
         \x20   refused('delete', lambda: c.delete_registered_model('jobmodel'))\n",
    )
    .unwrap();
    // A run the job's token must not register from.
    let other: Value = reqwest::Client::new()
        .post(format!("{}/api/v1/workspaces/w/runs", s.url))
        .bearer_auth(&s.token)
        .json(&serde_json::json!({"experiment": "elsewhere"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
    // The job's run-scoped token created, filled, finalized and read back a logged model of its
    // own run.
    assert!(log.contains(" weights 42"), "{log}");
    let model_id = log.split("model m-").nth(1).and_then(|r| r.split_whitespace().next()).unwrap();
    let url = format!("{}/workspaces/w/mlflow/api/2.0/mlflow/logged-models/m-{model_id}", s.url);
    let got: Value =
        reqwest::Client::new().get(url).bearer_auth(&s.token).send().await.unwrap().json().await.unwrap();
    assert_eq!(got["model"]["info"]["status"], "LOGGED_MODEL_READY", "{got}");
    assert_eq!(got["model"]["info"]["source_run_id"], id, "{got}");
    // `mlflow.register_model` with the run token registered its own logged model and its own run's
    // artifacts, and nothing else.
    assert!(log.contains(&format!("registered 1 {id}")), "{log}");
    assert!(log.contains(&format!("registered 2 {id}")), "{log}");
    for what in ["other-run", "other-lineage", "version-source", "alias", "delete"] {
        assert!(log.contains(&format!("refused {what} PERMISSION_DENIED")), "{what}: {log}");
    }
    let url = format!("{}/api/v1/workspaces/w/models/jobmodel/versions", s.url);
    let versions: Value =
        reqwest::Client::new().get(url).bearer_auth(&s.token).send().await.unwrap().json().await.unwrap();
    let versions = versions.as_array().unwrap_or_else(|| panic!("{versions}"));
    assert_eq!(versions.len(), 2, "{versions:?}");
    let v1 = versions.iter().find(|v| v["version"] == 1).unwrap();
    assert_eq!(v1["run_id"], id, "{v1}");
    assert_eq!(v1["logged_model_id"], format!("m-{model_id}"), "{v1}");
    let v2 = versions.iter().find(|v| v["version"] == 2).unwrap();
    assert_eq!(v2["run_id"], id, "{v2}");
    assert!(v2["logged_model_id"].is_null(), "{v2}");
}
