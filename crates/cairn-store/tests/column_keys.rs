//! The column keys `log_batch` records in `experiment_keys` while a per-process set
//! (`KnownKeys` in `crates/cairn-store/src/studio.rs`) skips the rows it knows are there, on
//! SQLite and PostgreSQL. The set may only skip redundant inserts: whatever another store on the
//! same database did, whatever was refused or deleted, every key logged must be listed.

use cairn_core::api::Workspace;
use cairn_core::runs::{KeyValue, LogBatch, LogMetric};
use cairn_store::Store;

#[macro_use]
mod common;
use common::Db;

on_both_db!(
    two_stores_on_one_database_never_miss_a_key,
    a_refused_batch_leaves_its_keys_unknown,
    keys_come_back_in_a_workspace_made_again_with_the_same_names,
);

async fn run(store: &Store, ws: &Workspace, experiment: &str) -> String {
    common::run(store, ws, experiment, "r").await
}

fn batch(params: &[&str], metrics: &[&str]) -> LogBatch {
    LogBatch {
        params: params.iter().map(|k| KeyValue { key: k.to_string(), value: "v".into() }).collect(),
        metrics: metrics
            .iter()
            .map(|k| LogMetric { key: k.to_string(), value: 1.0, step: Some(0), timestamp: Some(1) })
            .collect(),
        tags: Vec::new(),
    }
}

async fn keys(store: &Store, ws: &Workspace, experiment: &str) -> (Vec<String>, Vec<String>) {
    let k = store.run_column_keys(ws, Some(experiment)).await.unwrap();
    (k.params, k.metrics)
}

fn owned(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

async fn two_stores_on_one_database_never_miss_a_key(db: &Db) {
    let a = &db.store;
    let b = Store::open(&db.url).await.unwrap();
    let ws = a.create_workspace("w", "").await.unwrap();
    let r1 = run(a, &ws, "e").await;
    let r2 = run(a, &ws, "e").await;
    // Each store learns a different part of the experiment's keys; each then logs keys the other
    // recorded (skipped or inserted again, never lost) and keys new to both.
    a.log_batch(&r1, &batch(&["pa"], &["ma"])).await.unwrap();
    b.log_batch(&r2, &batch(&["pb"], &["mb"])).await.unwrap();
    a.log_batch(&r2, &batch(&["pa"], &["mb", "mc"])).await.unwrap();
    b.log_batch(&r1, &batch(&["pb"], &["ma", "md"])).await.unwrap();
    // Again, now that both know them: nothing to write, and nothing lost.
    a.log_batch(&r1, &batch(&[], &["ma", "mb", "mc", "md"])).await.unwrap();
    b.log_batch(&r2, &batch(&[], &["ma", "mb", "mc", "md"])).await.unwrap();
    let want = (owned(&["pa", "pb"]), owned(&["ma", "mb", "mc", "md"]));
    assert_eq!(keys(a, &ws, "e").await, want);
    assert_eq!(keys(&b, &ws, "e").await, want);
    // A run of another experiment with the same keys gets them recorded for its experiment.
    let other = run(&b, &ws, "other").await;
    b.log_batch(&other, &batch(&["pa"], &["ma"])).await.unwrap();
    assert_eq!(keys(a, &ws, "other").await, (owned(&["pa"]), owned(&["ma"])));
    b.close().await;
}

async fn a_refused_batch_leaves_its_keys_unknown(db: &Db) {
    let store = &db.store;
    let ws = store.create_workspace("w", "").await.unwrap();
    let r = run(store, &ws, "e").await;
    store.log_batch(&r, &batch(&["p"], &["m"])).await.unwrap();
    // A changed param refuses the whole batch: the keys it would have recorded are not taken as
    // recorded, so they are written when a later batch brings them.
    let mut refused = batch(&[], &["later", "m"]);
    refused.params.push(KeyValue { key: "p".into(), value: "changed".into() });
    refused.params.push(KeyValue { key: "q".into(), value: "v".into() });
    store.log_batch(&r, &refused).await.unwrap_err();
    assert_eq!(keys(store, &ws, "e").await, (owned(&["p"]), owned(&["m"])));
    store.log_batch(&r, &batch(&["q"], &["later"])).await.unwrap();
    assert_eq!(keys(store, &ws, "e").await, (owned(&["p", "q"]), owned(&["later", "m"])));
}

async fn keys_come_back_in_a_workspace_made_again_with_the_same_names(db: &Db) {
    let store = &db.store;
    let ws = store.create_workspace("w", "").await.unwrap();
    let r = run(store, &ws, "e").await;
    store.log_batch(&r, &batch(&["p"], &["m"])).await.unwrap();
    // Deleting the workspace deletes its experiments and their keys; the same names again are a
    // new experiment, which must get its keys although this store saw them under the old one.
    store.delete_workspace("w").await.unwrap();
    let ws = store.create_workspace("w", "").await.unwrap();
    let r = run(store, &ws, "e").await;
    store.log_batch(&r, &batch(&["p"], &["m"])).await.unwrap();
    assert_eq!(keys(store, &ws, "e").await, (owned(&["p"]), owned(&["m"])));
    // A soft-deleted and restored experiment keeps its keys, and logging to it adds new ones.
    let (exp, _) = store.ensure_experiment(&ws, "e").await.unwrap();
    store.set_experiment_deleted(&ws, &exp, true).await.unwrap();
    store.set_experiment_deleted(&ws, &exp, false).await.unwrap();
    store.log_batch(&r, &batch(&[], &["m", "n"])).await.unwrap();
    assert_eq!(keys(store, &ws, "e").await, (owned(&["p"]), owned(&["m", "n"])));
}
