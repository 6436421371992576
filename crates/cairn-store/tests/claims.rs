//! Servers sharing one database (migration 0016): their registry (heartbeat, clean stop), and
//! claiming queued runs (`Store::claim_run`) at the same time, where a compute's `max_nodes` must
//! hold across all of them.

use std::collections::BTreeMap;

use cairn_core::runs::RunStatus;
use cairn_store::{Claim, ComputeRecord, NewRun, ServerMark, Store};

#[macro_use]
mod common;
use common::Db;

on_both_db!(
    a_server_is_seen_by_its_heartbeat_and_gone_at_its_clean_stop,
    concurrent_claims_of_two_servers_never_exceed_max_nodes,
    a_cluster_lock_orders_two_servers,
);

/// Two stores on one database, as two servers: shared holders coexist, an exclusive one waits
/// for them and makes them wait, and a dropped guard lets the waiter in. On SQLite (one server
/// only) the lock is nothing and never waits.
async fn a_cluster_lock_orders_two_servers(db: &Db) {
    let other = Store::open(&db.url).await.unwrap();
    let (a, b) = (&db.store, &other);
    let soon = std::time::Duration::from_millis(300);
    let shared = a.cluster_lock("uses:w", false).await.unwrap();
    let shared_too = tokio::time::timeout(soon, b.cluster_lock("uses:w", false)).await;
    assert!(shared_too.is_ok(), "shared holders coexist");
    drop(shared_too);
    let pg = a.backend() == cairn_store::Backend::Postgres;
    let waiting = tokio::spawn({
        let b = b.clone();
        async move { b.cluster_lock("uses:w", true).await.map(|_| std::time::Instant::now()) }
    });
    tokio::time::sleep(soon).await;
    assert_eq!(waiting.is_finished(), !pg, "an exclusive lock waits for a shared holder");
    // Another name is another lock.
    tokio::time::timeout(soon, b.cluster_lock("uses:x", true)).await.expect("other names are free").unwrap();
    let released = std::time::Instant::now();
    drop(shared);
    let acquired = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
        .await
        .expect("the dropped guard lets the waiter in")
        .unwrap()
        .unwrap();
    assert!(!pg || acquired >= released);
    other.close().await;
}

async fn a_server_is_seen_by_its_heartbeat_and_gone_at_its_clean_stop(db: &Db) {
    let store = &db.store;
    store.register_server("a", "host-a", "http://a", 60_000).await.unwrap();
    store.register_server("b", "host-b", "http://b", 60_000).await.unwrap();
    let server = |id: &'static str| async move {
        store.servers().await.unwrap().into_iter().find(|s| s.id == id).unwrap()
    };
    let before = server("a").await.last_seen;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store.mark_server("a", ServerMark::Seen).await.unwrap();
    let a = server("a").await;
    assert!(a.last_seen > before, "the heartbeat moves last_seen");
    assert_eq!(a.stopped_at, None);
    let others: Vec<String> =
        store.other_live_servers("b").await.unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(others, ["a"]);

    store.mark_server("a", ServerMark::Stopped).await.unwrap();
    let a = server("a").await;
    assert!(a.stopped_at.is_some_and(|t| t >= a.last_seen), "{a:?}");
    assert!(store.other_live_servers("b").await.unwrap().is_empty(), "a stopped server is gone at once");
    // Registering again (a restart of the same id) brings it back.
    store.register_server("a", "host-a", "http://a", 60_000).await.unwrap();
    assert_eq!(store.other_live_servers("b").await.unwrap().len(), 1);
}

async fn concurrent_claims_of_two_servers_never_exceed_max_nodes(db: &Db) {
    let store = &db.store;
    let ws = store.create_workspace("w", "").await.unwrap();
    let compute = ComputeRecord {
        id: String::new(),
        workspace_id: String::new(),
        name: "cpu".into(),
        kind: "amlcompute".into(),
        size: "small".into(),
        min_nodes: 0,
        max_nodes: 2,
        idle_seconds: 60,
        created_at: 0,
    };
    store.create_compute(&ws, &compute).await.unwrap();
    let (exp, _) = store.ensure_experiment(&ws, "e").await.unwrap();
    let tags = BTreeMap::new();
    let mut runs = Vec::new();
    for i in 0..24 {
        let new = NewRun {
            experiment_id: &exp,
            display_name: &format!("r{i}"),
            status: RunStatus::Queued,
            job: None,
            compute: Some("cpu"),
            environment: None,
            parent_id: None,
            created_by: None,
            tags: &tags,
            started_at: None,
        };
        runs.push(store.create_run(&ws, new).await.unwrap());
    }
    // Every run claimed at once, by two servers in turn: each claim is its own transaction.
    let claims: Vec<_> = runs
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let (store, id, ws_id) = (store.clone(), id.clone(), ws.id.clone());
            let server = if i % 2 == 0 { "server-a" } else { "server-b" };
            tokio::spawn(async move { store.claim_run(&id, server, &ws_id, "cpu").await.unwrap() })
        })
        .collect();
    let mut outcome = Vec::new();
    for c in claims {
        outcome.push(c.await.unwrap());
    }
    let claimed = outcome.iter().filter(|c| **c == Claim::Claimed).count();
    assert_eq!(claimed, 2, "{outcome:?}");
    assert!(outcome.iter().all(|c| matches!(c, Claim::Claimed | Claim::Full)), "{outcome:?}");
    let preparing = store.runs_in_status(&[RunStatus::Preparing]).await.unwrap();
    assert_eq!(preparing.len(), 2);
    assert!(preparing.iter().all(|r| r.server_id.is_some()), "{preparing:?}");

    // A claimed run is not claimed again; one that ends frees its node for the next claim.
    let first = preparing[0].id.clone();
    assert_eq!(store.claim_run(&first, "server-b", &ws.id, "cpu").await.unwrap(), Claim::Full);
    store.transition_run(&first, &[], RunStatus::Completed, None).await.unwrap();
    assert_eq!(store.claim_run(&first, "server-b", &ws.id, "cpu").await.unwrap(), Claim::NotQueued);
    let next = runs.iter().find(|id| !preparing.iter().any(|r| &r.id == *id)).unwrap();
    assert_eq!(store.claim_run(next, "server-b", &ws.id, "cpu").await.unwrap(), Claim::Claimed);
    assert_eq!(store.claim_run(next, "server-b", &ws.id, "nope").await.unwrap(), Claim::ComputeGone);
}
