//! MLflow 3's logged models and a run's inputs and outputs, on SQLite and PostgreSQL.

use std::collections::BTreeMap;

use cairn_core::runs::KeyValue;
use cairn_core::runs::{LogBatch, LogMetric};
use cairn_core::Error;
use cairn_store::{ModelMetric, NewLoggedModel, RunDataset, RunModel, Store};

#[macro_use]
mod common;
use common::{run, Db};

on_both!(
    logged_models_keep_tags_params_and_status_and_delete_softly,
    runs_record_models_and_datasets_they_used_and_produced,
    model_metrics_land_with_the_runs_batch_once,
);

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue { key: k.into(), value: v.into() }
}

async fn setup(store: &Store) -> (cairn_core::api::Workspace, String, String) {
    let ws = store.create_workspace("w", "").await.unwrap();
    let run = run(store, &ws, "e", "r").await;
    let (exp, _) = store.ensure_experiment(&ws, "e").await.unwrap();
    (ws, exp, run)
}

async fn logged_models_keep_tags_params_and_status_and_delete_softly(store: &Store) {
    let (ws, exp, run) = setup(store).await;
    let new = |name: &'static str, tags: &'static [KeyValue]| NewLoggedModel {
        experiment_id: "",
        name,
        model_type: "",
        source_run_id: "",
        status: "LOGGED_MODEL_PENDING",
        tags,
        params: &[],
    };
    let tags = [kv("k", "v")];
    let params = [kv("alpha", "0.5")];
    let id = store
        .create_logged_model(
            &ws,
            NewLoggedModel {
                experiment_id: &exp,
                source_run_id: &run,
                params: &params,
                tags: &tags,
                ..new("wine_model", &[])
            },
        )
        .await
        .unwrap();
    assert!(id.starts_with("m-") && id.len() == 34, "{id}");
    let m = store.logged_model(&ws, &id).await.unwrap();
    assert_eq!(
        (m.name.as_str(), m.source_run_id.as_str(), m.status.as_str()),
        ("wine_model", run.as_str(), "LOGGED_MODEL_PENDING")
    );
    assert_eq!((m.tags["k"].as_str(), m.params["alpha"].as_str()), ("v", "0.5"));

    store.set_logged_model_status(&id, "LOGGED_MODEL_READY", "").await.unwrap();
    store.set_logged_model_values(&id, false, &[kv("k", "w"), kv("x", "y")]).await.unwrap();
    store.set_logged_model_values(&id, true, &[kv("beta", "2")]).await.unwrap();
    assert!(store.delete_logged_model_tag(&id, "x").await.unwrap());
    assert!(!store.delete_logged_model_tag(&id, "x").await.unwrap());
    let m = store.logged_model(&ws, &id).await.unwrap();
    assert_eq!(m.status, "LOGGED_MODEL_READY");
    assert_eq!(m.tags, BTreeMap::from([("k".to_string(), "w".to_string())]));
    assert_eq!(m.params.len(), 2);

    let other = store
        .create_logged_model(&ws, NewLoggedModel { experiment_id: &exp, ..new("b", &[]) })
        .await
        .unwrap();
    let listed: Vec<String> = store
        .logged_models(&ws, std::slice::from_ref(&exp))
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(listed, [other.clone(), id.clone()], "newest first");
    assert!(store.logged_models(&ws, &["nope".into()]).await.unwrap().is_empty());

    store.delete_logged_model(&other).await.unwrap();
    assert_eq!(store.logged_models(&ws, &[]).await.unwrap().len(), 1);
    assert!(store.logged_model(&ws, &other).await.unwrap().deleted_at.is_some());
    let elsewhere = store.create_workspace("w2", "").await.unwrap();
    assert!(matches!(store.logged_model(&elsewhere, &id).await.unwrap_err(), Error::NotFound { .. }));
}

async fn runs_record_models_and_datasets_they_used_and_produced(store: &Store) {
    let (ws, _exp, run) = setup(store).await;
    let out = RunModel { model_id: "m-1".into(), output: true, step: 3 };
    let inp = RunModel { model_id: "m-0".into(), output: false, step: 0 };
    store.link_run_models(&run, &[out.clone(), inp.clone()]).await.unwrap();
    store.link_run_models(&run, &[RunModel { step: 4, ..out.clone() }]).await.unwrap();
    let d = |digest: &str, source: &str, tags: &str| RunDataset {
        name: "wine".into(),
        digest: digest.into(),
        dataset_json: format!(r#"{{"name":"wine","digest":"{digest}","source":"{source}"}}"#),
        tags_json: tags.into(),
    };
    let train = r#"[{"key":"context","value":"train"}]"#;
    store.log_run_datasets(&run, &[d("abc", "a", "[]")]).await.unwrap();
    // Logged again (with other tags and content): the first logging stays, as in MLflow.
    store
        .log_run_datasets(&run, &[d("abc", "b", train), d("def", "a", "[]"), d("def", "c", train)])
        .await
        .unwrap();
    let io = store.run_inputs_outputs(&[run.clone(), "other".into()]).await.unwrap();
    assert_eq!(io.len(), 1);
    let io = &io[&run];
    assert_eq!(io.models, [inp, RunModel { step: 4, ..out }]);
    let seen: Vec<_> = io.datasets.iter().map(|d| (d.digest.as_str(), d.tags_json.as_str())).collect();
    assert_eq!(seen, [("abc", "[]"), ("def", "[]")]);
    assert!(io.datasets.iter().all(|d| d.dataset_json.contains(r#""source":"a""#)), "{:?}", io.datasets);

    // A dataset is its experiment's: another run of it logging the same name and digest gets
    // the first content with its own tags; a run of another experiment keeps what it sent.
    let sibling = common::run(store, &ws, "e", "r2").await;
    let stranger = common::run(store, &ws, "e2", "r3").await;
    for r in [&sibling, &stranger] {
        store.log_run_datasets(r, &[d("abc", "z", train)]).await.unwrap();
    }
    let io = store.run_inputs_outputs(&[sibling.clone(), stranger.clone()]).await.unwrap();
    let [mine] = &io[&sibling].datasets[..] else { panic!("{:?}", io[&sibling]) };
    assert!(mine.dataset_json.contains(r#""source":"a""#) && mine.tags_json == train, "{mine:?}");
    let [theirs] = &io[&stranger].datasets[..] else { panic!("{:?}", io[&stranger]) };
    assert!(theirs.dataset_json.contains(r#""source":"z""#), "{theirs:?}");
}

/// A batch's metrics linked to a logged model are stored with the run's own, in one
/// transaction; a retried point is not a second one; NaN survives (SQLite stores it as NULL).
async fn model_metrics_land_with_the_runs_batch_once(store: &Store) {
    let (ws, exp, run) = setup(store).await;
    let new = NewLoggedModel {
        experiment_id: &exp,
        name: "m",
        model_type: "",
        source_run_id: &run,
        status: "LOGGED_MODEL_READY",
        tags: &[],
        params: &[],
    };
    let id = store.create_logged_model(&ws, new).await.unwrap();
    let point = |key: &str, value: f64, dataset: &str| ModelMetric {
        model_id: id.clone(),
        key: key.into(),
        value,
        timestamp: 10,
        step: 1,
        run_id: run.clone(),
        dataset_name: dataset.into(),
        dataset_digest: String::new(),
    };
    let batch = LogBatch {
        metrics: vec![
            LogMetric { key: "rmse".into(), value: 0.5, step: Some(1), timestamp: Some(10) },
            LogMetric { key: "loss".into(), value: f64::NAN, step: Some(1), timestamp: Some(10) },
        ],
        ..Default::default()
    };
    let linked = [point("rmse", 0.5, "holdout"), point("loss", f64::NAN, "")];
    for _ in 0..2 {
        store.log_batch_with_model_metrics(&run, &batch, &linked).await.unwrap();
    }
    let m = store.logged_model(&ws, &id).await.unwrap();
    assert_eq!(m.metrics.len(), 2, "{:?}", m.metrics);
    assert_eq!((m.metrics[0].key.as_str(), m.metrics[0].value.is_nan()), ("loss", true));
    assert_eq!(m.metrics[1], linked[0]);
    assert_eq!(store.logged_models(&ws, std::slice::from_ref(&exp)).await.unwrap()[0].metrics.len(), 2);

    // A batch that fails (a param changing value) writes neither the run's points nor the model's.
    let bad = LogBatch {
        metrics: vec![LogMetric { key: "mae".into(), value: 1.0, step: Some(2), timestamp: Some(11) }],
        params: vec![kv("alpha", "1")],
        ..Default::default()
    };
    store
        .log_batch(&run, &LogBatch { params: vec![kv("alpha", "0.5")], ..Default::default() })
        .await
        .unwrap();
    let err = store.log_batch_with_model_metrics(&run, &bad, &[point("mae", 1.0, "")]).await;
    assert!(matches!(err, Err(Error::Conflict(_)) | Err(Error::Invalid(_))), "{err:?}");
    assert_eq!(store.logged_model(&ws, &id).await.unwrap().metrics.len(), 2);
}
