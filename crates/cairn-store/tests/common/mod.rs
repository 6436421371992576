//! The harness of the store suites: a store on SQLite and on a fresh PostgreSQL database
//! (`CAIRN_TEST_POSTGRES`, default the local server with trust auth); `on_both!`, which runs
//! each listed test against both (`on_both_db!` for tests that need the whole `Db`); and the
//! fixtures several suites share.

use std::collections::BTreeMap;

use cairn_core::api::Workspace;
use cairn_core::runs::RunStatus;
use cairn_store::{NewRun, Store};
use sqlx::Connection;

pub struct Db {
    pub store: Store,
    /// The database's URL, for a second `Store` on it (as a second server would open).
    #[allow(dead_code)]
    pub url: String,
    _tmp: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl Db {
    pub async fn sqlite() -> Db {
        let tmp = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", tmp.path().join("cairn.db").display());
        let store = Store::open(&url).await.unwrap();
        Db { store, url, _tmp: Some(tmp), pg: None }
    }

    pub async fn postgres() -> Db {
        let admin = std::env::var("CAIRN_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        // The clock alone is not unique: two tests of one process can read the same instant.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name = format!(
            "cairn_store_test_{}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
                % 1_000_000_000_000,
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!("PostgreSQL must be reachable at {admin} (scripts/setup.sh starts it): {e}")
        });
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
        let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
        let store = Store::open(&url).await.unwrap();
        Db { store, url, _tmp: None, pg: Some((admin, name)) }
    }

    pub async fn cleanup(self) {
        self.store.close().await;
        if let Some((admin, name)) = self.pg {
            let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
}

#[allow(unused_macros)]
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { let db = super::Db::sqlite().await; super::$name(&db.store).await; db.cleanup().await; } )* }
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { let db = super::Db::postgres().await; super::$name(&db.store).await; db.cleanup().await; } )* }
    };
}

/// Like `on_both!`, but the test gets the whole `Db` (to open a second store on its URL).
#[allow(unused_macros)]
macro_rules! on_both_db {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { let db = super::Db::sqlite().await; super::$name(&db).await; db.cleanup().await; } )* }
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { let db = super::Db::postgres().await; super::$name(&db).await; db.cleanup().await; } )* }
    };
}

/// A new `Running` run named `name` in `experiment` of `ws` (the experiment made if missing).
#[allow(dead_code)]
pub async fn run(store: &Store, ws: &Workspace, experiment: &str, name: &str) -> String {
    let (exp, _) = store.ensure_experiment(ws, experiment).await.unwrap();
    let tags = BTreeMap::new();
    let new = NewRun {
        experiment_id: &exp,
        display_name: name,
        status: RunStatus::Running,
        job: None,
        compute: None,
        environment: None,
        parent_id: None,
        created_by: Some("tester"),
        tags: &tags,
        started_at: None,
    };
    store.create_run(ws, new).await.unwrap()
}
