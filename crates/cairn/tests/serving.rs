//! The scoring gateway's protocols and metrics with real replicas (a stdlib `score.py`, an
//! environment with no packages): `/metrics` by endpoint, deployment and status after pinned
//! requests, with per-deployment replica gauges and a restart counted, and a deleted deployment's
//! series gone; what the MLflow and inference-protocol routes say of a deployment with a scoring
//! script; a deployment without code of a model that is not in MLflow format refused. The MLflow
//! models themselves are served end to end in python/tests_mlflow/test_serving.py (stock client).

mod common;

use common::*;
use serde_json::Value;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

const SCORE_PY: &str = r#"
import json, os

def init():
    global coef
    with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "coef.json")) as f:
        coef = json.load(f)

def run(raw_data):
    rows = json.loads(raw_data)["data"]
    return [sum(w * x for w, x in zip(coef["w"], row)) + coef["b"] for row in rows]
"#;

fn deployment_yaml(name: &str) -> String {
    format!(
        "name: {name}\nendpoint_name: lin-ep\nmodel: lin:1\ncode_configuration:\n  code: src\n  scoring_script: score.py\n\
         environment: plain\ninstance_count: 1\n"
    )
}

/// Workspace `w`, environment `plain`, model `lin:1` (not MLflow), endpoint `lin-ep` with
/// deployments `blue` (all traffic) and `green` (none); returns the primary key.
fn setup(s: &Server) -> String {
    s.ok(&["workspace", "create", "w"]);
    let dir = s.tmp().join("spec");
    write_tree(
        &dir,
        &[
            ("env.yml", b"name: plain\npip: []\n"),
            ("model/coef.json", br#"{"w": [2.0, -1.0], "b": 1.0}"#),
            ("ep.yml", b"name: lin-ep\nauth_mode: key\n"),
            ("src/score.py", SCORE_PY.as_bytes()),
            ("blue.yml", deployment_yaml("blue").as_bytes()),
            ("green.yml", deployment_yaml("green").as_bytes()),
            ("nocode.yml", b"name: red\nendpoint_name: lin-ep\nmodel: lin:1\n"),
        ],
    );
    let p = |f: &str| dir.join(f).display().to_string();
    s.ok(&["env", "create", "-f", &p("env.yml"), "-w", "w"]);
    s.ok(&["model", "register", "--name", "lin", "--path", &p("model"), "-w", "w"]);
    s.ok(&["endpoint", "create", "-f", &p("ep.yml"), "-w", "w"]);
    // Without code, the model must be in MLflow format: refused before anything runs.
    let err = s.fails(&["deployment", "create", "-f", &p("nocode.yml"), "-w", "w"]);
    assert!(err.contains("must be in MLflow format, but it has no MLmodel file"), "{err}");
    assert!(err.contains("coef.json"), "{err}");
    for (file, all_traffic) in [("blue.yml", true), ("green.yml", false)] {
        let path = p(file);
        let mut args = vec!["deployment", "create", "-f", path.as_str(), "--wait", "-w", "w", "-o", "json"];
        if all_traffic {
            args.push("--all-traffic");
        }
        let d = json(&s.ok(&args));
        assert_eq!(d["state"], "Healthy", "{d}");
    }
    let keys = json(&s.ok(&["endpoint", "get-keys", "lin-ep", "-w", "w", "-o", "json"]));
    keys["primary_key"].as_str().unwrap().to_string()
}

async fn post(s: &Server, path: &str, key: &str, pin: Option<&str>, body: &str) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .post(format!("{}/endpoints/lin-ep/{path}", s.url))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(d) = pin {
        r = r.header("azureml-model-deployment", d);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, json(&r.text().await.unwrap()))
}

async fn get(s: &Server, path: &str, key: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("{}/endpoints/lin-ep/{path}", s.url))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, json(&r.text().await.unwrap()))
}

async fn scrape(s: &Server) -> String {
    let r =
        reqwest::Client::new().get(format!("{}/metrics", s.url)).bearer_auth(&s.token).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.text().await.unwrap()
}

fn value_of(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_labelled_by_deployment_and_deleted_deployments_series_go() {
    let s = Server::start();
    let key = setup(&s);
    let body = r#"{"data": [[1, 2]]}"#;
    for (pin, n) in [(Some("blue"), 3), (Some("green"), 2), (None, 1)] {
        for _ in 0..n {
            let (status, out) = post(&s, "score", &key, pin, body).await;
            assert_eq!((status, out.clone()), (200, serde_json::json!([1.0])), "{pin:?}");
        }
    }
    let (status, _) = post(&s, "score", &key, Some("nope"), body).await;
    assert_eq!(status, 404);
    let (status, _) = post(&s, "score", "wrong", None, body).await;
    assert_eq!(status, 401);

    let m = scrape(&s).await;
    let requests = |d: &str, status: u16| {
        value_of(
            &m,
            &format!(
                "cairn_endpoint_requests_total{{endpoint=\"lin-ep\",deployment=\"{d}\",status=\"{status}\"}}"
            ),
        )
    };
    assert_eq!(requests("blue", 200), Some(4.0), "{m}");
    assert_eq!(requests("green", 200), Some(2.0), "{m}");
    assert_eq!(requests("_none", 404), Some(1.0), "{m}");
    assert_eq!(
        value_of(&m, "cairn_endpoint_requests_total{endpoint=\"_unauthenticated\",deployment=\"_none\",status=\"401\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        value_of(
            &m,
            "cairn_endpoint_request_duration_seconds_count{endpoint=\"lin-ep\",deployment=\"green\"}"
        ),
        Some(2.0),
        "{m}"
    );
    for (family, v) in [
        ("cairn_deployment_replicas", 1.0),
        ("cairn_deployment_replicas_ready", 1.0),
        ("cairn_deployment_replica_restarts_total", 0.0),
        ("cairn_deployment_queue_depth", 0.0),
    ] {
        for d in ["blue", "green"] {
            let series = format!("{family}{{endpoint=\"lin-ep\",deployment=\"{d}\"}}");
            assert_eq!(value_of(&m, &series), Some(v), "{series} in\n{m}");
        }
    }

    // A killed replica is restarted, and the restart is counted for its deployment only.
    let green = json(&s.ok(&["deployment", "show", "lin-ep/green", "-w", "w", "-o", "json"]));
    let green = format!("/deployments/{}/", green["id"].as_str().unwrap());
    let pid = *processes_with_env("cairn.replica", &green).first().expect("green's replica runs");
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let mut restarted = false;
    for _ in 0..200 {
        let (status, _) = post(&s, "score", &key, Some("green"), body).await;
        let m = scrape(&s).await;
        let restarts =
            value_of(&m, "cairn_deployment_replica_restarts_total{endpoint=\"lin-ep\",deployment=\"green\"}");
        if status == 200 && restarts == Some(1.0) {
            let blue = value_of(
                &m,
                "cairn_deployment_replica_restarts_total{endpoint=\"lin-ep\",deployment=\"blue\"}",
            );
            assert_eq!(blue, Some(0.0), "{m}");
            restarted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(restarted, "no restart counted:\n{}", scrape(&s).await);

    // A deleted deployment's series (requests and gauges) go; the others stay.
    s.ok(&["deployment", "delete", "lin-ep/green", "-w", "w"]);
    let m = scrape(&s).await;
    assert!(!m.contains("deployment=\"green\""), "{m}");
    assert!(m.contains("deployment=\"blue\""), "{m}");
    // The studio's per-endpoint summary still adds up the endpoint's deployments.
    s.ok(&["endpoint", "delete", "lin-ep", "-w", "w"]);
    assert!(!scrape(&s).await.contains("lin-ep"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_script_deployment_has_no_mlflow_route_and_no_tensor_signature() {
    let s = Server::start();
    let key = setup(&s);
    // /invocations is for MLflow models deployed without code; the error has MLflow's shape.
    let (status, out) = post(&s, "invocations", &key, None, r#"{"inputs": [[1, 2]]}"#).await;
    assert_eq!(status, 404, "{out}");
    assert_eq!(out["error_code"], "ENDPOINT_NOT_FOUND", "{out}");
    assert!(out["message"].as_str().unwrap().contains("runs a scoring script"), "{out}");
    let (status, out) = post(&s, "invocations", "wrong", None, "{}").await;
    assert_eq!((status, out["error_code"].as_str()), (401, Some("UNAUTHENTICATED")), "{out}");

    // The inference protocol: server metadata, live and ready, model metadata without tensors
    // saying why, infer refused.
    let (status, server) = get(&s, "v2", &key).await;
    assert_eq!(
        (status, server["name"].as_str(), &server["extensions"]),
        (200, Some("cairn"), &serde_json::json!([]))
    );
    assert!(server["version"].is_string(), "{server}");
    assert_eq!(get(&s, "v2", "wrong").await.0, 401);
    assert_eq!(get(&s, "v2/health/live", &key).await, (200, serde_json::json!({"live": true})));
    assert_eq!(get(&s, "v2/health/ready", &key).await, (200, serde_json::json!({"ready": true})));
    let (status, meta) = get(&s, "v2/models/lin", &key).await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!((meta["name"].as_str(), meta["platform"].as_str()), (Some("lin"), Some("cairn_score_py")));
    assert_eq!(meta["inputs"], serde_json::json!([]));
    assert!(
        meta["parameters"]["signature"].as_str().unwrap().contains("run() declares no input schema"),
        "{meta}"
    );
    assert_eq!(
        get(&s, "v2/models/lin/ready", &key).await,
        (200, serde_json::json!({"name": "lin", "ready": true}))
    );
    let infer = r#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]}"#;
    let (status, out) = post(&s, "v2/models/lin/infer", &key, None, infer).await;
    assert_eq!(status, 400, "{out}");
    assert!(out["error"].as_str().unwrap().contains("has no tensor signature"), "{out}");
    // Pinned to a deployment serving another model, or a model nobody serves: 404.
    let (status, out) = post(&s, "v2/models/other/infer", &key, Some("green"), infer).await;
    assert_eq!(status, 404, "{out}");
    assert!(out["error"].as_str().unwrap().contains("deployment \"green\" serves model lin:1"), "{out}");
    let (status, out) = get(&s, "v2/models/other", &key).await;
    assert_eq!(status, 404, "{out}");
    assert!(out["error"].as_str().unwrap().contains("(it serves: lin:1 (blue), lin:1 (green))"), "{out}");
    let (status, out) = get(&s, "v2/models/lin", "wrong").await;
    assert_eq!(status, 401, "{out}");
    assert!(out["error"].is_string(), "{out}");

    // With no traffic anywhere the endpoint is not ready (503, so load balancers need no parsing).
    s.ok(&["endpoint", "update", "lin-ep", "--traffic", "", "-w", "w"]);
    assert_eq!(get(&s, "v2/health/ready", &key).await, (503, serde_json::json!({"ready": false})));
}

/// What azureml-inference-server-http does around run(), through the gateway: request ids (the
/// client's, or new ones; 431 when too long, in each protocol's shape; the legacy header; TraceId),
/// a GET's query arguments as run()'s input, OPTIONS, swagger versions; and on every scoring
/// answer the deployment that gave it, with Azure's model-error headers when run() failed.
#[tokio::test(flavor = "multi_thread")]
async fn the_scoring_uri_keeps_the_reference_servers_ids_query_and_error_headers() {
    let s = Server::start();
    let key = setup(&s);
    let url = format!("{}/endpoints/lin-ep", s.url);
    let client = reqwest::Client::new();
    let header = |r: &reqwest::Response, name: &str| {
        r.headers().get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
    };

    // A GET's query arguments are run()'s input; new ids, the legacy one the same.
    let r = client
        .get(format!("{url}/score"))
        .bearer_auth(&key)
        .query(&[("data", "[[1, 2]]")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let id = header(&r, "x-request-id");
    let uuid_shaped = id.len() == 36
        && id
            .char_indices()
            .all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() });
    assert!(uuid_shaped, "a new request id is a UUID: {id:?}");
    assert_eq!(header(&r, "x-ms-request-id"), id);
    assert_eq!(header(&r, "x-ms-client-request-id"), "");
    assert_eq!(header(&r, "azureml-model-deployment"), "blue");
    assert_eq!(header(&r, "ms-azureml-model-error-statuscode"), "");
    assert_eq!(json(&r.text().await.unwrap()), serde_json::json!([1.0]));

    // The client's ids come back; run() failing keeps the reference's 500 and says so in headers.
    let r = client
        .post(format!("{url}/score"))
        .bearer_auth(&key)
        .header("x-request-id", "mine-1")
        .header("x-ms-client-request-id", "client-1")
        .header("TraceId", "trace-1")
        .header("azureml-model-deployment", "green")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 500);
    let got: Vec<String> = [
        "x-request-id",
        "x-ms-client-request-id",
        "x-ms-request-id",
        "traceid",
        "azureml-model-deployment",
        "ms-azureml-model-error-statuscode",
        "ms-azureml-model-error-reason",
        "x-ms-run-function-failed",
    ]
    .iter()
    .map(|h| header(&r, h))
    .collect();
    assert_eq!(
        got,
        ["mine-1", "client-1", "client-1", "trace-1", "green", "500", "model_error", "True"],
        "{:?}",
        r.headers()
    );
    assert_eq!(
        json(&r.text().await.unwrap())["message"],
        "An unexpected error occurred in scoring script. Check the logs for more info."
    );
    // The deprecated header alone is also the client request id.
    let r = client
        .post(format!("{url}/score"))
        .bearer_auth(&key)
        .header("x-ms-request-id", "old-1")
        .body(r#"{"data": [[1, 2]]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (header(&r, "x-ms-request-id"), header(&r, "x-ms-client-request-id")),
        ("old-1".into(), "old-1".into())
    );

    // Over 100 characters: 431 before anything else, in the route's protocol's shape.
    let long = "x".repeat(101);
    for (path, field) in [("score", "message"), ("v2/models/lin/infer", "error"), ("invocations", "message")]
    {
        let r = client
            .post(format!("{url}/{path}"))
            .bearer_auth(&key)
            .header("x-request-id", &long)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 431, "{path}");
        let out = json(&r.text().await.unwrap());
        assert_eq!(out[field], "x-request-id must not exceed 100 characters", "{path}: {out}");
    }
    let r = client
        .post(format!("{url}/score"))
        .bearer_auth(&key)
        .header("x-ms-client-request-id", &long)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 431);
    // The gateway's own answers carry the ids too, but no model-error headers.
    let r = client
        .post(format!("{url}/score"))
        .bearer_auth("wrong")
        .header("x-request-id", "w-1")
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), header(&r, "x-request-id")), (401, "w-1".to_string()));
    let r = client
        .post(format!("{url}/score"))
        .bearer_auth(&key)
        .header("azureml-model-deployment", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(header(&r, "ms-azureml-model-error-statuscode"), "");
    assert!(!header(&r, "x-request-id").is_empty());

    // OPTIONS (a CORS preflight) is 200, as the reference answers it without @rawhttp.
    let r = client
        .request(reqwest::Method::OPTIONS, format!("{url}/score"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // swagger.json's version query reaches the script's document.
    let (status, doc) = get(&s, "swagger.json?version=3", &key).await;
    assert_eq!((status, doc["openapi"].as_str().map(|v| v.starts_with('3'))), (200, Some(true)), "{doc}");
    let (status, doc) = get(&s, "swagger.json", &key).await;
    assert_eq!((status, doc["swagger"].as_str()), (200, Some("2.0")), "{doc}");
    let (status, doc) = get(&s, "swagger.json?version=9", &key).await;
    assert_eq!(status, 404, "{doc}");
    assert!(doc["message"].as_str().unwrap().contains("Swagger version [9] is not valid"), "{doc}");
}

/// A score.py whose run() is decorated with inference_schema declares tensors; the inference
/// protocol then serves it too, through the same run() and decorators as /score.
mod script_signature {
    use super::*;

    const NUMPY_PY: &str = r#"
import numpy as np
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema

def init():
    pass

@input_schema("data", NumpyParameterType(np.array([[1.0, 2.0]])))
@input_schema("scale", StandardPythonParameterType(1.0))
@output_schema(NumpyParameterType(np.array([3.0])))
def run(data, scale=1.0):
    if data[0][0] < 0:
        raise ValueError("negative input")
    return (data @ np.array([2.0, -1.0]) * scale + 1.0).tolist()
"#;

    const PANDAS_PY: &str = r#"
import pandas as pd
from inference_schema.parameter_types.pandas_parameter_type import PandasParameterType
from inference_schema.schema_decorators import input_schema

def init():
    pass

# Column order matters to a model: "b" comes first in the sample.
@input_schema("df", PandasParameterType(pd.DataFrame({"b": [1.0], "a": [2]})))
def run(df):
    return {"first": df.columns[0], "sums": (df["b"] * 10 + df["a"]).tolist()}
"#;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_decorated_run_is_served_by_the_inference_protocol() {
        let s = Server::start();
        s.ok(&["workspace", "create", "w"]);
        let dir = s.tmp().join("spec");
        let python = repo_root().join(".venv/bin/python");
        let env = format!("name: venv\nuser_managed: true\ninterpreter: {}\n", python.display());
        let deployment = |name: &str, script: &str| {
            format!(
                "name: {name}\nendpoint_name: lin-ep\nmodel: lin:1\ncode_configuration:\n  code: src\n  \
                 scoring_script: {script}\nenvironment: venv\ninstance_count: 1\n"
            )
        };
        write_tree(
            &dir,
            &[
                ("env.yml", env.as_bytes()),
                ("model/coef.json", b"{}"),
                ("ep.yml", b"name: lin-ep\nauth_mode: key\n"),
                ("src/score_np.py", NUMPY_PY.as_bytes()),
                ("src/score_pd.py", PANDAS_PY.as_bytes()),
                ("numpy.yml", deployment("numpy", "score_np.py").as_bytes()),
                ("frame.yml", deployment("frame", "score_pd.py").as_bytes()),
            ],
        );
        let p = |f: &str| dir.join(f).display().to_string();
        s.ok(&["env", "create", "-f", &p("env.yml"), "-w", "w"]);
        s.ok(&["model", "register", "--name", "lin", "--path", &p("model"), "-w", "w"]);
        s.ok(&["endpoint", "create", "-f", &p("ep.yml"), "-w", "w"]);
        for file in ["numpy.yml", "frame.yml"] {
            let d = json(&s.ok(&["deployment", "create", "-f", &p(file), "--wait", "-w", "w", "-o", "json"]));
            assert_eq!(d["state"], "Healthy", "{d}");
        }
        s.ok(&["endpoint", "update", "lin-ep", "--traffic", "numpy=100", "-w", "w"]);
        let keys = json(&s.ok(&["endpoint", "get-keys", "lin-ep", "-w", "w", "-o", "json"]));
        let key = keys["primary_key"].as_str().unwrap().to_string();

        // Metadata: the tensors the decorators declare (shape from the sample, any batch).
        let (status, meta) = get(&s, "v2/models/lin", &key).await;
        assert_eq!(status, 200, "{meta}");
        assert_eq!(
            meta["inputs"],
            serde_json::json!([{"name": "data", "datatype": "FP64", "shape": [-1, 2]}])
        );
        assert_eq!(
            meta["outputs"],
            serde_json::json!([{"name": "output-0", "datatype": "FP64", "shape": [-1]}])
        );

        // infer answers what /score answers, through the same run().
        let (status, scored) =
            post(&s, "score", &key, None, r#"{"data": [[1, 2], [3, 1]], "scale": 2}"#).await;
        assert_eq!((status, scored.clone()), (200, serde_json::json!([1.0, 11.0])));
        let infer = r#"{"id": "r1", "inputs": [{"name": "data", "shape": [2, 2], "datatype": "FP64",
                        "data": [1, 2, 3, 1]}], "parameters": {"scale": 2}}"#;
        let (status, out) = post(&s, "v2/models/lin/infer", &key, None, infer).await;
        assert_eq!(status, 200, "{out}");
        assert_eq!((out["id"].as_str(), out["model_name"].as_str()), (Some("r1"), Some("lin")), "{out}");
        assert_eq!(
            out["outputs"],
            serde_json::json!([{"name": "output-0", "datatype": "FP64", "shape": [2], "data": scored}])
        );
        // Checked against the signature before run(); run()'s own failure keeps its message.
        let wrong =
            r#"{"inputs": [{"name": "data", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}"#;
        let (status, out) = post(&s, "v2/models/lin/infer", &key, None, wrong).await;
        assert_eq!(status, 400, "{out}");
        assert!(out["error"].as_str().unwrap().contains("does not match the signature's [-1, 2]"), "{out}");
        let failing =
            r#"{"inputs": [{"name": "data", "shape": [1, 2], "datatype": "FP64", "data": [-1, 2]}]}"#;
        let (status, out) = post(&s, "v2/models/lin/infer", &key, None, failing).await;
        assert_eq!(status, 500, "{out}");
        assert!(
            out["error"].as_str().unwrap().contains("An unexpected error occurred in scoring script"),
            "{out}"
        );
        // The replica survived it.
        let (status, _) = post(&s, "v2/models/lin/infer", &key, None, infer).await;
        assert_eq!(status, 200);

        // A DataFrame parameter: its columns are the inputs, rows keep the sample's column order.
        s.ok(&["endpoint", "update", "lin-ep", "--traffic", "frame=100", "-w", "w"]);
        let (status, meta) = get(&s, "v2/models/lin", &key).await;
        assert_eq!(status, 200, "{meta}");
        assert_eq!(
            meta["inputs"],
            serde_json::json!([{"name": "b", "datatype": "FP64", "shape": [-1]},
                               {"name": "a", "datatype": "INT64", "shape": [-1]}])
        );
        assert_eq!(meta["outputs"], serde_json::json!([]));
        let pinned = r#"{"inputs": [{"name": "a", "shape": [2], "datatype": "INT64", "data": [1, 2]},
                         {"name": "b", "shape": [2], "datatype": "FP64", "data": [0.5, 1.5]}]}"#;
        let (status, out) = post(&s, "v2/models/lin/infer", &key, Some("frame"), pinned).await;
        assert_eq!(status, 200, "{out}");
        assert_eq!(
            out["outputs"],
            serde_json::json!([
                {"name": "first", "datatype": "BYTES", "shape": [1], "data": ["b"]},
                {"name": "sums", "datatype": "FP64", "shape": [2], "data": [6.0, 17.0]}
            ])
        );
        let short = r#"{"inputs": [{"name": "a", "shape": [1], "datatype": "INT64", "data": [1]}]}"#;
        let (status, out) = post(&s, "v2/models/lin/infer", &key, Some("frame"), short).await;
        assert_eq!(status, 400, "{out}");
        assert!(out["error"].as_str().unwrap().contains("input \"b\" of the signature is missing"), "{out}");
    }
}

/// Admission and execution apart: each worker process takes one request at a time, the others
/// wait in the gateway's queue (first come, first served) within request_timeout_ms.
mod queue {
    use super::*;
    use std::time::{Duration, Instant};

    /// Sleeps as asked and says which process ran it, and when.
    const TIMED_PY: &str = r#"
import json, os, time

def init():
    pass

def run(raw_data):
    req = json.loads(raw_data)
    start = time.time()
    with open(os.path.join(os.environ["SEEN_DIR"], str(req["n"])), "w"):
        pass
    time.sleep(req.get("sleep", 0))
    return {"n": req["n"], "pid": os.getpid(), "start": start, "end": time.time()}
"#;

    /// Workspace `w`, endpoint `q-ep` and deployment `dep` (all traffic) with `instances` instances,
    /// the given timeout and extra environment variables; returns the key and the folder in which
    /// run() marks each request it sees.
    fn deploy(s: &Server, instances: u32, timeout_ms: u32, env: &str) -> (String, std::path::PathBuf) {
        s.ok(&["workspace", "create", "w"]);
        let dir = s.tmp().join("spec");
        let seen = s.tmp().join("seen");
        std::fs::create_dir_all(&seen).unwrap();
        let yaml = format!(
            "name: dep\nendpoint_name: q-ep\nmodel: m:1\ncode_configuration:\n  code: src\n  scoring_script: score.py\n\
             environment: plain\ninstance_count: {instances}\n\
             request_settings:\n  request_timeout_ms: {timeout_ms}\n  max_concurrent_requests_per_instance: 8\n\
             environment_variables:\n  SEEN_DIR: {}\n{env}",
            seen.display()
        );
        write_tree(
            &dir,
            &[
                ("env.yml", b"name: plain\npip: []\n"),
                ("model/m.json", b"{}"),
                ("ep.yml", b"name: q-ep\nauth_mode: key\n"),
                ("src/score.py", TIMED_PY.as_bytes()),
                ("d.yml", yaml.as_bytes()),
            ],
        );
        let p = |f: &str| dir.join(f).display().to_string();
        s.ok(&["env", "create", "-f", &p("env.yml"), "-w", "w"]);
        s.ok(&["model", "register", "--name", "m", "--path", &p("model"), "-w", "w"]);
        s.ok(&["endpoint", "create", "-f", &p("ep.yml"), "-w", "w"]);
        s.ok(&["deployment", "create", "-f", &p("d.yml"), "--all-traffic", "--wait", "-w", "w"]);
        let keys = json(&s.ok(&["endpoint", "get-keys", "q-ep", "-w", "w", "-o", "json"]));
        (keys["primary_key"].as_str().unwrap().to_string(), seen)
    }

    /// Sends `{"n": n, "sleep": sleep}` after `delay`; the status and the answer.
    fn later(
        s: &Server,
        key: &str,
        delay_ms: u64,
        n: u32,
        sleep: f64,
    ) -> tokio::task::JoinHandle<(u16, Value)> {
        later_body(s, key, delay_ms, format!(r#"{{"n": {n}, "sleep": {sleep}}}"#))
    }

    /// Sends `body` to the score route after `delay`; the status and the answer.
    fn later_body(
        s: &Server,
        key: &str,
        delay_ms: u64,
        body: String,
    ) -> tokio::task::JoinHandle<(u16, Value)> {
        let (url, key) = (format!("{}/endpoints/q-ep/score", s.url), key.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, json(&r.text().await.unwrap()))
        })
    }

    /// Request 3's answer once a worker serves again (within `secs`).
    async fn served_again(s: &Server, key: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let (status, body) = later(s, key, 0, 3, 0.0).await.unwrap();
            if status == 200 || Instant::now() > deadline {
                assert_eq!(status, 200, "{body}");
                return body;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The requests `run()` saw (the marks the test script leaves in `seen`), sorted.
    fn marked(seen: &std::path::Path) -> Vec<String> {
        let mut marked: Vec<String> =
            std::fs::read_dir(seen).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        marked.sort();
        marked
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn pages_from_the_origins_a_deployment_lists_may_call_the_endpoint() {
        let s = Server::start();
        let (key, _) = deploy(
            &s,
            1,
            30_000,
            "  AML_CORS_ORIGINS: \"https://app.example.com, http://localhost:3000/\"\n",
        );
        let url = format!("{}/endpoints/q-ep/score", s.url);
        let http = reqwest::Client::new();
        let preflight = |origin: &str, endpoint_url: &str| {
            http.request(reqwest::Method::OPTIONS, endpoint_url)
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "authorization, content-type")
                .send()
        };
        let header = |r: &reqwest::Response, name: &str| {
            r.headers().get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
        };
        // A listed origin's preflight, which carries no key, is answered.
        for origin in ["https://app.example.com", "http://localhost:3000", "HTTPS://APP.example.com"] {
            let r = preflight(origin, &url).await.unwrap();
            assert_eq!(r.status().as_u16(), 200, "{origin}");
            assert_eq!(header(&r, "access-control-allow-origin"), origin);
            assert!(header(&r, "access-control-allow-methods").contains("POST"));
            assert_eq!(header(&r, "access-control-allow-headers"), "authorization, content-type");
            assert_eq!(header(&r, "access-control-max-age"), "600");
        }
        // Another origin, or an endpoint that does not exist: the 401 of any keyless call.
        for (origin, endpoint_url) in [
            ("https://evil.example.com", url.clone()),
            ("https://app.example.com", format!("{}/endpoints/nope/score", s.url)),
        ] {
            let r = preflight(origin, &endpoint_url).await.unwrap();
            assert_eq!(r.status().as_u16(), 401, "{origin} {endpoint_url}");
            assert_eq!(header(&r, "access-control-allow-origin"), "", "{origin} {endpoint_url}");
        }
        // Answers to a listed origin say so, errors too; answers to others do not.
        let call = |origin: Option<&str>, key: &str| {
            let mut rb = http.post(&url).bearer_auth(key).body(r#"{"n": 1}"#);
            if let Some(origin) = origin {
                rb = rb.header("origin", origin);
            }
            rb.send()
        };
        let r = call(Some("https://app.example.com"), &key).await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(header(&r, "access-control-allow-origin"), "https://app.example.com");
        assert!(header(&r, "access-control-expose-headers").contains("x-request-id"));
        assert!(header(&r, "vary").to_lowercase().contains("origin"));
        let r = call(Some("https://app.example.com"), "wrong-key").await.unwrap();
        assert_eq!(r.status().as_u16(), 401);
        assert_eq!(header(&r, "access-control-allow-origin"), "https://app.example.com");
        for origin in [None, Some("https://evil.example.com")] {
            let r = call(origin, &key).await.unwrap();
            assert_eq!(r.status().as_u16(), 200);
            assert_eq!(header(&r, "access-control-allow-origin"), "", "{origin:?}");
        }
        // A value that is not a list of origins is refused at create, naming the variable.
        let bad = s.tmp().join("spec/bad.yml");
        let text = std::fs::read_to_string(s.tmp().join("spec/d.yml")).unwrap();
        std::fs::write(
            &bad,
            text.replace("name: dep\n", "name: dep2\n").replace("https://app.example.com", "app.example.com"),
        )
        .unwrap();
        let err = s.fails(&["deployment", "create", "-f", &bad.display().to_string(), "-w", "w"]);
        assert!(err.contains("AML_CORS_ORIGINS") && err.contains("is not an origin"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn requests_beyond_the_workers_wait_and_run_one_at_a_time_in_arrival_order() {
        let s = Server::start();
        let (key, _) = deploy(&s, 1, 30_000, "");
        // One worker: the first request holds it, five more arrive 200 ms apart and queue.
        let mut sent = vec![later(&s, &key, 0, 0, 1.5)];
        for n in 1..=5u32 {
            sent.push(later(&s, &key, 200 * n as u64, n, 0.05));
        }
        let mut runs = Vec::new();
        for t in sent {
            let (status, body) = t.await.unwrap();
            assert_eq!(status, 200, "{body}");
            runs.push(body);
        }
        let pids: std::collections::BTreeSet<i64> = runs.iter().map(|r| r["pid"].as_i64().unwrap()).collect();
        assert_eq!(pids.len(), 1, "one worker served them all: {runs:?}");
        let mut by_start: Vec<(f64, f64, u64)> = runs
            .iter()
            .map(|r| (r["start"].as_f64().unwrap(), r["end"].as_f64().unwrap(), r["n"].as_u64().unwrap()))
            .collect();
        by_start.sort_by(|a, b| a.0.total_cmp(&b.0));
        for pair in by_start.windows(2) {
            assert!(pair[1].0 >= pair[0].1, "two run() calls at once: {by_start:?}");
        }
        let order: Vec<u64> = by_start.iter().map(|r| r.2).collect();
        assert_eq!(order, [0, 1, 2, 3, 4, 5], "served in arrival order: {by_start:?}");
        // What waited is counted nowhere as an error, and the queue is empty again.
        let m = scrape(&s).await;
        assert_eq!(
            value_of(&m, "cairn_deployment_queue_depth{endpoint=\"q-ep\",deployment=\"dep\"}"),
            Some(0.0)
        );
        assert_eq!(
            value_of(
                &m,
                "cairn_endpoint_requests_total{endpoint=\"q-ep\",deployment=\"dep\",status=\"200\"}"
            ),
            Some(6.0),
            "{m}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_request_that_queues_past_request_timeout_ms_gets_504_without_reaching_the_replica() {
        let s = Server::start();
        let (key, seen) = deploy(&s, 1, 1500, "");
        let pid = |body: &Value| body["pid"].as_i64().unwrap();
        let started = Instant::now();
        // 0 holds the worker 1.2 s; 1 gets it late (at 1.2 s, its deadline at 1.55 s) and
        // sleeps on; 2 never gets it before its deadline (1.6 s).
        let first = later(&s, &key, 0, 0, 1.2);
        let second = later(&s, &key, 50, 1, 0.6);
        let third = later(&s, &key, 100, 2, 0.0);
        let (status, body) = first.await.unwrap();
        assert_eq!(status, 200, "{body}");
        let (status, late) = second.await.unwrap();
        assert_eq!(status, 504, "{late}");
        assert!(late["message"].as_str().unwrap().contains("time spent queued included"), "{late}");
        let (status, queued) = third.await.unwrap();
        assert_eq!(status, 504, "{queued}");
        let message = queued["message"].as_str().unwrap();
        assert!(message.contains("had no free worker within request_timeout_ms (1500 ms)"), "{message}");
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        // The late one still ran to its end on the worker, which was not restarted for it; the
        // one that only queued never reached it.
        let (status, after) = later(&s, &key, 0, 3, 0.0).await.unwrap();
        assert_eq!(status, 200, "{after}");
        assert_eq!(pid(&after), pid(&body), "the worker was not restarted");
        assert_eq!(marked(&seen), ["0", "1", "3"]);
        let m = scrape(&s).await;
        assert_eq!(
            value_of(&m, "cairn_deployment_replica_restarts_total{endpoint=\"q-ep\",deployment=\"dep\"}"),
            Some(0.0)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_request_sent_ahead_to_a_worker_that_hangs_gets_a_clear_error_and_never_runs() {
        let s = Server::start();
        let (key, seen) = deploy(&s, 1, 1500, "");
        let (status, before) = later(&s, &key, 0, 0, 0.0).await.unwrap();
        assert_eq!(status, 200, "{before}");
        // 1 hangs on the only worker; 2 arrives while it runs and is sent ahead to that worker, behind it.
        let hung = later(&s, &key, 0, 1, 3600.0);
        let behind = later(&s, &key, 100, 2, 0.0);
        let (status, body) = hung.await.unwrap();
        assert_eq!(status, 504, "{body}");
        assert!(body["message"].as_str().unwrap().contains("the replica is being restarted"), "{body}");
        let (status, body) = behind.await.unwrap();
        let message = body["message"].as_str().unwrap();
        assert!(
            (status == 503 && message.contains("was waiting behind it and was not answered"))
                || (status == 504 && message.contains("had no free worker within request_timeout_ms")),
            "{status} {body}"
        );
        // The worker was replaced; the new one serves, and the request behind the hung one never ran.
        let after = served_again(&s, &key, 60).await;
        assert_ne!(after["pid"], before["pid"], "the hung worker was restarted");
        assert_eq!(marked(&seen), ["0", "1", "3"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_large_request_that_waits_in_the_workers_socket_past_its_deadline_is_not_run() {
        let s = Server::start();
        let (key, seen) = deploy(&s, 1, 1500, "");
        // 0 runs 1.2 s; 1 is sent ahead behind it and runs 1 s more (its deadline passes meanwhile:
        // 504, the worker finishes it); 2 queues, goes to the worker when 0 answers, and its 4 MiB
        // body waits in the socket until the worker has answered 1, after 2's deadline (1.6 s).
        let first = later(&s, &key, 0, 0, 1.2);
        let second = later(&s, &key, 50, 1, 1.0);
        let large =
            later_body(&s, &key, 100, format!(r#"{{"n": 2, "sleep": 0, "pad": "{}"}}"#, "x".repeat(4 << 20)));
        let (status, done) = first.await.unwrap();
        assert_eq!(status, 200, "{done}");
        let (status, body) = second.await.unwrap();
        assert_eq!(status, 504, "{body}");
        assert!(body["message"].as_str().unwrap().contains("time spent queued included"), "{body}");
        let (status, body) = large.await.unwrap();
        assert_eq!(status, 504, "{body}");
        assert!(body["message"].as_str().unwrap().contains("had no free worker"), "{body}");
        let after = served_again(&s, &key, 30).await;
        assert_eq!(after["pid"], done["pid"], "the worker was not restarted");
        assert_eq!(marked(&seen), ["0", "1", "3"], "the request reached past its deadline was not run");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn worker_count_starts_that_many_serial_workers_per_instance() {
        let s = Server::start();
        // Refused at create, naming the variable and the range.
        let (key, _) = deploy(&s, 1, 30_000, "  WORKER_COUNT: \"2\"\n");
        let bad = s.tmp().join("spec/bad.yml");
        let text = std::fs::read_to_string(s.tmp().join("spec/d.yml")).unwrap();
        std::fs::write(
            &bad,
            text.replace("name: dep\n", "name: dep2\n").replace("WORKER_COUNT: \"2\"", "WORKER_COUNT: \"0\""),
        )
        .unwrap();
        let err = s.fails(&["deployment", "create", "-f", &bad.display().to_string(), "-w", "w"]);
        assert!(
            err.contains("environment_variables.WORKER_COUNT \"0\": must be a whole number from 1 to 16"),
            "{err}"
        );

        // Four requests at once on one instance of two workers: two processes, each running its
        // requests one after the other, the two side by side.
        let sent: Vec<_> = (0..4).map(|n| later(&s, &key, 0, n, 0.4)).collect();
        let mut runs = Vec::new();
        for t in sent {
            let (status, body) = t.await.unwrap();
            assert_eq!(status, 200, "{body}");
            runs.push(body);
        }
        let mut by_pid: std::collections::BTreeMap<i64, Vec<(f64, f64)>> = Default::default();
        for r in &runs {
            by_pid
                .entry(r["pid"].as_i64().unwrap())
                .or_default()
                .push((r["start"].as_f64().unwrap(), r["end"].as_f64().unwrap()));
        }
        assert_eq!(by_pid.len(), 2, "{runs:?}");
        for spans in by_pid.values_mut() {
            assert_eq!(spans.len(), 2, "{runs:?}");
            spans.sort_by(|a, b| a.0.total_cmp(&b.0));
            assert!(spans[1].0 >= spans[0].1, "one worker ran two requests at once: {spans:?}");
        }
        let firsts: Vec<(f64, f64)> = by_pid.values().map(|s| s[0]).collect();
        assert!(firsts[0].0 < firsts[1].1 && firsts[1].0 < firsts[0].1, "the workers overlap: {firsts:?}");
        // An instance of two workers is still one replica.
        let m = scrape(&s).await;
        assert_eq!(
            value_of(&m, "cairn_deployment_replicas{endpoint=\"q-ep\",deployment=\"dep\"}"),
            Some(1.0)
        );
        assert_eq!(
            value_of(&m, "cairn_deployment_replicas_ready{endpoint=\"q-ep\",deployment=\"dep\"}"),
            Some(1.0)
        );
    }
}
