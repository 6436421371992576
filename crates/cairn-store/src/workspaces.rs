//! Workspaces: the namespace that owns everything else. Creating one also creates its `default`
//! datastore, in the same transaction.

use cairn_core::api::{DatastoreKind, Page, Workspace};
use cairn_core::{now_ms, Error};
use sqlx::Row;

use crate::db::{is_unique_violation, map_err, new_id};
use crate::{Store, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};

fn from_row(row: &sqlx::any::AnyRow) -> Result<Workspace, Error> {
    (|| -> Result<Workspace, sqlx::Error> {
        Ok(Workspace {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            description: row.try_get("description")?,
            created_at: row.try_get("created_at")?,
        })
    })()
    .map_err(map_err)
}

/// Clamps a requested page size into `1..=MAX_PAGE_SIZE`.
pub(crate) fn page_size(requested: Option<i64>) -> i64 {
    requested.unwrap_or(DEFAULT_PAGE_SIZE).clamp(1, MAX_PAGE_SIZE)
}

impl Store {
    pub async fn create_workspace(&self, name: &str, description: &str) -> Result<Workspace, Error> {
        let ws = Workspace {
            id: new_id(),
            name: name.to_string(),
            description: description.to_string(),
            created_at: now_ms(),
        };
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO workspaces (id, name, description, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&ws.id)
            .bind(&ws.name)
            .bind(&ws.description)
            .bind(ws.created_at)
            .execute(&mut **tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    Error::conflict(format!("workspace \"{name}\" already exists"))
                } else {
                    map_err(e)
                }
            })?;
        sqlx::query(
            "INSERT INTO datastores (id, workspace_id, name, kind, location, description, created_at) \
             VALUES ($1, $2, 'default', $3, '', 'the workspace''s own storage', $4)",
        )
        .bind(new_id())
        .bind(&ws.id)
        .bind(DatastoreKind::Default.as_str())
        .bind(ws.created_at)
        .execute(&mut **tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(ws)
    }

    /// The workspace of that name: 404 when there is none, 400 naming the rule when no workspace
    /// could have that name (a path like `../x` in a URL, say).
    pub async fn workspace(&self, name: &str) -> Result<Workspace, Error> {
        cairn_core::validate_name("workspace name", name)?;
        let row = sqlx::query("SELECT id, name, description, created_at FROM workspaces WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        match row {
            Some(r) => from_row(&r),
            None => Err(Error::not_found("workspace", name)),
        }
    }

    /// Workspaces in name order, after `page_token` (the last name of the previous page).
    pub async fn list_workspaces(
        &self,
        page_token: Option<&str>,
        size: Option<i64>,
    ) -> Result<Page<Workspace>, Error> {
        let limit = page_size(size);
        let rows = sqlx::query(
            "SELECT id, name, description, created_at FROM workspaces WHERE name > $1 ORDER BY name LIMIT $2",
        )
        .bind(page_token.unwrap_or(""))
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        let mut items = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
        Ok(paginate(&mut items, limit, |w| w.name.clone()))
    }

    /// What a workspace holds besides its datastores, as `(what, count)` for each kind it has
    /// some of: `experiments`, `environments`, `computes`, `models` (a delete without force
    /// names them).
    pub async fn workspace_contents(&self, ws: &Workspace) -> Result<Vec<(&'static str, i64)>, Error> {
        let mut out = Vec::new();
        for (what, table) in [
            ("experiments", "experiments"),
            ("environments", "environments"),
            ("computes", "computes"),
            ("models", "registered_models"),
        ] {
            let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table} WHERE workspace_id = $1"))
                .bind(&ws.id)
                .fetch_one(&self.pool)
                .await
                .map_err(map_err)?;
            if n > 0 {
                out.push((what, n));
            }
        }
        Ok(out)
    }

    /// Deletes the workspace row and, by cascade, its datastores' rows. Whether it may be
    /// deleted (emptiness, `--force`) and what happens to files is the caller's business.
    pub async fn delete_workspace(&self, name: &str) -> Result<(), Error> {
        let _invalidate = self.scoring_cache.invalidate_after();
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM workspaces WHERE name = $1")
            .bind(name)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("workspace", name));
        }
        // Tokens name their workspace: left behind, they would open a new workspace of the same
        // name to whoever held a token of the old one.
        sqlx::query("DELETE FROM tokens WHERE workspace = $1")
            .bind(name)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        self.token_cache.clear();
        Ok(())
    }
}

/// Cuts `items` (fetched with `limit + 1`) to one page and derives the next page token.
pub(crate) fn paginate<T>(items: &mut Vec<T>, limit: i64, key: impl Fn(&T) -> String) -> Page<T> {
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next_page_token = if more { items.last().map(key) } else { None };
    Page { items: std::mem::take(items), next_page_token }
}
