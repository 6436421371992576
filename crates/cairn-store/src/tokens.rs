//! API tokens. Only a SHA-256 of each token is stored; the caller hashes and compares.

use cairn_core::api::{Page, Role, TokenInfo};
use cairn_core::cache::LookupCache;
use cairn_core::{now_ms, Error};
use sqlx::Row;

use crate::db::{is_unique_violation, map_err, new_id};
use crate::workspaces::{page_size, paginate};
use crate::Store;

/// A token to insert: the caller has already hashed the secret.
pub struct NewToken<'a> {
    pub name: &'a str,
    pub lookup: &'a str,
    pub hash: &'a str,
    pub role: Role,
    pub workspace: Option<&'a str>,
    /// Limits the token to one run (a job's run-scoped token).
    pub run_id: Option<&'a str>,
}

/// A stored token, with its hash, as authentication needs it.
#[derive(Clone, Debug)]
pub struct TokenRecord {
    pub id: String,
    pub hash: String,
    pub info: TokenInfo,
}

fn info_from_row(row: &sqlx::any::AnyRow) -> Result<TokenInfo, sqlx::Error> {
    let role: String = row.try_get("role")?;
    Ok(TokenInfo {
        name: row.try_get("name")?,
        role: Role::parse(&role).unwrap_or(Role::Reader),
        workspace: row.try_get("workspace")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        run_id: row.try_get("run_id")?,
    })
}

impl Store {
    pub async fn insert_token(&self, t: NewToken<'_>) -> Result<TokenInfo, Error> {
        let created_at = now_ms();
        sqlx::query(
            "INSERT INTO tokens (id, name, lookup, hash, role, workspace, created_at, run_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(new_id())
        .bind(t.name)
        .bind(t.lookup)
        .bind(t.hash)
        .bind(t.role.as_str())
        .bind(t.workspace)
        .bind(created_at)
        .bind(t.run_id)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                Error::conflict(format!("a token named \"{}\" already exists", t.name))
            } else {
                map_err(e)
            }
        })?;
        Ok(TokenInfo {
            name: t.name.to_string(),
            role: t.role,
            workspace: t.workspace.map(str::to_string),
            created_at,
            last_used_at: None,
            run_id: t.run_id.map(str::to_string),
        })
    }

    pub async fn token_by_lookup(&self, lookup: &str) -> Result<Option<TokenRecord>, Error> {
        let load = || self.token_by_lookup_uncached(lookup);
        self.token_cache.get_or_load(lookup, load, Option::is_some).await
    }

    async fn token_by_lookup_uncached(&self, lookup: &str) -> Result<Option<TokenRecord>, Error> {
        let row = sqlx::query(
            "SELECT id, hash, name, role, workspace, created_at, last_used_at, run_id FROM tokens WHERE lookup = $1",
        )
        .bind(lookup)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.map(|r| -> Result<TokenRecord, sqlx::Error> {
            Ok(TokenRecord { id: r.try_get("id")?, hash: r.try_get("hash")?, info: info_from_row(&r)? })
        })
        .transpose()
        .map_err(map_err)
    }

    /// The token with this id (studio sessions name their token by id, never by its secret).
    pub async fn token_by_id(&self, id: &str) -> Result<Option<TokenRecord>, Error> {
        let row = sqlx::query(
            "SELECT id, hash, name, role, workspace, created_at, last_used_at, run_id FROM tokens WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.map(|r| -> Result<TokenRecord, sqlx::Error> {
            Ok(TokenRecord { id: r.try_get("id")?, hash: r.try_get("hash")?, info: info_from_row(&r)? })
        })
        .transpose()
        .map_err(map_err)
    }

    /// Records that a token was used (at most once a minute per token, to spare the writer: the
    /// check is in memory, so requests within the minute do not even issue the `UPDATE`).
    pub async fn touch_token(&self, id: &str) -> Result<(), Error> {
        let now = now_ms();
        {
            let mut touches = self.token_touches.lock().unwrap_or_else(|e| e.into_inner());
            match touches.get(id) {
                Some(&at) if at >= now - 60_000 => return Ok(()),
                _ => touches.insert(id.to_string(), now),
            };
            if touches.len() > 10_000 {
                // Run tokens come and go: forget those not used within the minute.
                touches.retain(|_, at| *at >= now - 60_000);
            }
        }
        sqlx::query(
            "UPDATE tokens SET last_used_at = $1 WHERE id = $2 \
             AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(now)
        .bind(id)
        .bind(now - 60_000)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    /// The named tokens (not jobs' run-scoped ones), by name, a page at a time: `page_token` is
    /// the previous page's `next_page_token`.
    pub async fn list_tokens(
        &self,
        page_token: Option<&str>,
        size: Option<i64>,
    ) -> Result<Page<TokenInfo>, Error> {
        let limit = page_size(size);
        let rows = sqlx::query(
            "SELECT name, role, workspace, created_at, last_used_at, run_id FROM tokens \
                 WHERE run_id IS NULL AND name > $1 ORDER BY name LIMIT $2",
        )
        .bind(page_token.unwrap_or(""))
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        let mut items = rows.iter().map(info_from_row).collect::<Result<Vec<_>, _>>().map_err(map_err)?;
        Ok(paginate(&mut items, limit, |t| t.name.clone()))
    }

    /// The named token (not a job's run-scoped one) called `name`, if there is one.
    pub async fn named_token(&self, name: &str) -> Result<Option<TokenInfo>, Error> {
        let row = sqlx::query(
            "SELECT name, role, workspace, created_at, last_used_at, run_id FROM tokens \
                 WHERE run_id IS NULL AND name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.as_ref().map(info_from_row).transpose().map_err(map_err)
    }

    /// How many named tokens have the admin role (the last one cannot be revoked).
    pub async fn count_admin_tokens(&self) -> Result<i64, Error> {
        sqlx::query_scalar("SELECT COUNT(*) FROM tokens WHERE run_id IS NULL AND role = $1")
            .bind(Role::Admin.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)
    }

    /// Deletes the run-scoped tokens of a run (when it ends).
    pub async fn delete_run_tokens(&self, run_id: &str) -> Result<(), Error> {
        sqlx::query("DELETE FROM tokens WHERE run_id = $1")
            .bind(run_id)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        self.token_cache.clear();
        Ok(())
    }

    pub async fn count_tokens(&self) -> Result<i64, Error> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM tokens").fetch_one(&self.pool).await.map_err(map_err)?;
        row.try_get::<i64, _>("n").map_err(map_err)
    }

    /// Deletes a token: it stops working at once.
    pub async fn delete_token(&self, name: &str) -> Result<(), Error> {
        let done = sqlx::query("DELETE FROM tokens WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        self.token_cache.clear();
        if done.rows_affected() == 0 {
            return Err(Error::not_found("token", name));
        }
        Ok(())
    }
}

/// How long a token found in the database is trusted without asking again. Tokens deleted
/// through this process are forgotten at once; one deleted by another server sharing the
/// database (PostgreSQL) keeps working here for at most this long (as Kubernetes' token caches do,
/// for minutes there).
const TOKEN_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// Tokens found by lookup at most (unknown lookups are not kept).
const TOKEN_CACHE_MAX: usize = 10_000;

/// Tokens recently found by lookup, so that a busy client's requests (an upload of many small
/// files, an MLflow client logging) do not each cost a database read before any work: that read
/// is a hand-off to another thread and back on SQLite. The caller still compares the presented
/// token's hash with the record's in constant time.
pub(crate) type TokenCache = LookupCache<String, Option<TokenRecord>>;

pub(crate) fn token_cache() -> TokenCache {
    LookupCache::new(Some(TOKEN_CACHE_TTL), TOKEN_CACHE_MAX)
}
