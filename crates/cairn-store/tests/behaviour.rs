//! The store's behaviour suite: every test runs against SQLite and against a fresh PostgreSQL
//! database (`CAIRN_TEST_POSTGRES`, default the local server with trust auth).

use cairn_core::api::{CreateDatastore, DatastoreKind, Role};
use cairn_core::runs::{KeyValue, LogBatch, LogMetric};
use cairn_core::Error;
use cairn_store::{NewToken, Store};

#[macro_use]
mod common;
use common::Db;

on_both!(
    the_store_answers_and_starts_empty,
    workspace_names_are_unique_and_come_with_a_default_datastore,
    workspaces_page_in_name_order,
    deleting_a_workspace_cascades_to_its_datastores_and_file_records,
    tokens_are_found_by_lookup_and_names_are_unique,
    file_records_are_upserted_and_deleted_by_prefix,
    concurrent_file_records_are_all_written_and_a_bad_one_fails_alone,
    endpoints_are_unique_per_server_and_keys_change_one_slot_at_a_time,
    log_batch_keeps_every_point_and_the_latest_value_per_key,
    log_batch_refuses_a_changed_param_and_writes_nothing,
    log_batch_upserts_tags_last_value_winning,
    compute_sizes_are_per_workspace_and_kept_while_a_compute_uses_them,
);

async fn the_store_answers_and_starts_empty(store: &Store) {
    store.ping().await.unwrap();
    assert_eq!(store.count_tokens().await.unwrap(), 0);
    assert!(store.list_workspaces(None, None).await.unwrap().items.is_empty());
}

async fn workspace_names_are_unique_and_come_with_a_default_datastore(store: &Store) {
    let ws = store.create_workspace("wine", "d").await.unwrap();
    let err = store.create_workspace("wine", "again").await.unwrap_err();
    assert!(matches!(err, Error::Conflict(ref m) if m.contains("already exists")), "{err:?}");
    let ds = store.datastore(&ws, "default").await.unwrap();
    assert_eq!(ds.datastore.kind, DatastoreKind::Default);
    let err = store.datastore(&ws, "nope").await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }));
    assert_eq!(store.workspace("wine").await.unwrap().id, ws.id);
}

async fn workspaces_page_in_name_order(store: &Store) {
    for n in ["c", "a", "e", "b", "d"] {
        store.create_workspace(n, "").await.unwrap();
    }
    let p1 = store.list_workspaces(None, Some(2)).await.unwrap();
    assert_eq!(p1.items.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    let p2 = store.list_workspaces(p1.next_page_token.as_deref(), Some(2)).await.unwrap();
    assert_eq!(p2.items.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(), ["c", "d"]);
    let p3 = store.list_workspaces(p2.next_page_token.as_deref(), Some(2)).await.unwrap();
    assert_eq!(p3.items.len(), 1);
    assert!(p3.next_page_token.is_none());
}

async fn deleting_a_workspace_cascades_to_its_datastores_and_file_records(store: &Store) {
    let ws = store.create_workspace("w", "").await.unwrap();
    let req = CreateDatastore {
        name: "extra".into(),
        kind: DatastoreKind::Local,
        location: "/tmp".into(),
        description: String::new(),
    };
    let extra = store.create_datastore(&ws, &req).await.unwrap();
    assert!(matches!(store.create_datastore(&ws, &req).await.unwrap_err(), Error::Conflict(_)));
    store.put_file_record(&extra.id, "a.csv", 3, &"a".repeat(64)).await.unwrap();
    store.delete_workspace("w").await.unwrap();
    assert!(store.file_records(&extra.id, &["a.csv"]).await.unwrap().is_empty());
    let ws = store.create_workspace("w", "").await.unwrap();
    assert_eq!(store.list_datastores(&ws, None, None).await.unwrap().items.len(), 1);
    assert!(matches!(store.delete_workspace("ghost").await.unwrap_err(), Error::NotFound { .. }));
}

async fn tokens_are_found_by_lookup_and_names_are_unique(store: &Store) {
    let t = NewToken {
        name: "ci",
        lookup: "0123456789abcdef",
        hash: "h1",
        role: Role::Writer,
        workspace: None,
        run_id: None,
    };
    store.insert_token(t).await.unwrap();
    let dup = NewToken {
        name: "ci",
        lookup: "fedcba9876543210",
        hash: "h2",
        role: Role::Reader,
        workspace: None,
        run_id: None,
    };
    assert!(matches!(store.insert_token(dup).await.unwrap_err(), Error::Conflict(_)));
    let found = store.token_by_lookup("0123456789abcdef").await.unwrap().unwrap();
    assert_eq!((found.hash.as_str(), found.info.role), ("h1", Role::Writer));
    store.touch_token(&found.id).await.unwrap();
    assert!(store.list_tokens(None, None).await.unwrap().items[0].last_used_at.is_some());
    // Found twice (the second time from the store's cache), deleted: gone at once.
    assert!(store.token_by_lookup("0123456789abcdef").await.unwrap().is_some());
    store.delete_token("ci").await.unwrap();
    assert!(store.token_by_lookup("0123456789abcdef").await.unwrap().is_none());
    assert!(matches!(store.delete_token("ci").await.unwrap_err(), Error::NotFound { .. }));
    // A run's token stops working as soon as the run's tokens are deleted.
    let run_token = NewToken {
        name: "run-r1",
        lookup: "1111222233334444",
        hash: "h3",
        role: Role::Writer,
        workspace: Some("w"),
        run_id: Some("r1"),
    };
    store.insert_token(run_token).await.unwrap();
    assert!(store.token_by_lookup("1111222233334444").await.unwrap().is_some());
    assert!(store.token_by_lookup("1111222233334444").await.unwrap().is_some());
    store.delete_run_tokens("r1").await.unwrap();
    assert!(store.token_by_lookup("1111222233334444").await.unwrap().is_none());
}

async fn file_records_are_upserted_and_deleted_by_prefix(store: &Store) {
    let ws = store.create_workspace("w", "").await.unwrap();
    let ds = store.datastore(&ws, "default").await.unwrap();
    let sha = |c: char| c.to_string().repeat(64);
    store.put_file_record(&ds.id, "d/a.csv", 1, &sha('a')).await.unwrap();
    store.put_file_record(&ds.id, "d/a.csv", 2, &sha('b')).await.unwrap();
    store.put_file_record(&ds.id, "d/sub/b.csv", 3, &sha('c')).await.unwrap();
    store.put_file_record(&ds.id, "d_x/c.csv", 4, &sha('d')).await.unwrap();
    let many: Vec<String> = (0..1200).map(|i| format!("bulk/{i}")).collect();
    let keys: Vec<&str> = many.iter().map(String::as_str).chain(["d/a.csv"]).collect();
    let got = store.file_records(&ds.id, &keys).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got["d/a.csv"].size, got["d/a.csv"].sha256.as_str()), (2, sha('b').as_str()));
    // `d` and everything under it, but not `d_x` (LIKE wildcards are escaped).
    assert_eq!(store.delete_file_records(&ds.id, "d").await.unwrap(), 2);
    assert_eq!(store.file_records(&ds.id, &["d_x/c.csv"]).await.unwrap().len(), 1);
}

/// Records written at once (as an upload of many small files does) are written together; one
/// that cannot be written (its datastore is gone) fails on its own, and the rest are kept.
async fn concurrent_file_records_are_all_written_and_a_bad_one_fails_alone(store: &Store) {
    let ws = store.create_workspace("w", "").await.unwrap();
    let ds = store.datastore(&ws, "default").await.unwrap();
    let mut calls = Vec::new();
    for i in 0..300u64 {
        let (store, id) =
            (store.clone(), if i == 150 { "no-such-datastore".to_string() } else { ds.id.clone() });
        calls.push(tokio::spawn(async move {
            store.put_file_record(&id, &format!("many/{i}"), i, &format!("{i:064}")).await
        }));
    }
    let mut failed = Vec::new();
    for (i, call) in calls.into_iter().enumerate() {
        if call.await.unwrap().is_err() {
            failed.push(i);
        }
    }
    assert_eq!(failed, vec![150], "only the record of the missing datastore fails");
    let paths: Vec<String> = (0..300).map(|i| format!("many/{i}")).collect();
    let keys: Vec<&str> = paths.iter().map(String::as_str).collect();
    let got = store.file_records(&ds.id, &keys).await.unwrap();
    assert_eq!(got.len(), 299);
    assert_eq!(
        (got["many/299"].size, got["many/299"].sha256.as_str()),
        (299, format!("{:064}", 299).as_str())
    );
    assert!(!got.contains_key("many/150"));
}

fn endpoint(name: &str, ws: &cairn_core::api::Workspace) -> cairn_store::EndpointRecord {
    use cairn_core::endpoints::{AuthMode, ProvisioningState};
    use cairn_store::{EndpointRecord, StoredKey};
    EndpointRecord {
        id: EndpointRecord::new_id(),
        workspace_id: ws.id.clone(),
        workspace: ws.name.clone(),
        name: name.into(),
        description: "d".into(),
        tags: [("team".to_string(), "wine".to_string())].into(),
        auth_mode: AuthMode::Key,
        traffic: Default::default(),
        mirror_traffic: Default::default(),
        provisioning_state: ProvisioningState::Succeeded,
        primary: StoredKey { sealed: "p-sealed".into(), hash: "p-hash".into() },
        secondary: StoredKey { sealed: "s-sealed".into(), hash: "s-hash".into() },
        created_at: 1,
        updated_at: 1,
    }
}

async fn endpoints_are_unique_per_server_and_keys_change_one_slot_at_a_time(store: &Store) {
    use cairn_core::endpoints::{AuthMode, KeyType};
    let a = store.create_workspace("a", "").await.unwrap();
    let b = store.create_workspace("b", "").await.unwrap();
    let e = endpoint("wine-ep", &a);
    store.create_endpoint(&a, &e).await.unwrap();
    let err = store.create_endpoint(&b, &endpoint("wine-ep", &b)).await.unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err}");
    assert!(matches!(store.endpoint(&b, "wine-ep").await.unwrap_err(), Error::NotFound { .. }));
    let found = store.endpoint_by_name("wine-ep").await.unwrap().unwrap();
    assert_eq!((found.workspace.as_str(), found.tags["team"].as_str()), ("a", "wine"));
    assert!(store.endpoint_by_name("other").await.unwrap().is_none());

    let mut changed = store.endpoint(&a, "wine-ep").await.unwrap();
    changed.auth_mode = AuthMode::AmlToken;
    changed.traffic = [("blue".to_string(), 100)].into();
    changed.updated_at = 2;
    store.update_endpoint(&changed).await.unwrap();
    let new = cairn_store::StoredKey { sealed: "s2".into(), hash: "h2".into() };
    store.set_endpoint_key(&e.id, KeyType::Secondary, &new, 3).await.unwrap();
    let got = store.endpoint(&a, "wine-ep").await.unwrap();
    assert_eq!(got.auth_mode, AuthMode::AmlToken);
    assert_eq!(got.traffic["blue"], 100);
    assert_eq!((got.primary.hash.as_str(), got.secondary.hash.as_str()), ("p-hash", "h2"));
    assert_eq!((got.created_at, got.updated_at), (1, 3));

    store.delete_endpoint(&a, "wine-ep").await.unwrap();
    assert!(store.list_endpoints(&a).await.unwrap().is_empty());
    store.create_endpoint(&b, &endpoint("wine-ep", &b)).await.unwrap();
    store.delete_workspace("b").await.unwrap();
    assert!(
        store.endpoint_by_name("wine-ep").await.unwrap().is_none(),
        "deleting a workspace deletes its endpoints"
    );
}

async fn new_run(store: &Store) -> (cairn_core::api::Workspace, String) {
    let ws = store.create_workspace("tracking", "").await.unwrap();
    let id = common::run(store, &ws, "e", "r").await;
    (ws, id)
}

fn metric(key: &str, value: f64, step: i64, timestamp: i64) -> LogMetric {
    LogMetric { key: key.into(), value, step: Some(step), timestamp: Some(timestamp) }
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue { key: key.into(), value: value.into() }
}

async fn log_batch_keeps_every_point_and_the_latest_value_per_key(store: &Store) {
    let (ws, run) = new_run(store).await;
    // 1000 points over 4 keys: more rows than one multi-row statement holds.
    let metrics: Vec<LogMetric> =
        (0..1000).map(|i| metric(&format!("m{}", i % 4), i as f64 / 7.0, i / 4, 1000 + i)).collect();
    store.log_batch(&run, &LogBatch { metrics, ..Default::default() }).await.unwrap();
    let series = store.run_metrics(&run).await.unwrap();
    assert_eq!(series.len(), 4);
    for (k, points) in &series {
        assert_eq!(points.len(), 250, "{k}");
        let i = k[1..].parse::<i64>().unwrap();
        assert_eq!(points[249].value, (996 + i) as f64 / 7.0, "values are exact");
    }
    let latest = store.run(&ws, &run).await.unwrap().metrics;
    assert_eq!(latest["m3"].step, 249);
    assert_eq!(latest["m3"].value, 999.0 / 7.0);

    // Non-finite values are kept as such, also as the latest value.
    let odd = vec![
        metric("nan", f64::NAN, 0, 1),
        metric("inf", f64::INFINITY, 0, 1),
        metric("ninf", f64::NEG_INFINITY, 0, 1),
    ];
    store.log_batch(&run, &LogBatch { metrics: odd, ..Default::default() }).await.unwrap();
    let latest = store.run(&ws, &run).await.unwrap().metrics;
    assert!(latest["nan"].value.is_nan());
    assert_eq!(latest["inf"].value, f64::INFINITY);
    assert_eq!(latest["ninf"].value, f64::NEG_INFINITY);

    // Latest = highest step, then latest timestamp, then last logged; older points never replace it.
    let b = |metrics| LogBatch { metrics, ..Default::default() };
    store.log_batch(&run, &b(vec![metric("l", 1.0, 5, 100), metric("l", 2.0, 4, 999)])).await.unwrap();
    assert_eq!(store.run(&ws, &run).await.unwrap().metrics["l"].value, 1.0);
    store.log_batch(&run, &b(vec![metric("l", 3.0, 5, 50), metric("l", 4.0, 3, 1)])).await.unwrap();
    assert_eq!(store.run(&ws, &run).await.unwrap().metrics["l"].value, 1.0, "an older point is kept out");
    store.log_batch(&run, &b(vec![metric("l", 5.0, 5, 100), metric("l", 6.0, 5, 100)])).await.unwrap();
    assert_eq!(store.run(&ws, &run).await.unwrap().metrics["l"].value, 6.0, "a tie goes to the last logged");
    assert_eq!(store.run_metrics(&run).await.unwrap()["l"].len(), 6);
}

async fn log_batch_refuses_a_changed_param_and_writes_nothing(store: &Store) {
    let (ws, run) = new_run(store).await;
    let first = LogBatch { params: vec![kv("alpha", "0.5"), kv("depth", "5")], ..Default::default() };
    store.log_batch(&run, &first).await.unwrap();
    // The same values again are accepted (clients retry).
    store.log_batch(&run, &first).await.unwrap();
    let changed = LogBatch {
        metrics: vec![metric("rmse", 0.1, 0, 1)],
        params: vec![kv("beta", "1"), kv("alpha", "0.9")],
        tags: vec![kv("t", "v")],
    };
    let err = store.log_batch(&run, &changed).await.unwrap_err();
    assert!(
        matches!(err, Error::Invalid(ref m) if m.contains("param \"alpha\" is already \"0.5\"")),
        "{err:?}"
    );
    let twice = LogBatch { params: vec![kv("gamma", "1"), kv("gamma", "2")], ..Default::default() };
    let err = store.log_batch(&run, &twice).await.unwrap_err();
    assert!(matches!(err, Error::Invalid(ref m) if m.contains("param \"gamma\"")), "{err:?}");
    let got = store.run(&ws, &run).await.unwrap();
    assert_eq!(got.params.len(), 2, "{:?}", got.params);
    assert!(got.tags.is_empty() && got.metrics.is_empty(), "nothing of a refused batch is written");
    assert!(store.run_metrics(&run).await.unwrap().is_empty());
}

async fn log_batch_upserts_tags_last_value_winning(store: &Store) {
    let (ws, run) = new_run(store).await;
    let tags = vec![kv("stage", "a"), kv("owner", "x"), kv("stage", "b")];
    store.log_batch(&run, &LogBatch { tags, ..Default::default() }).await.unwrap();
    let tags = vec![kv("stage", "c")];
    store.log_batch(&run, &LogBatch { tags, ..Default::default() }).await.unwrap();
    let got = store.run(&ws, &run).await.unwrap().tags;
    assert_eq!(got["stage"], "c");
    assert_eq!(got["owner"], "x");
}

async fn compute_sizes_are_per_workspace_and_kept_while_a_compute_uses_them(store: &Store) {
    let ws = store.create_workspace("w", "").await.unwrap();
    let other = store.create_workspace("v", "").await.unwrap();
    let size = |name: &str, cores: u32, memory_gb: f64| cairn_core::runs::ComputeSize {
        name: name.into(),
        cores,
        memory_gb,
        shipped: false,
        created_by: None,
        created_at: None,
    };
    let made = store.create_size(&ws, &size("half", 1, 0.5), "alice").await.unwrap();
    assert_eq!((made.cores, made.memory_gb, made.shipped), (1, 0.5, false));
    assert_eq!(made.created_by.as_deref(), Some("alice"));
    let err = store.create_size(&ws, &size("half", 2, 1.0), "bob").await.unwrap_err();
    assert!(matches!(err, Error::Conflict(ref m) if m.contains("already exists")), "{err:?}");
    store.create_size(&other, &size("half", 2, 3.0), "bob").await.unwrap();
    assert_eq!(store.size(&ws.id, "half").await.unwrap().unwrap().cores, 1, "the first one is unchanged");
    assert_eq!(store.size(&other.id, "half").await.unwrap().unwrap().memory_gb, 3.0);
    assert!(store.size(&ws.id, "nope").await.unwrap().is_none());

    let compute = cairn_store::ComputeRecord {
        id: String::new(),
        workspace_id: ws.id.clone(),
        name: "cpu".into(),
        kind: "local".into(),
        size: "half".into(),
        min_nodes: 0,
        max_nodes: 1,
        idle_seconds: 60,
        created_at: 0,
    };
    store.create_compute(&ws, &compute).await.unwrap();
    let err = store.delete_size(&ws, "half").await.unwrap_err();
    assert!(matches!(err, Error::Conflict(ref m) if m.contains("used by compute cpu")), "{err:?}");
    assert!(store.size(&ws.id, "half").await.unwrap().is_some());
    // The other workspace's size of the same name is not in use.
    store.delete_size(&other, "half").await.unwrap();
    assert!(store.list_sizes(&other).await.unwrap().is_empty());
    let err = store.delete_size(&other, "half").await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    store.delete_compute(&ws, "cpu").await.unwrap();
    store.delete_size(&ws, "half").await.unwrap();
    assert!(store.list_sizes(&ws).await.unwrap().is_empty());
}
