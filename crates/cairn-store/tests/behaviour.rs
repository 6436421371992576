//! The store's behaviour suite: every test runs against SQLite and against a fresh PostgreSQL
//! database (`CAIRN_TEST_POSTGRES`, default the local server with trust auth).

use cairn_core::api::{CreateDatastore, DatastoreKind, Role};
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
    assert!(store.list_tokens().await.unwrap()[0].last_used_at.is_some());
    store.delete_token("ci").await.unwrap();
    assert!(store.token_by_lookup("0123456789abcdef").await.unwrap().is_none());
    assert!(matches!(store.delete_token("ci").await.unwrap_err(), Error::NotFound { .. }));
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
