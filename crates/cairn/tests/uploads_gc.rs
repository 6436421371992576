//! `cairn admin gc` removes the staged parts of expired MLflow multipart uploads (issue 4): before,
//! they were swept only when the next upload was created, so a server that saw no more uploads
//! kept them forever.

mod common;

use common::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn admin_gc_sweeps_expired_multipart_uploads_and_keeps_live_ones() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    s.ok(&["workspace", "create", "v"]);
    let http = reqwest::Client::new();
    let staging = s.data_dir.join("artifacts/mlflow-uploads");
    // An upload with one part staged, in workspace `ws`; returns its id.
    let upload = |ws: &'static str, part: usize| {
        let (http, url, token) = (http.clone(), s.url.clone(), s.token.clone());
        async move {
            let api = format!("{url}/workspaces/{ws}/mlflow/api/2.0");
            let post = |path: String, body: Value| {
                http.post(format!("{api}/{path}")).bearer_auth(&token).json(&body)
            };
            let run = send_json(post("mlflow/runs/create".into(), json!({"experiment_id": "0"}))).await;
            let run = run["run"]["info"]["run_id"].as_str().unwrap().to_string();
            let created = send_json(post(
                format!("mlflow-artifacts/mpu/create/0/{run}/artifacts"),
                json!({"path": "/tmp/big.bin", "num_parts": 2}),
            ))
            .await;
            let url = created["credentials"][0]["url"].as_str().unwrap_or_else(|| panic!("{created}"));
            let r = http.put(url).body(vec![b'x'; part]).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200);
            created["upload_id"].as_str().unwrap().to_string()
        }
    };
    let expired_w = upload("w", 300_000).await;
    let expired_v = upload("v", 1000).await;
    let live = upload("w", 5000).await;
    // Each create started a background sweep; a gc waits for the one running, so that none can
    // see (and act on) the edits below before the gc runs that this test makes.
    let none: Value = serde_json::from_str(&s.ok(&["admin", "gc", "--dry-run", "-o", "json"])).unwrap();
    assert_eq!(none["expired_uploads"], 0, "{none}");
    // Two uploads are past their expiry (as if 24 h had gone by): their meta.json says so.
    for id in [&expired_w, &expired_v] {
        let meta = staging.join(id).join("meta.json");
        let mut m: Value = serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
        m["expires"] = json!(1);
        std::fs::write(&meta, m.to_string()).unwrap();
    }
    let meta_len = |id: &str| std::fs::metadata(staging.join(id).join("meta.json")).unwrap().len();
    let expected_w = 300_000 + meta_len(&expired_w);
    let expected_all = expected_w + 1000 + meta_len(&expired_v);

    // A dry run counts and removes nothing.
    let dry = common::json(&s.ok(&["admin", "gc", "--dry-run", "-o", "json"]));
    assert_eq!(
        (dry["expired_uploads"].as_u64(), dry["expired_upload_bytes"].as_u64()),
        (Some(2), Some(expected_all))
    );
    assert!(staging.join(&expired_w).exists() && staging.join(&expired_v).exists());
    // One workspace: only its expired upload.
    let w = common::json(&s.ok(&["admin", "gc", "-w", "w", "-o", "json"]));
    assert_eq!(
        (w["expired_uploads"].as_u64(), w["expired_upload_bytes"].as_u64()),
        (Some(1), Some(expected_w))
    );
    assert!(!staging.join(&expired_w).exists(), "{:?}", files_under(&staging));
    assert!(staging.join(&expired_v).exists());
    // Everything, in the table output too.
    let table = s.ok(&["admin", "gc"]);
    assert!(table.contains("deleted 1 expired multipart uploads"), "{table}");
    assert!(!staging.join(&expired_v).exists());
    // The live upload is untouched.
    assert!(staging.join(&live).join("part-00001").exists(), "{:?}", files_under(&staging));
    let again = common::json(&s.ok(&["admin", "gc", "-o", "json"]));
    assert_eq!(again["expired_uploads"], 0, "{again}");
}
