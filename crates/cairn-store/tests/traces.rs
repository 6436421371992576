//! MLflow 3's traces (info, tags, request metadata), on SQLite and PostgreSQL.

use cairn_core::Error;
use cairn_store::{Store, TraceRecord};

#[macro_use]
mod common;
use common::Db;

on_both!(a_trace_logged_again_keeps_what_it_had, trace_ids_belong_to_their_workspace);

fn trace(id: &str, exp: &str, at: i64) -> TraceRecord {
    TraceRecord {
        id: id.into(),
        experiment_id: exp.into(),
        request_time: at,
        execution_duration: Some(5),
        state: "OK".into(),
        request_preview: Some("{\"x\": 1}".into()),
        tags: [("mlflow.traceName".to_string(), "predict".to_string())].into(),
        metadata: [("mlflow.sourceRun".to_string(), "r1".to_string())].into(),
        ..Default::default()
    }
}

async fn a_trace_logged_again_keeps_what_it_had(store: &Store) {
    let ws = store.create_workspace("w", "").await.unwrap();
    let (exp, _) = store.ensure_experiment(&ws, "e").await.unwrap();
    store.put_trace(&ws, &trace("tr-1", &exp, 10)).await.unwrap();
    store.put_trace(&ws, &trace("tr-2", &exp, 20)).await.unwrap();
    store.set_trace_tag(&ws, "tr-1", "team", "a").await.unwrap();
    let mut again = trace("tr-1", &exp, 10);
    again.state = "ERROR".into();
    again.execution_duration = None;
    again.tags = [("other".to_string(), "b".to_string())].into();
    store.put_trace(&ws, &again).await.unwrap();
    let t = store.trace(&ws, "tr-1").await.unwrap();
    assert_eq!((t.state.as_str(), t.execution_duration), ("ERROR", None));
    assert_eq!(t.tags.keys().collect::<Vec<_>>(), ["mlflow.traceName", "other", "team"]);
    assert_eq!(t.metadata["mlflow.sourceRun"], "r1");
    assert_eq!(t.request_preview.as_deref(), Some("{\"x\": 1}"));
    assert_eq!(t.client_request_id, None);
    let all = store.traces(&ws, None, std::slice::from_ref(&exp)).await.unwrap();
    assert_eq!(all.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["tr-2", "tr-1"]);
    let some = store.traces(&ws, Some(&["tr-1".into(), "tr-9".into()]), &[]).await.unwrap();
    assert_eq!(some.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["tr-1"]);
    // Both were logged in run r1 (their metadata says so).
    let of_run = store.traces_of_run(&ws, "r1", 1).await.unwrap();
    assert_eq!(of_run.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["tr-2"]);
    assert!(store.traces_of_run(&ws, "r2", 10).await.unwrap().is_empty());
    // Linked to r2 (twice: the second is no change), tr-1 is r2's too.
    store.link_traces_to_run(&ws, &["tr-1".into()], "r2").await.unwrap();
    store.link_traces_to_run(&ws, &["tr-1".into()], "r2").await.unwrap();
    let of_r2 = store.traces_of_run(&ws, "r2", 10).await.unwrap();
    assert_eq!(
        of_r2.iter().map(|t| (t.id.as_str(), t.linked_runs.clone())).collect::<Vec<_>>(),
        [("tr-1", vec!["r2".to_string()])]
    );
    assert!(store.delete_trace_tag(&ws, "tr-1", "team").await.unwrap());
    assert!(!store.delete_trace_tag(&ws, "tr-1", "team").await.unwrap());
    assert_eq!(store.delete_traces(&ws, &["tr-1".into(), "tr-9".into()]).await.unwrap(), 1);
    assert!(matches!(store.trace(&ws, "tr-1").await, Err(Error::NotFound { .. })));
    assert_eq!(store.traces(&ws, None, &[]).await.unwrap().len(), 1);
}

async fn trace_ids_belong_to_their_workspace(store: &Store) {
    let ws = store.create_workspace("w", "").await.unwrap();
    let (exp, _) = store.ensure_experiment(&ws, "e").await.unwrap();
    store.put_trace(&ws, &trace("tr-2", &exp, 20)).await.unwrap();
    let other = store.create_workspace("v", "").await.unwrap();
    assert!(store.trace(&other, "tr-2").await.is_err());
    let (exp2, _) = store.ensure_experiment(&other, "e").await.unwrap();
    store.put_trace(&other, &trace("tr-2", &exp2, 1)).await.unwrap();
    assert_eq!(store.trace(&ws, "tr-2").await.unwrap().request_time, 20);
    assert_eq!(store.delete_traces(&other, &["tr-2".into()]).await.unwrap(), 1);
    assert_eq!(store.trace(&ws, "tr-2").await.unwrap().experiment_id, exp);
    // Deleting the workspace takes its traces, tags and metadata with it.
    store.delete_workspace("w").await.unwrap();
    assert!(store.traces(&ws, None, &[]).await.unwrap().is_empty());
    assert_eq!(store.traces(&other, None, &[]).await.unwrap().len(), 0);
}
