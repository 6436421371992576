//! The studio's read queries (`crates/cairn-store/src/studio.rs`), on SQLite and PostgreSQL:
//! experiment summaries, the runs table's column keys, live run statuses and the models list.

use std::collections::BTreeMap;

use cairn_core::models::NewModelVersion;
use cairn_core::runs::{KeyValue, LogBatch, LogMetric, RunStatus};
use cairn_store::Store;

#[macro_use]
mod common;
use common::{run, Db};

on_both!(
    experiment_summaries_count_live_runs_of_live_experiments,
    column_keys_are_every_key_ever_logged_in_the_experiment,
    statuses_answer_only_for_runs_of_the_workspace,
    model_summaries_page_models_with_counts_latest_versions_tags_and_aliases,
    runtime_tables_read_their_columns_by_step_up_to_the_row_limit,
);

async fn log(store: &Store, run: &str, params: &[&str], metrics: &[&str]) {
    let batch = LogBatch {
        params: params.iter().map(|k| KeyValue { key: k.to_string(), value: "v".into() }).collect(),
        metrics: metrics
            .iter()
            .map(|k| LogMetric { key: k.to_string(), value: 1.0, step: Some(0), timestamp: Some(1) })
            .collect(),
        tags: Vec::new(),
    };
    store.log_batch(run, &batch).await.unwrap();
}

async fn experiment_summaries_count_live_runs_of_live_experiments(store: &Store) {
    let ws = store.create_workspace("w", "").await.unwrap();
    let other = store.create_workspace("other", "").await.unwrap();
    let a1 = run(store, &ws, "a", "a1").await;
    run(store, &ws, "a", "a2").await;
    let gone = run(store, &ws, "a", "a3").await;
    store.set_run_deleted(&gone, true).await.unwrap();
    run(store, &ws, "b", "b1").await;
    run(store, &other, "a", "elsewhere").await;
    let (empty, _) = store.ensure_experiment(&ws, "empty").await.unwrap();
    let (dropped, _) = store.ensure_experiment(&ws, "dropped").await.unwrap();
    store.set_experiment_deleted(&ws, &dropped, true).await.unwrap();

    let s = store.experiment_summaries(&ws).await.unwrap();
    let seen: Vec<(&str, i64)> = s.iter().map(|e| (e.name.as_str(), e.runs)).collect();
    assert_eq!(seen, [("a", 2), ("b", 1), ("empty", 0)], "by name, deleted runs and experiments left out");
    assert!(s[0].last_run_at.is_some() && s[2].last_run_at.is_none());
    let created = store.run(&ws, &a1).await.unwrap().created_at;
    assert!(s[0].last_run_at.unwrap() >= created);
    assert!(!empty.is_empty());
}

async fn column_keys_are_every_key_ever_logged_in_the_experiment(store: &Store) {
    let ws = store.create_workspace("w", "").await.unwrap();
    // The oldest run alone has a key; 250 newer runs (more than any sample of the newest) do not.
    let oldest = run(store, &ws, "e", "oldest").await;
    log(store, &oldest, &["only_old"], &["old metric"]).await;
    for i in 0..250 {
        let r = run(store, &ws, "e", &format!("r{i}")).await;
        log(store, &r, &["alpha", "beta"], &["rmse"]).await;
        if i == 0 {
            // A key logged again, by another batch and as a later step, stays one key.
            log(store, &r, &[], &["rmse"]).await;
        }
    }
    let b = run(store, &ws, "other", "b").await;
    log(store, &b, &["gamma"], &["acc"]).await;
    let elsewhere = store.create_workspace("elsewhere", "").await.unwrap();
    let x = run(store, &elsewhere, "e", "x").await;
    log(store, &x, &["foreign"], &["foreign"]).await;

    let keys = store.run_column_keys(&ws, Some("e")).await.unwrap();
    assert_eq!(keys.params, ["alpha", "beta", "only_old"]);
    assert_eq!(keys.metrics, ["old metric", "rmse"]);
    let all = store.run_column_keys(&ws, None).await.unwrap();
    assert_eq!(all.params, ["alpha", "beta", "gamma", "only_old"]);
    assert_eq!(all.metrics, ["acc", "old metric", "rmse"]);
    let none = store.run_column_keys(&ws, Some("no such experiment")).await.unwrap();
    assert!(none.params.is_empty() && none.metrics.is_empty());

    // A refused batch (a param changed) records no key either.
    let batch = LogBatch {
        params: vec![KeyValue { key: "only_old".into(), value: "changed".into() }],
        metrics: vec![LogMetric { key: "never".into(), value: 1.0, step: None, timestamp: None }],
        tags: Vec::new(),
    };
    store.log_batch(&oldest, &batch).await.unwrap_err();
    assert_eq!(store.run_column_keys(&ws, Some("e")).await.unwrap().metrics, ["old metric", "rmse"]);

    // Many keys in one batch (more than one statement's worth) are all recorded.
    let wide = run(store, &ws, "wide", "w").await;
    let names: Vec<String> = (0..600).map(|i| format!("k{i:03}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    log(store, &wide, &refs, &refs).await;
    let keys = store.run_column_keys(&ws, Some("wide")).await.unwrap();
    assert_eq!((keys.params.len(), keys.metrics.len()), (500, 500), "capped at MAX_COLUMN_KEYS");
    assert_eq!((keys.params[0].as_str(), keys.params[499].as_str()), ("k000", "k499"));
}

async fn statuses_answer_only_for_runs_of_the_workspace(store: &Store) {
    let ws = store.create_workspace("w", "").await.unwrap();
    let other = store.create_workspace("other", "").await.unwrap();
    let a = run(store, &ws, "e", "a").await;
    let b = run(store, &ws, "e", "b").await;
    let foreign = run(store, &other, "e", "x").await;
    assert!(store.transition_run(&b, &[RunStatus::Running], RunStatus::Completed, None).await.unwrap());
    let ids = vec![a.clone(), b.clone(), foreign, "nope".to_string()];
    let mut rows = store.run_statuses(&ws, &ids).await.unwrap();
    rows.sort_by(|x, y| x.id.cmp(&y.id));
    let mut expected = vec![(a, RunStatus::Running, false), (b, RunStatus::Completed, true)];
    expected.sort_by(|x, y| x.0.cmp(&y.0));
    let seen: Vec<(String, RunStatus, bool)> =
        rows.iter().map(|r| (r.id.clone(), r.status, r.ended_at.is_some())).collect();
    assert_eq!(seen, expected);
    assert!(rows.iter().all(|r| r.started_at.is_some()));
    assert!(store.run_statuses(&ws, &[]).await.unwrap().is_empty());
}

async fn model_summaries_page_models_with_counts_latest_versions_tags_and_aliases(store: &Store) {
    let ws = store.create_workspace("w", "").await.unwrap();
    let version = |name: &str, framework: Option<&str>| NewModelVersion {
        name: name.into(),
        framework: framework.map(str::to_string),
        framework_version: framework.map(|_| "1.5".to_string()),
        ..Default::default()
    };
    for f in [Some("sklearn"), None, Some("xgboost")] {
        store.create_model_version(&ws, &version("wine", f), "me", &[]).await.unwrap();
    }
    store.set_model_alias(&ws, "wine", "champion", 2).await.unwrap();
    store.set_model_alias(&ws, "wine", "latest-good", 3).await.unwrap();
    let tags = BTreeMap::from([("team".to_string(), "<b>ml</b>".to_string())]);
    store.create_model(&ws, "empty", "", &tags, "me").await.unwrap();
    store.create_model_version(&ws, &version("iris", Some("sklearn")), "me", &[]).await.unwrap();
    store.delete_model_version(&ws, "iris", 1).await.unwrap();
    store.create_model_version(&ws, &version("iris", None), "me", &[]).await.unwrap();
    let other = store.create_workspace("other", "").await.unwrap();
    store.create_model_version(&other, &version("elsewhere", None), "me", &[]).await.unwrap();

    let (all, more) = store.model_summaries(&ws, 0, 50).await.unwrap();
    assert!(!more);
    // Most recently updated first: the order of list_models.
    let listed = store.list_models(&ws, &Default::default(), None, Some(50)).await.unwrap();
    let names: Vec<&str> = all.iter().map(|m| m.model.name.as_str()).collect();
    assert_eq!(names, listed.items.iter().map(|m| m.name.as_str()).collect::<Vec<_>>());
    assert_eq!(names.len(), 3);
    let by_name: BTreeMap<&str, &cairn_store::ModelSummary> =
        all.iter().map(|m| (m.model.name.as_str(), m)).collect();
    let wine = by_name["wine"];
    assert_eq!((wine.versions, wine.model.latest_version), (3, Some(3)));
    assert_eq!(
        (wine.framework.as_deref(), wine.framework_version.as_deref()),
        (Some("xgboost"), Some("1.5"))
    );
    assert_eq!(wine.model.aliases, BTreeMap::from([("champion".into(), 2), ("latest-good".into(), 3)]));
    let iris = by_name["iris"];
    assert_eq!((iris.versions, iris.model.latest_version, iris.framework.as_deref()), (1, Some(2), None));
    let empty = by_name["empty"];
    assert_eq!((empty.versions, empty.model.latest_version), (0, None));
    assert_eq!(empty.model.tags, tags);
    assert!(empty.model.aliases.is_empty() && wine.model.tags.is_empty());
    // The same as the registry's own view of each model.
    for m in &all {
        let full = store.model(&ws, &m.model.name).await.unwrap();
        assert_eq!(
            (&full.tags, &full.aliases, full.latest_version),
            (&m.model.tags, &m.model.aliases, m.model.latest_version)
        );
    }

    // Pages.
    let (first, more) = store.model_summaries(&ws, 0, 2).await.unwrap();
    assert!(more);
    let (rest, more) = store.model_summaries(&ws, 2, 2).await.unwrap();
    assert!(!more);
    let paged: Vec<&str> = first.iter().chain(&rest).map(|m| m.model.name.as_str()).collect();
    assert_eq!(paged, names);
    let (none, more) = store.model_summaries(&ws, 10, 2).await.unwrap();
    assert!(none.is_empty() && !more);
}

async fn runtime_tables_read_their_columns_by_step_up_to_the_row_limit(store: &Store) {
    let ws = store.create_workspace("w", "").await.unwrap();
    let id = run(store, &ws, "e", "r").await;
    let point = |key: &str, value: f64, step: i64, ts: i64| LogMetric {
        key: key.into(),
        value,
        step: Some(step),
        timestamp: Some(ts),
    };
    let mut metrics: Vec<LogMetric> = (0..5).map(|i| point("t.b", i as f64, i, 1)).collect();
    metrics.push(point("t.a", 10.0, 1, 1));
    metrics.push(point("t.a", 11.0, 1, 2)); // the later value at a step wins
    metrics.push(point("t.a", f64::NAN, 3, 1));
    metrics.push(point("tt.x", 1.0, 0, 1)); // shares letters, not the prefix
    metrics.push(point("t", 1.0, 0, 1));
    store.log_batch(&id, &LogBatch { metrics, params: Vec::new(), tags: Vec::new() }).await.unwrap();

    let (columns, rows, total) = store.run_metric_table(&id, "t", 3).await.unwrap();
    assert_eq!(columns, ["a", "b"]);
    assert_eq!(total, 5);
    assert_eq!(rows.len(), 3, "the row limit");
    assert_eq!(rows[0], [None, Some(0.0)]);
    assert_eq!(rows[1], [Some(11.0), Some(1.0)]);
    let (_, all, _) = store.run_metric_table(&id, "t", 100).await.unwrap();
    assert!(all[3][0].unwrap().is_nan() && all[3][1] == Some(3.0));
    assert_eq!(store.run_metric_table(&id, "none", 10).await.unwrap(), (Vec::new(), Vec::new(), 0));
}
