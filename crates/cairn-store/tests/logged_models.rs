//! MLflow 3's logged models and a run's inputs and outputs, on SQLite and PostgreSQL.

use std::collections::BTreeMap;

use cairn_core::runs::KeyValue;
use cairn_core::Error;
use cairn_store::{NewLoggedModel, RunDataset, RunModel, Store};

#[macro_use]
mod common;
use common::{run, Db};

on_both!(
    logged_models_keep_tags_params_and_status_and_delete_softly,
    runs_record_models_and_datasets_they_used_and_produced,
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
    let (_ws, _exp, run) = setup(store).await;
    let out = RunModel { model_id: "m-1".into(), output: true, step: 3 };
    let inp = RunModel { model_id: "m-0".into(), output: false, step: 0 };
    store.link_run_models(&run, &[out.clone(), inp.clone()]).await.unwrap();
    store.link_run_models(&run, &[RunModel { step: 4, ..out.clone() }]).await.unwrap();
    let d = |digest: &str, tags: &str| RunDataset {
        name: "wine".into(),
        digest: digest.into(),
        dataset_json: format!(r#"{{"name":"wine","digest":"{digest}"}}"#),
        tags_json: tags.into(),
    };
    store.log_run_datasets(&run, &[d("abc", "[]")]).await.unwrap();
    store
        .log_run_datasets(&run, &[d("abc", r#"[{"key":"context","value":"train"}]"#), d("def", "[]")])
        .await
        .unwrap();
    let io = store.run_inputs_outputs(&[run.clone(), "other".into()]).await.unwrap();
    assert_eq!(io.len(), 1);
    let io = &io[&run];
    assert_eq!(io.models, [inp, RunModel { step: 4, ..out }]);
    assert_eq!(io.datasets.iter().map(|d| d.digest.as_str()).collect::<Vec<_>>(), ["abc", "def"]);
    assert!(io.datasets[0].tags_json.contains("train"));
}
