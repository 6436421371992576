//! Claiming queued runs (`Store::claim_run`, migration 0016): servers sharing one database claim
//! at the same time, and a compute's `max_nodes` must hold across all of them.

use std::collections::BTreeMap;

use cairn_core::runs::RunStatus;
use cairn_store::{Claim, ComputeRecord, NewRun, Store};

#[macro_use]
mod common;
use common::Db;

on_both!(concurrent_claims_of_two_servers_never_exceed_max_nodes);

async fn concurrent_claims_of_two_servers_never_exceed_max_nodes(store: &Store) {
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
            tags: &tags,
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
