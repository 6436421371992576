//! The model registry's store behaviour, on SQLite and PostgreSQL.

use std::collections::BTreeMap;

use cairn_core::api::Workspace;
use cairn_core::models::{ModelFile, ModelFilter, NewModelVersion, VersionRef};
use cairn_core::Error;
use cairn_store::Store;

#[macro_use]
mod common;
use common::Db;

on_both!(
    versions_are_numbered_per_model_and_keep_their_manifest_and_metadata,
    concurrent_registrations_of_one_name_get_distinct_versions,
    aliases_move_resolve_and_vanish_with_their_version,
    a_used_version_cannot_be_deleted_and_numbers_are_never_reused,
    models_are_listed_newest_first_with_filters_and_can_be_renamed,
    model_and_version_tags_and_descriptions_are_updated,
);

fn files(names: &[(&str, char, i64)]) -> Vec<ModelFile> {
    names
        .iter()
        .map(|(p, c, s)| ModelFile { path: p.to_string(), sha256: c.to_string().repeat(64), size: *s })
        .collect()
}

fn new_version(name: &str) -> NewModelVersion {
    NewModelVersion { name: name.into(), ..Default::default() }
}

async fn ws(store: &Store) -> Workspace {
    store.create_workspace("w", "").await.unwrap()
}

async fn versions_are_numbered_per_model_and_keep_their_manifest_and_metadata(store: &Store) {
    let ws = ws(store).await;
    let mut req = new_version("wine");
    req.description = "first".into();
    req.tags = BTreeMap::from([("stage".into(), "dev".into())]);
    req.properties = BTreeMap::from([("accuracy".into(), "0.93".into())]);
    req.framework = Some("sklearn".into());
    req.framework_version = Some("1.5.2".into());
    req.run_id = Some("run1".into());
    req.source = Some("runs:/run1/outputs/model".into());
    let v1 = store
        .create_model_version(&ws, &req, "alice", &files(&[("model.pkl", 'a', 10), ("MLmodel", 'b', 5)]))
        .await
        .unwrap();
    assert_eq!((v1.id.as_str(), v1.version, v1.size), ("wine:1", 1, 15));
    assert_eq!((v1.status.as_str(), v1.stage.as_str()), ("READY", "None"));
    assert_eq!(v1.framework.as_deref(), Some("sklearn"));
    assert_eq!(v1.properties["accuracy"], "0.93");
    assert_eq!(v1.tags["stage"], "dev");
    assert_eq!((v1.created_by.as_str(), v1.run_id.as_deref()), ("alice", Some("run1")));
    assert_eq!(v1.source, "runs:/run1/outputs/model");
    let v2 = store.create_model_version(&ws, &new_version("wine"), "bob", &[]).await.unwrap();
    assert_eq!((v2.version, v2.source.as_str()), (2, "models:/wine/2"));
    let other = store.create_model_version(&ws, &new_version("iris"), "bob", &[]).await.unwrap();
    assert_eq!(other.version, 1);

    let manifest = store.model_version_files(&ws, "wine", 1).await.unwrap();
    assert_eq!(manifest.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["MLmodel", "model.pkl"]);
    let model = store.model(&ws, "wine").await.unwrap();
    assert_eq!((model.latest_version, model.created_by.as_str()), (Some(2), "alice"));
    assert_eq!(store.model_version(&ws, "wine", &VersionRef::Latest).await.unwrap().version, 2);
    let listed = store.list_model_versions(&ws, "wine").await.unwrap();
    assert_eq!(listed.iter().map(|v| v.version).collect::<Vec<_>>(), [2, 1]);

    let dup = files(&[("a", 'a', 1), ("a", 'b', 1)]);
    let err = store.create_model_version(&ws, &new_version("wine"), "bob", &dup).await.unwrap_err();
    assert!(matches!(err, Error::Invalid(ref m) if m.contains("twice")), "{err:?}");
    // Nothing of the refused registration is visible.
    assert_eq!(store.model(&ws, "wine").await.unwrap().latest_version, Some(2));

    let err = store.model_version(&ws, "wine", &VersionRef::Number(9)).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }) && err.to_string().contains("latest is 2"), "{err}");
    let err = store.model_version(&ws, "ghost", &VersionRef::Number(1)).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { kind: "model", .. }), "{err:?}");
    assert!(matches!(store.list_model_versions(&ws, "ghost").await.unwrap_err(), Error::NotFound { .. }));
}

async fn concurrent_registrations_of_one_name_get_distinct_versions(store: &Store) {
    let ws = ws(store).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let (store, ws) = (store.clone(), ws.clone());
        tasks.spawn(async move {
            let f = files(&[("model.pkl", 'a', i)]);
            store.create_model_version(&ws, &new_version("race"), "t", &f).await.unwrap().version
        });
    }
    let mut got = Vec::new();
    while let Some(v) = tasks.join_next().await {
        got.push(v.unwrap());
    }
    got.sort();
    assert_eq!(got, (1..=8).collect::<Vec<i64>>());
    assert_eq!(store.list_model_versions(&ws, "race").await.unwrap().len(), 8);
    assert_eq!(store.list_models(&ws, &ModelFilter::default(), None, None).await.unwrap().items.len(), 1);
}

async fn aliases_move_resolve_and_vanish_with_their_version(store: &Store) {
    let ws = ws(store).await;
    for _ in 0..3 {
        store.create_model_version(&ws, &new_version("wine"), "a", &[]).await.unwrap();
    }
    store.set_model_alias(&ws, "wine", "production", 1).await.unwrap();
    let prod = VersionRef::Alias("production".into());
    assert_eq!(store.model_version(&ws, "wine", &prod).await.unwrap().version, 1);
    let moved = store.set_model_alias(&ws, "wine", "production", 3).await.unwrap();
    assert_eq!(moved.aliases, ["production"]);
    assert_eq!(store.model_version(&ws, "wine", &prod).await.unwrap().version, 3);
    assert!(store.model_version(&ws, "wine", &VersionRef::Number(1)).await.unwrap().aliases.is_empty());
    assert_eq!(store.model(&ws, "wine").await.unwrap().aliases["production"], 3);

    let err = store.set_model_alias(&ws, "wine", "x", 7).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    let err = store.model_version(&ws, "wine", &VersionRef::Alias("nope".into())).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { kind: "model alias", .. }), "{err:?}");

    store.delete_model_version(&ws, "wine", 3).await.unwrap();
    assert!(store.model(&ws, "wine").await.unwrap().aliases.is_empty());
    store.set_model_alias(&ws, "wine", "staging", 2).await.unwrap();
    store.delete_model_alias(&ws, "wine", "staging").await.unwrap();
    assert!(matches!(
        store.delete_model_alias(&ws, "wine", "staging").await.unwrap_err(),
        Error::NotFound { .. }
    ));
}

async fn a_used_version_cannot_be_deleted_and_numbers_are_never_reused(store: &Store) {
    let ws = ws(store).await;
    store.create_model_version(&ws, &new_version("wine"), "a", &[]).await.unwrap();
    store.create_model_version(&ws, &new_version("wine"), "a", &[]).await.unwrap();
    let updated = store.model(&ws, "wine").await.unwrap().updated_at;
    std::thread::sleep(std::time::Duration::from_millis(5));
    store.add_model_version_use(&ws, "wine", 2, "deployment", "blue").await.unwrap();
    store.add_model_version_use(&ws, "wine", 2, "deployment", "blue").await.unwrap();
    assert_eq!(
        store.model(&ws, "wine").await.unwrap().updated_at,
        updated,
        "a use is not a change to the model"
    );
    let err = store.delete_model_version(&ws, "wine", 2).await.unwrap_err();
    assert!(matches!(err, Error::Conflict(ref m) if m.contains("deployment \"blue\"")), "{err:?}");
    let err = store.delete_model(&ws, "wine").await.unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
    assert_eq!(store.list_model_versions(&ws, "wine").await.unwrap().len(), 2);

    assert!(store.remove_model_version_use(&ws, "wine", 2, "deployment", "blue").await.unwrap());
    assert!(!store.remove_model_version_use(&ws, "wine", 2, "deployment", "blue").await.unwrap());
    assert_eq!(store.model(&ws, "wine").await.unwrap().updated_at, updated);
    store.delete_model_version(&ws, "wine", 2).await.unwrap();
    let err = store.delete_model_version(&ws, "wine", 2).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    let v3 = store.create_model_version(&ws, &new_version("wine"), "a", &[]).await.unwrap();
    assert_eq!(v3.version, 3);
    store.delete_model(&ws, "wine").await.unwrap();
    assert!(matches!(store.model(&ws, "wine").await.unwrap_err(), Error::NotFound { .. }));
    // A model registered again after deletion starts over.
    assert_eq!(store.create_model_version(&ws, &new_version("wine"), "a", &[]).await.unwrap().version, 1);
}

async fn models_are_listed_newest_first_with_filters_and_can_be_renamed(store: &Store) {
    let ws = ws(store).await;
    let mut a = new_version("wine-a");
    a.framework = Some("sklearn".into());
    a.tags = BTreeMap::from([("team".into(), "red".into())]);
    store.create_model_version(&ws, &a, "u", &[]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let mut b = new_version("wine_b");
    b.framework = Some("pytorch".into());
    store.create_model_version(&ws, &b, "u", &[]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let tags = BTreeMap::from([("team".into(), "blue".into())]);
    store.create_model(&ws, "iris", "no versions yet", &tags, "u").await.unwrap();
    let err = store.create_model(&ws, "iris", "", &BTreeMap::new(), "u").await.unwrap_err();
    assert!(matches!(err, Error::Conflict(ref m) if m.contains("already exists")), "{err:?}");

    let names = |f: ModelFilter| async move {
        let page = store.list_models(&ws_of(store).await, &f, None, None).await.unwrap();
        page.items.into_iter().map(|m| m.name).collect::<Vec<_>>()
    };
    assert_eq!(names(ModelFilter::default()).await, ["iris", "wine_b", "wine-a"]);
    let f = ModelFilter { name_contains: Some("WINE".into()), ..Default::default() };
    assert_eq!(names(f).await, ["wine_b", "wine-a"]);
    // `_` is not a wildcard.
    let f = ModelFilter { name_contains: Some("e_".into()), ..Default::default() };
    assert_eq!(names(f).await, ["wine_b"]);
    let f = ModelFilter { framework: Some("sklearn".into()), ..Default::default() };
    assert_eq!(names(f).await, ["wine-a"]);
    let f = ModelFilter { tag: Some(("team".into(), "red".into())), ..Default::default() };
    assert_eq!(names(f).await, ["wine-a"]);
    let f = ModelFilter { tag: Some(("team".into(), "blue".into())), ..Default::default() };
    assert_eq!(names(f).await, ["iris"]);

    let p1 = store.list_models(&ws, &ModelFilter::default(), None, Some(2)).await.unwrap();
    assert_eq!(p1.items.len(), 2);
    let p2 = store
        .list_models(&ws, &ModelFilter::default(), p1.next_page_token.as_deref(), Some(2))
        .await
        .unwrap();
    assert_eq!((p2.items.len(), p2.next_page_token.as_deref()), (1, None));

    let renamed = store.rename_model(&ws, "wine-a", "wine-c").await.unwrap();
    assert_eq!((renamed.name.as_str(), renamed.latest_version), ("wine-c", Some(1)));
    assert_eq!(store.model_version(&ws, "wine-c", &VersionRef::Number(1)).await.unwrap().id, "wine-c:1");
    assert!(matches!(store.rename_model(&ws, "wine-c", "iris").await.unwrap_err(), Error::Conflict(_)));
    assert!(matches!(store.rename_model(&ws, "ghost", "x").await.unwrap_err(), Error::NotFound { .. }));
}

async fn ws_of(store: &Store) -> Workspace {
    store.workspace("w").await.unwrap()
}

async fn model_and_version_tags_and_descriptions_are_updated(store: &Store) {
    let ws = ws(store).await;
    let mut req = new_version("wine");
    req.tags = BTreeMap::from([("a".into(), "1".into()), ("b".into(), "2".into())]);
    store.create_model_version(&ws, &req, "u", &[]).await.unwrap();
    let set = BTreeMap::from([("a".into(), "10".into()), ("c".into(), "3".into())]);
    let v = store.update_model_version(&ws, "wine", 1, Some("better"), &set, &["b".into()]).await.unwrap();
    assert_eq!(v.description, "better");
    assert_eq!(v.tags, BTreeMap::from([("a".into(), "10".into()), ("c".into(), "3".into())]));
    let v = store.update_model_version(&ws, "wine", 1, None, &BTreeMap::new(), &[]).await.unwrap();
    assert_eq!(v.description, "better");
    let m = store.update_model(&ws, "wine", Some("wine quality"), &set, &[]).await.unwrap();
    assert_eq!((m.description.as_str(), m.tags.len()), ("wine quality", 2));
    let m = store.update_model(&ws, "wine", None, &BTreeMap::new(), &["a".into()]).await.unwrap();
    assert_eq!(m.tags.keys().collect::<Vec<_>>(), ["c"]);
    let v = store.set_model_version_stage(&ws, "wine", 1, "Production", true).await.unwrap();
    assert_eq!(v.stage, "Production");
    store.create_model_version(&ws, &new_version("wine"), "u", &[]).await.unwrap();
    store.set_model_version_stage(&ws, "wine", 2, "Production", true).await.unwrap();
    assert_eq!(store.model_version(&ws, "wine", &VersionRef::Number(1)).await.unwrap().stage, "Archived");
    let err = store.update_model_version(&ws, "wine", 5, None, &BTreeMap::new(), &[]).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    let by_run = store.search_model_versions(&ws, Some("wine"), None).await.unwrap();
    assert_eq!(by_run.len(), 2);
}
