//! The native model registry through the real binary and its HTTP API: registering from a run's
//! artifacts and from local files, content-addressed dedup, tags, aliases, listing filters,
//! downloads, concurrent registrations and the bad-input cases. Every test runs on SQLite and on
//! a fresh PostgreSQL database.

#[macro_use]
mod common;

use common::*;
use serde_json::{json, Value};
use sqlx::Connection;

on_both_backends!(
    models_are_registered_from_runs_and_local_files_without_copying_bytes_twice,
    tags_aliases_and_filters_work_and_downloads_round_trip,
    concurrent_registrations_of_one_name_get_versions_1_to_n,
    bad_input_is_refused_clearly_and_changes_nothing,
    gc_deletes_blobs_nothing_references_once_past_the_grace_period,
);

const MLMODEL: &str =
    "artifact_path: model\nflavors:\n  python_function:\n    loader_module: mlflow.sklearn\n  \
                       sklearn:\n    pickled_model: model.pkl\n    sklearn_version: 1.5.2\n";

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// One API call; returns the status and the JSON body (Null when empty).
async fn call(s: &Server, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut rb =
        reqwest::Client::new().request(method, format!("{}/api/v1/{path}", s.url)).bearer_auth(&s.token);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, if text.is_empty() { Value::Null } else { json_of(&text) })
}

/// A run of workspace `w` with artifacts `files`, created through the API (no job needed).
async fn run_with_artifacts(s: &Server, files: &[(&str, &[u8])]) -> String {
    let (st, run) =
        call(s, reqwest::Method::POST, "workspaces/w/runs", Some(json!({"experiment": "wine"}))).await;
    assert_eq!(st, 201, "{run}");
    let id = run["id"].as_str().unwrap().to_string();
    for (path, content) in files {
        let resp = reqwest::Client::new()
            .put(format!("{}/api/v1/workspaces/w/runs/{id}/artifacts/{path}", s.url))
            .bearer_auth(&s.token)
            .body(content.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201);
    }
    id
}

/// The content-addressed blobs of workspace `w` on disk.
fn blob_count(s: &Server) -> usize {
    let ws = json_of(&s.ok(&["workspace", "show", "w", "-o", "json"]));
    let id = ws["workspace"]["id"].as_str().unwrap().to_string();
    files_under(&s.data_dir).iter().filter(|p| p.contains(&format!("workspaces/{id}/blobs/"))).count()
}

async fn models_are_registered_from_runs_and_local_files_without_copying_bytes_twice(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    s.ok(&["workspace", "create", "w"]);
    let pickle = b"pretend this is a pickled ElasticNet".as_slice();
    let run = run_with_artifacts(
        &s,
        &[
            ("outputs/model/MLmodel", MLMODEL.as_bytes()),
            ("outputs/model/model.pkl", pickle),
            ("logs/a.txt", b"log"),
        ],
    )
    .await;
    let v1 = json_of(&s.ok(&[
        "model",
        "register",
        "--name",
        "wine",
        "--run",
        &run,
        "--path",
        "outputs/model",
        "--tag",
        "stage=dev",
        "--description",
        "elasticnet",
        "--property",
        "accuracy=0.93",
        "-w",
        "w",
        "-o",
        "json",
    ]));
    assert_eq!((v1["id"].as_str(), v1["version"].as_i64()), (Some("wine:1"), Some(1)), "{v1}");
    assert_eq!(
        (v1["framework"].as_str(), v1["framework_version"].as_str()),
        (Some("sklearn"), Some("1.5.2"))
    );
    assert_eq!(v1["run_id"].as_str(), Some(run.as_str()));
    assert!(v1["experiment_id"].is_string(), "{v1}");
    assert_eq!(v1["source"].as_str().unwrap(), format!("runs:/{run}/outputs/model"));
    assert_eq!(v1["size"].as_u64().unwrap() as usize, MLMODEL.len() + pickle.len());
    assert_eq!(
        (v1["tags"]["stage"].as_str(), v1["properties"]["accuracy"].as_str()),
        (Some("dev"), Some("0.93"))
    );
    assert_eq!(v1["created_by"], "admin");
    let files = json_of(&s.ok(&["model", "show", "wine:1", "-w", "w", "-o", "json"]));
    assert_eq!(files["id"], "wine:1");
    let blobs = blob_count(&s);
    assert_eq!(blobs, 2);

    // The same bytes from a local folder: a new version, not a single byte copied.
    let local = s.tmp().join("model");
    write_tree(&local, &[("MLmodel", MLMODEL.as_bytes()), ("model.pkl", pickle)]);
    let v2 = json_of(&s.ok(&[
        "model",
        "register",
        "--name",
        "wine",
        "--path",
        local.to_str().unwrap(),
        "--framework",
        "sklearn==1.6",
        "-w",
        "w",
        "-o",
        "json",
    ]));
    assert_eq!(v2["version"], 2);
    assert_eq!((v2["framework"].as_str(), v2["framework_version"].as_str()), (Some("sklearn"), Some("1.6")));
    assert_eq!(blob_count(&s), blobs, "registering the same bytes again copied them");

    // A single artifact file, and a single local file with new bytes.
    let v3 = json_of(&s.ok(&[
        "model",
        "register",
        "--name",
        "wine",
        "--run",
        &run,
        "--path",
        "outputs/model/model.pkl",
        "-w",
        "w",
        "-o",
        "json",
    ]));
    let manifest = call(&s, reqwest::Method::GET, "workspaces/w/models/wine/versions/3/files", None).await.1;
    assert_eq!(manifest, json!([{"path": "model.pkl", "sha256": sha256_hex(pickle), "size": pickle.len()}]));
    assert!(v3["framework"].is_null(), "{v3}");
    std::fs::write(s.tmp().join("other.onnx"), b"new bytes").unwrap();
    let other = s.tmp().join("other.onnx");
    let v = json_of(&s.ok(&[
        "model",
        "register",
        "--name",
        "iris",
        "--path",
        other.to_str().unwrap(),
        "-w",
        "w",
        "-o",
        "json",
    ]));
    assert_eq!(v["id"], "iris:1");
    assert_eq!(blob_count(&s), blobs + 1);
}

async fn tags_aliases_and_filters_work_and_downloads_round_trip(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    s.ok(&["workspace", "create", "w"]);
    let local = s.tmp().join("m");
    let big: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
    write_tree(&local, &[("MLmodel", MLMODEL.as_bytes()), ("data/weights.bin", &big)]);
    let path = local.to_str().unwrap();
    for _ in 0..3 {
        s.ok(&["model", "register", "--name", "wine", "--path", path, "-w", "w"]);
    }
    s.ok(&[
        "model",
        "register",
        "--name",
        "iris",
        "--path",
        path,
        "--framework",
        "pytorch",
        "--tag",
        "team=red",
        "-w",
        "w",
    ]);

    // Aliases move; `@alias` and `latest` resolve.
    s.ok(&["model", "alias", "wine", "production", "1", "-w", "w"]);
    assert_eq!(json_of(&s.ok(&["model", "show", "wine@production", "-w", "w", "-o", "json"]))["version"], 1);
    s.ok(&["model", "alias", "wine", "production", "2", "-w", "w"]);
    let shown = json_of(&s.ok(&["model", "show", "wine@production", "-w", "w", "-o", "json"]));
    assert_eq!((shown["version"].as_i64(), shown["aliases"].clone()), (Some(2), json!(["production"])));
    assert_eq!(json_of(&s.ok(&["model", "show", "wine:latest", "-w", "w", "-o", "json"]))["version"], 3);
    let model = json_of(&s.ok(&["model", "show", "wine", "-w", "w", "-o", "json"]));
    assert_eq!(model["model"]["aliases"], json!({"production": 2}));
    assert_eq!(model["versions"].as_array().unwrap().len(), 3);
    s.ok(&["model", "alias", "wine", "production", "--delete", "-w", "w"]);
    let err = s.fails(&["model", "show", "wine@production", "-w", "w"]);
    assert!(err.contains("404") && err.contains("wine@production"), "{err}");

    // Tags are mutable.
    s.ok(&["model", "tag", "wine:1", "team=blue", "stage=dev", "-w", "w"]);
    let v = json_of(&s.ok(&["model", "tag", "wine:1", "--remove", "stage", "-w", "w", "-o", "json"]));
    assert_eq!(v["tags"], json!({"team": "blue"}));

    // Filters; newest first.
    let names = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["model", "list", "-w", "w", "-o", "json"];
        all.extend_from_slice(args);
        json_of(&s.ok(&all))
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&[]), ["wine", "iris"], "wine was updated last (tag)");
    assert_eq!(names(&["--framework", "sklearn"]), ["wine"]);
    assert_eq!(names(&["--framework", "pytorch"]), ["iris"]);
    assert_eq!(names(&["--tag", "team=red"]), ["iris"]);
    assert_eq!(names(&["--tag", "team=blue"]), ["wine"]);
    assert_eq!(names(&["--name", "IR"]), ["iris"]);
    assert!(names(&["--name", "zzz"]).is_empty());

    // Download round trip, verified.
    let out = s.tmp().join("out");
    s.ok(&["model", "download", "wine:2", "-d", out.to_str().unwrap(), "-w", "w"]);
    assert_eq!(std::fs::read(out.join("data/weights.bin")).unwrap(), big);
    assert_eq!(std::fs::read(out.join("MLmodel")).unwrap(), MLMODEL.as_bytes());
    assert_eq!(files_under(&out).len(), 2, "{:?}", files_under(&out));
    // Again into the same folder: refused, nothing touched, unless --overwrite (`--dest` works too).
    std::fs::write(out.join("MLmodel"), b"edited locally").unwrap();
    let err = s.fails(&["model", "download", "wine:2", "--dest", out.to_str().unwrap(), "-w", "w"]);
    assert!(err.contains("2 local file(s) already exist") && err.contains("--overwrite"), "{err}");
    assert_eq!(std::fs::read(out.join("MLmodel")).unwrap(), b"edited locally");
    s.ok(&["model", "download", "wine:2", "--dest", out.to_str().unwrap(), "--overwrite", "-w", "w"]);
    assert_eq!(std::fs::read(out.join("MLmodel")).unwrap(), MLMODEL.as_bytes());
    assert_eq!(files_under(&out).len(), 2, "no partial file is left: {:?}", files_under(&out));

    // Deleting a version keeps the others; deleting the model removes all.
    s.ok(&["model", "delete", "wine:3", "-w", "w"]);
    assert_eq!(json_of(&s.ok(&["model", "show", "wine:latest", "-w", "w", "-o", "json"]))["version"], 2);
    s.ok(&["model", "delete", "wine", "-w", "w"]);
    assert!(s.fails(&["model", "show", "wine", "-w", "w"]).contains("404"));

    let shown = json_of(&s.ok(&["workspace", "show", "w", "-o", "json"]));
    assert_eq!(shown["mlflow_tracking_uri"].as_str().unwrap(), format!("{}/workspaces/w/mlflow", s.url));
    assert_eq!(
        shown["otlp_traces_endpoint"].as_str().unwrap(),
        format!("{}/workspaces/w/mlflow/v1/traces", s.url)
    );
}

async fn concurrent_registrations_of_one_name_get_versions_1_to_n(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    s.ok(&["workspace", "create", "w"]);
    let run = run_with_artifacts(&s, &[("outputs/model.pkl", b"bytes")]).await;
    let body = json!({"run_id": run, "path": "outputs/model.pkl"});
    let calls = (0..6)
        .map(|_| call(&s, reqwest::Method::POST, "workspaces/w/models/race/versions", Some(body.clone())));
    let mut versions: Vec<i64> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|(st, v)| {
            assert_eq!(st, 201, "{v}");
            v["version"].as_i64().unwrap()
        })
        .collect();
    versions.sort();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6]);
}

/// Records that a deployment uses `name:version`, straight in the server's database (the
/// deployments that will do this through the API do not exist yet).
async fn mark_used(s: &Server, db: &Option<PgDatabase>, name: &str, version: i64) {
    sqlx::any::install_default_drivers();
    let url = match db {
        Some(pg) => pg.url.clone(),
        None => format!("sqlite://{}", s.data_dir.join("cairn.db").display()),
    };
    let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
    let done = sqlx::query(
        "INSERT INTO model_version_uses (version_id, user_kind, user_id, created_at) \
         SELECT v.id, 'deployment', 'blue', 0 FROM model_versions v JOIN registered_models m ON m.id = v.model_id \
         WHERE m.name = $1 AND v.version = $2",
    )
    .bind(name)
    .bind(version)
    .execute(&mut conn)
    .await
    .unwrap();
    assert_eq!(done.rows_affected(), 1);
}

async fn bad_input_is_refused_clearly_and_changes_nothing(b: Backend) {
    let (s, db) = start_on(b, Opts::default()).await;
    s.ok(&["workspace", "create", "w"]);
    let run = run_with_artifacts(&s, &[("outputs/model.pkl", b"m"), ("logs/a.txt", b"l")]).await;
    use reqwest::Method as M;

    // A run path that is not among the artifacts: 404 naming it and listing what is there.
    let (st, e) = call(
        &s,
        M::POST,
        "workspaces/w/models/wine/versions",
        Some(json!({"run_id": run, "path": "outputs/nope"})),
    )
    .await;
    let msg = e["error"]["message"].as_str().unwrap();
    assert_eq!(st, 404, "{e}");
    assert!(
        msg.contains("outputs/nope") && msg.contains("outputs/model.pkl") && msg.contains("logs/a.txt"),
        "{msg}"
    );
    let err =
        s.fails(&["model", "register", "--name", "wine", "--run", &run, "--path", "outputs/nope", "-w", "w"]);
    assert!(err.contains("outputs/nope") && err.contains("404"), "{err}");
    // An unknown run, a name breaking the rule, a traversal, both sources or none.
    let (st, _) =
        call(&s, M::POST, "workspaces/w/models/wine/versions", Some(json!({"run_id": "ghost", "path": "x"})))
            .await;
    assert_eq!(st, 404);
    let (st, e) = call(
        &s,
        M::POST,
        "workspaces/w/models/Bad%20Name/versions",
        Some(json!({"run_id": run, "path": "outputs"})),
    )
    .await;
    assert_eq!(st, 400, "{e}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains("letters, digits, '-', '_' and '.', starting with a letter or digit"), "{e}");
    // Azure's rule, which MLflow habits fit too: capitals and dots register.
    let (st, e) = call(
        &s,
        M::POST,
        "workspaces/w/models/ElasticnetWine.v2/versions",
        Some(json!({"run_id": run, "path": "outputs"})),
    )
    .await;
    assert_eq!((st, e["id"].as_str()), (201, Some("ElasticnetWine.v2:1")), "{e}");
    let shown = s.ok(&["model", "show", "ElasticnetWine.v2:1", "-w", "w"]);
    assert!(shown.contains("ElasticnetWine.v2:1"), "{shown}");
    s.ok(&["model", "delete", "ElasticnetWine.v2:1", "-w", "w"]);
    let (st, e) = call(
        &s,
        M::POST,
        "workspaces/w/models/wine/versions",
        Some(json!({"run_id": run, "path": "../other"})),
    )
    .await;
    assert_eq!(st, 400, "{e}");
    let files = json!([{"path": "../../etc/passwd", "sha256": "a".repeat(64), "size": 1}]);
    let (st, e) = call(&s, M::POST, "workspaces/w/models/wine/versions", Some(json!({"files": files}))).await;
    assert_eq!(st, 400, "{e}");
    let files = json!([{"path": "model.pkl", "sha256": "b".repeat(64), "size": 1}]);
    let (st, e) = call(&s, M::POST, "workspaces/w/models/wine/versions", Some(json!({"files": files}))).await;
    assert!(st == 400 && e["error"]["message"].as_str().unwrap().contains("model.pkl"), "{e}");
    let (st, _) = call(
        &s,
        M::POST,
        "workspaces/w/models/wine/versions",
        Some(json!({"run_id": run, "path": "outputs", "files": []})),
    )
    .await;
    assert_eq!(st, 400);
    let (st, _) =
        call(&s, M::POST, "workspaces/w/models/wine/versions", Some(json!({"description": "x"}))).await;
    assert_eq!(st, 400);
    let (st, e) = call(
        &s,
        M::POST,
        "workspaces/w/models/wine/versions",
        Some(json!({"run_id": run, "path": "outputs", "color": 1})),
    )
    .await;
    assert!(st == 400 && e["error"]["message"].as_str().unwrap().contains("color"), "{e}");
    let (st, e) = call(&s, M::POST, "workspaces/w/blobs/missing", Some(json!({"sha256": ["zz"]}))).await;
    assert!(st == 400 && e["error"]["message"].as_str().unwrap().contains("zz"), "{e}");
    let (st, e) =
        call(&s, M::POST, "workspaces/w/blobs/missing", Some(json!({"sha256": ["A".repeat(64)]}))).await;
    assert_eq!((st, e), (200, json!({"missing": ["a".repeat(64)]})));
    // None of that registered anything.
    assert_eq!(call(&s, M::GET, "workspaces/w/models/wine", None).await.0, 404);

    let (st, _) = call(
        &s,
        M::POST,
        "workspaces/w/models/wine/versions",
        Some(json!({"run_id": run, "path": "outputs"})),
    )
    .await;
    assert_eq!(st, 201);
    // Unknown versions and aliases, malformed version references.
    let (st, e) = call(&s, M::GET, "workspaces/w/models/wine/versions/7", None).await;
    assert!(st == 404 && e["error"]["message"].as_str().unwrap().contains("latest is 1"), "{e}");
    assert_eq!(call(&s, M::GET, "workspaces/w/models/wine/versions/@prod", None).await.0, 404);
    assert_eq!(call(&s, M::GET, "workspaces/w/models/wine/versions/one", None).await.0, 400);
    assert_eq!(
        call(&s, M::PUT, "workspaces/w/models/wine/aliases/prod", Some(json!({"version": 9}))).await.0,
        404
    );
    assert_eq!(
        call(&s, M::PUT, "workspaces/w/models/wine/aliases/latest", Some(json!({"version": 1}))).await.0,
        400
    );
    assert_eq!(
        call(&s, M::PUT, "workspaces/w/models/wine/aliases/Prod!", Some(json!({"version": 1}))).await.0,
        400
    );
    assert_eq!(call(&s, M::GET, "workspaces/w/models/wine/versions/1/files/nope.bin", None).await.0, 404);
    assert_eq!(call(&s, M::GET, "workspaces/w/models?tag=novalue", None).await.0, 400);

    // A used version cannot be deleted, nor its model: 409, and both stay.
    mark_used(&s, &db, "wine", 1).await;
    let (st, e) = call(&s, M::DELETE, "workspaces/w/models/wine/versions/1", None).await;
    assert!(st == 409 && e["error"]["message"].as_str().unwrap().contains("deployment \"blue\""), "{e}");
    let err = s.fails(&["model", "delete", "wine", "-w", "w"]);
    assert!(err.contains("409"), "{err}");
    assert_eq!(call(&s, M::GET, "workspaces/w/models/wine/versions/1", None).await.0, 200);
}

/// Sets a file's modification time `secs` seconds into the past.
fn age(path: &std::path::Path, secs: u64) {
    let when = std::time::SystemTime::now() - std::time::Duration::from_secs(secs);
    std::fs::File::options().write(true).open(path).unwrap().set_modified(when).unwrap();
}

/// `cairn admin gc`: a deleted version's own blobs go, blobs another version or a code snapshot
/// still names stay, and an unreferenced blob younger than the grace period (an upload whose
/// manifest is not posted yet) survives until the grace period is over.
async fn gc_deletes_blobs_nothing_references_once_past_the_grace_period(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    s.ok(&["workspace", "create", "w"]);
    let ws = json_of(&s.ok(&["workspace", "show", "w", "-o", "json"]));
    let blob_dir =
        s.data_dir.join(format!("artifacts/workspaces/{}/blobs", ws["workspace"]["id"].as_str().unwrap()));
    let (shared, unique, code, fresh) = (
        b"weights both versions hold".as_slice(),
        b"only version 1".as_slice(),
        b"print(1)".as_slice(),
        b"in flight".as_slice(),
    );
    let v1 = s.tmp().join("v1");
    write_tree(&v1, &[("MLmodel", MLMODEL.as_bytes()), ("shared.bin", shared), ("unique.bin", unique)]);
    let v2 = s.tmp().join("v2");
    write_tree(&v2, &[("MLmodel", MLMODEL.as_bytes()), ("shared.bin", shared)]);
    for dir in [&v1, &v2] {
        s.ok(&["model", "register", "--name", "wine", "--path", dir.to_str().unwrap(), "-w", "w"]);
    }
    // A code snapshot names `code` (the same bytes as nothing else).
    let (st, created) = call(
        &s,
        reqwest::Method::POST,
        "workspaces/w/snapshots",
        Some(json!({"files": [{"path": "train.py", "sha256": sha256_hex(code), "size": code.len()}]})),
    )
    .await;
    assert_eq!(st, 201, "{created}");
    for bytes in [code, fresh] {
        let r = reqwest::Client::new()
            .put(format!("{}/api/v1/workspaces/w/blobs/{}", s.url, sha256_hex(bytes)))
            .bearer_auth(&s.token)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
    }
    s.ok(&["model", "delete", "wine:1", "-w", "w"]);
    // Everything but `fresh` was written long ago.
    for bytes in [MLMODEL.as_bytes(), shared, unique, code] {
        age(&blob_dir.join(sha256_hex(bytes)), 2 * 3600);
    }
    let on_disk = || files_under(&blob_dir);
    let before = on_disk();
    assert_eq!(before.len(), 5, "{before:?}");

    let dry = json_of(&s.ok(&["admin", "gc", "-w", "w", "--dry-run", "-o", "json"]));
    assert_eq!(dry["dry_run"], true);
    assert_eq!(
        (dry["deleted"].as_u64(), dry["deleted_bytes"].as_u64()),
        (Some(1), Some(unique.len() as u64)),
        "{dry}"
    );
    let w = &dry["workspaces"][0];
    assert_eq!(
        (w["workspace"].as_str(), w["referenced"].as_u64(), w["young"].as_u64()),
        (Some("w"), Some(3), Some(1)),
        "{dry}"
    );
    assert_eq!(on_disk(), before, "a dry run deleted something");

    let done = json_of(&s.ok(&["admin", "gc", "-w", "w", "-o", "json"]));
    assert_eq!((done["deleted"].as_u64(), done["dry_run"].as_bool()), (Some(1), Some(false)), "{done}");
    let mut expected: Vec<String> =
        [MLMODEL.as_bytes(), shared, code, fresh].iter().map(|b| sha256_hex(b)).collect();
    expected.sort();
    assert_eq!(on_disk(), expected);
    // What is kept still works: version 2 downloads whole.
    let dest = s.tmp().join("dl");
    s.ok(&["model", "download", "wine:2", "--dir", dest.to_str().unwrap(), "-w", "w"]);
    assert_eq!(std::fs::read(dest.join("shared.bin")).unwrap(), shared);
    let again = json_of(&s.ok(&["admin", "gc", "-o", "json"]));
    assert_eq!(again["deleted"], 0, "{again}");
    // The grace period is the caller's to choose: with none, the unreferenced upload goes too.
    let now = json_of(&s.ok(&["admin", "gc", "-w", "w", "--grace-secs", "0", "-o", "json"]));
    assert_eq!(
        (now["deleted"].as_u64(), now["deleted_bytes"].as_u64()),
        (Some(1), Some(fresh.len() as u64)),
        "{now}"
    );
    assert_eq!(on_disk().len(), 3);

    // Admins only; bad input is a 4xx naming the problem.
    let writer = json_of(&s.ok(&["token", "create", "bob", "--role", "writer", "-o", "json"]));
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/admin/gc", s.url))
        .bearer_auth(writer["token"].as_str().unwrap())
        .json(&json!({"workspace": "w"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let (st, body) = call(&s, reqwest::Method::POST, "admin/gc", Some(json!({"workspace": "nope"}))).await;
    assert_eq!(st, 404, "{body}");
    let (st, body) = call(&s, reqwest::Method::POST, "admin/gc", Some(json!({"grace": 0}))).await;
    assert_eq!(st, 400, "{body}");
    assert_eq!(on_disk().len(), 3);
}
