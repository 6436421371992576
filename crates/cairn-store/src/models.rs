//! The model registry: registered models, versions with their file manifests, tags, aliases and
//! the uses that protect a version from deletion. File content is not here (it lives in the
//! workspace's content-addressed blobs); this module stores the manifest only.
//!
//! Concurrency: every write that changes a model or one of its versions first touches the model's
//! row (`lock_model`, or the upsert of `create_model_version`), so on PostgreSQL writers of one
//! model queue on that row lock; on SQLite the store's write gate already serialises writers. That
//! is what makes version numbers race-free and the "used version" check hold until commit.

use std::collections::BTreeMap;

use cairn_core::api::{Page, Workspace};
use cairn_core::models::{Model, ModelFile, ModelFilter, ModelVersion, NewModelVersion, VersionRef};
use cairn_core::{now_ms, Error};
use sqlx::any::AnyRow;

use crate::db::{get, is_unique_violation, map_err, new_id, WriteTx};
use crate::{Store, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};

/// The status of every visible version: files are in place before the row is written.
pub const READY: &str = "READY";

fn model_from_row(row: &AnyRow, ws: &Workspace) -> Result<Model, Error> {
    Ok(Model {
        name: get(row, "name")?,
        workspace: ws.name.clone(),
        description: get(row, "description")?,
        tags: BTreeMap::new(),
        created_by: get(row, "created_by")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
        latest_version: get(row, "latest")?,
        aliases: BTreeMap::new(),
    })
}

fn version_from_row(row: &AnyRow, ws: &Workspace) -> Result<ModelVersion, Error> {
    let name: String = get(row, "model_name")?;
    let version: i64 = get(row, "version")?;
    let properties: String = get(row, "properties")?;
    Ok(ModelVersion {
        id: format!("{name}:{version}"),
        name,
        version,
        workspace: ws.name.clone(),
        description: get(row, "description")?,
        tags: BTreeMap::new(),
        properties: serde_json::from_str(&properties).unwrap_or_default(),
        status: get(row, "status")?,
        stage: get(row, "stage")?,
        source: get(row, "source")?,
        run_id: get(row, "run_id")?,
        experiment_id: get(row, "experiment_id")?,
        logged_model_id: get(row, "logged_model_id")?,
        framework: get(row, "framework")?,
        framework_version: get(row, "framework_version")?,
        created_by: get(row, "created_by")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
        size: get(row, "size")?,
        aliases: Vec::new(),
    })
}

const MODEL_COLUMNS: &str = "m.id, m.name, m.description, m.created_by, m.created_at, m.updated_at, \
     (SELECT MAX(v.version) FROM model_versions v WHERE v.model_id = m.id) AS latest";

const VERSION_COLUMNS: &str = "v.id, m.name AS model_name, v.version, v.description, v.status, v.stage, \
     v.source, v.run_id, v.experiment_id, v.logged_model_id, v.framework, v.framework_version, v.properties, \
     v.created_by, v.created_at, v.updated_at, v.size";

fn model_not_found(ws: &Workspace, name: &str) -> Error {
    Error::not_found("model", format!("{name}\" in workspace \"{}", ws.name))
}

/// Escapes LIKE wildcards so that a user's text matches literally (with `ESCAPE '\'`).
pub(crate) fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

/// Takes the model's row lock (PostgreSQL) with an UPDATE, returning the model's id; `touch`
/// also sets `updated_at` (a change to the model), `None` leaves it (a deployment starting to use
/// or letting go of a version changes nothing users see as the model's).
async fn lock_model(
    tx: &mut WriteTx,
    ws: &Workspace,
    name: &str,
    touch: Option<i64>,
) -> Result<String, Error> {
    let row = sqlx::query(
        "UPDATE registered_models SET updated_at = COALESCE($1, updated_at) WHERE workspace_id = $2 AND name = $3 \
         RETURNING id",
    )
    .bind(touch)
    .bind(&ws.id)
    .bind(name)
    .fetch_optional(&mut ***tx)
    .await
    .map_err(map_err)?;
    match row {
        Some(r) => get(&r, "id"),
        None => Err(model_not_found(ws, name)),
    }
}

/// The id of version `version` of the model `model_id`, inside a write transaction.
async fn version_id_in(tx: &mut WriteTx, model_id: &str, name: &str, version: i64) -> Result<String, Error> {
    let row = sqlx::query("SELECT id FROM model_versions WHERE model_id = $1 AND version = $2")
        .bind(model_id)
        .bind(version)
        .fetch_optional(&mut ***tx)
        .await
        .map_err(map_err)?;
    match row {
        Some(r) => get(&r, "id"),
        None => Err(Error::not_found("model version", format!("{name}:{version}"))),
    }
}

async fn set_tags(
    tx: &mut WriteTx,
    table: &str,
    owner_col: &str,
    owner: &str,
    set: &BTreeMap<String, String>,
    remove: &[String],
) -> Result<(), Error> {
    for (k, v) in set {
        sqlx::query(&format!(
            "INSERT INTO {table} ({owner_col}, key, value) VALUES ($1, $2, $3) \
             ON CONFLICT ({owner_col}, key) DO UPDATE SET value = $3"
        ))
        .bind(owner)
        .bind(k)
        .bind(v)
        .execute(&mut ***tx)
        .await
        .map_err(map_err)?;
    }
    for k in remove {
        sqlx::query(&format!("DELETE FROM {table} WHERE {owner_col} = $1 AND key = $2"))
            .bind(owner)
            .bind(k)
            .execute(&mut ***tx)
            .await
            .map_err(map_err)?;
    }
    Ok(())
}

/// Refuses when the version (or, with `version_id` `None`, any version of the model) is used.
async fn refuse_if_used(
    tx: &mut WriteTx,
    model_id: &str,
    version_id: Option<&str>,
    what: &str,
) -> Result<(), Error> {
    let rows = sqlx::query(
        // A deployment is named as users know it, ENDPOINT/NAME, not by its id.
        "SELECT v.version, u.user_kind, \
         CASE WHEN d.name IS NULL THEN u.user_id ELSE e.name || '/' || d.name END AS user_id \
         FROM model_version_uses u JOIN model_versions v ON v.id = u.version_id \
         LEFT JOIN deployments d ON u.user_kind = 'deployment' AND d.id = u.user_id \
         LEFT JOIN endpoints e ON e.id = d.endpoint_id \
         WHERE v.model_id = $1 AND ($2 = '' OR v.id = $2) ORDER BY v.version, u.user_kind, u.user_id LIMIT 5",
    )
    .bind(model_id)
    .bind(version_id.unwrap_or(""))
    .fetch_all(&mut ***tx)
    .await
    .map_err(map_err)?;
    if rows.is_empty() {
        return Ok(());
    }
    let mut users = Vec::new();
    for r in &rows {
        let (v, kind, id): (i64, String, String) =
            (get(r, "version")?, get(r, "user_kind")?, get(r, "user_id")?);
        users.push(format!("{kind} \"{id}\" (version {v})"));
    }
    Err(Error::conflict(format!(
        "cannot delete {what}: it is in use by {}; remove those first",
        users.join(", ")
    )))
}

impl Store {
    /// Creates a model without versions (MLflow's `registered-models/create`).
    pub async fn create_model(
        &self,
        ws: &Workspace,
        name: &str,
        description: &str,
        tags: &BTreeMap<String, String>,
        created_by: &str,
    ) -> Result<Model, Error> {
        let now = now_ms();
        let id = new_id();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO registered_models (id, workspace_id, name, description, created_by, created_at, \
             updated_at, last_version) VALUES ($1, $2, $3, $4, $5, $6, $6, 0)",
        )
        .bind(&id)
        .bind(&ws.id)
        .bind(name)
        .bind(description)
        .bind(created_by)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                Error::conflict(format!("model \"{name}\" already exists in workspace \"{}\"", ws.name))
            } else {
                map_err(e)
            }
        })?;
        set_tags(&mut tx, "registered_model_tags", "model_id", &id, tags, &[]).await?;
        tx.commit().await.map_err(map_err)?;
        self.model(ws, name).await
    }

    /// A model with its tags and aliases.
    pub async fn model(&self, ws: &Workspace, name: &str) -> Result<Model, Error> {
        let row = sqlx::query(&format!(
            "SELECT {MODEL_COLUMNS} FROM registered_models m WHERE m.workspace_id = $1 AND m.name = $2"
        ))
        .bind(&ws.id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?
        .ok_or_else(|| model_not_found(ws, name))?;
        let id: String = get(&row, "id")?;
        let mut model = model_from_row(&row, ws)?;
        self.fill_model(&id, &mut model).await?;
        Ok(model)
    }

    async fn fill_model(&self, id: &str, model: &mut Model) -> Result<(), Error> {
        for r in sqlx::query("SELECT key, value FROM registered_model_tags WHERE model_id = $1")
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?
        {
            model.tags.insert(get(&r, "key")?, get(&r, "value")?);
        }
        for r in sqlx::query(
            "SELECT a.alias, v.version FROM model_aliases a JOIN model_versions v ON v.id = a.version_id \
             WHERE a.model_id = $1",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?
        {
            model.aliases.insert(get(&r, "alias")?, get(&r, "version")?);
        }
        Ok(())
    }

    /// Models matching `filter`, most recently updated first. `page_token` is the offset returned
    /// by the previous page.
    pub async fn list_models(
        &self,
        ws: &Workspace,
        filter: &ModelFilter,
        page_token: Option<&str>,
        size: Option<i64>,
    ) -> Result<Page<Model>, Error> {
        let limit = size.unwrap_or(DEFAULT_PAGE_SIZE).clamp(1, MAX_PAGE_SIZE);
        let offset = match page_token {
            None | Some("") => 0,
            Some(t) => t
                .parse::<i64>()
                .ok()
                .filter(|o| *o >= 0)
                .ok_or_else(|| Error::invalid(format!("invalid page token {t:?}")))?,
        };
        let name_like =
            filter.name_contains.as_deref().map(|n| format!("%{}%", like_escape(&n.to_lowercase())));
        let (tag_key, tag_value) = filter.tag.clone().unwrap_or_default();
        let rows = sqlx::query(&format!(
            "SELECT {MODEL_COLUMNS} FROM registered_models m WHERE m.workspace_id = $1 \
             AND ($2 = '' OR LOWER(m.name) LIKE $2 ESCAPE '\\') \
             AND ($3 = '' \
                  OR EXISTS (SELECT 1 FROM registered_model_tags t WHERE t.model_id = m.id AND t.key = $3 AND t.value = $4) \
                  OR EXISTS (SELECT 1 FROM model_version_tags t JOIN model_versions v ON v.id = t.version_id \
                             WHERE v.model_id = m.id AND t.key = $3 AND t.value = $4)) \
             AND ($5 = '' OR EXISTS (SELECT 1 FROM model_versions v WHERE v.model_id = m.id AND v.framework = $5)) \
             ORDER BY m.updated_at DESC, m.name LIMIT $6 OFFSET $7"
        ))
        .bind(&ws.id)
        .bind(name_like.unwrap_or_default())
        .bind(tag_key)
        .bind(tag_value)
        .bind(filter.framework.clone().unwrap_or_default())
        .bind(limit + 1)
        .bind(offset)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        let more = rows.len() as i64 > limit;
        let mut items = Vec::new();
        for r in rows.iter().take(limit as usize) {
            let id: String = get(r, "id")?;
            let mut m = model_from_row(r, ws)?;
            self.fill_model(&id, &mut m).await?;
            items.push(m);
        }
        Ok(Page { items, next_page_token: more.then(|| (offset + limit).to_string()) })
    }

    /// Changes a model's description and tags.
    pub async fn update_model(
        &self,
        ws: &Workspace,
        name: &str,
        description: Option<&str>,
        set_tags_: &BTreeMap<String, String>,
        remove_tags: &[String],
    ) -> Result<Model, Error> {
        let mut tx = self.begin_write().await?;
        let id = lock_model(&mut tx, ws, name, Some(now_ms())).await?;
        if let Some(d) = description {
            sqlx::query("UPDATE registered_models SET description = $1 WHERE id = $2")
                .bind(d)
                .bind(&id)
                .execute(&mut **tx)
                .await
                .map_err(map_err)?;
        }
        set_tags(&mut tx, "registered_model_tags", "model_id", &id, set_tags_, remove_tags).await?;
        tx.commit().await.map_err(map_err)?;
        self.model(ws, name).await
    }

    /// Renames a model; its versions, tags and aliases follow.
    pub async fn rename_model(&self, ws: &Workspace, name: &str, new_name: &str) -> Result<Model, Error> {
        let done = sqlx::query(
            "UPDATE registered_models SET name = $1, updated_at = $2 WHERE workspace_id = $3 AND name = $4",
        )
        .bind(new_name)
        .bind(now_ms())
        .bind(&ws.id)
        .bind(name)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                Error::conflict(format!("model \"{new_name}\" already exists in workspace \"{}\"", ws.name))
            } else {
                map_err(e)
            }
        })?;
        if done.rows_affected() == 0 {
            return Err(model_not_found(ws, name));
        }
        self.model(ws, new_name).await
    }

    /// Deletes a model and all its versions, unless one of them is in use (409).
    pub async fn delete_model(&self, ws: &Workspace, name: &str) -> Result<(), Error> {
        let mut tx = self.begin_write().await?;
        let id = lock_model(&mut tx, ws, name, Some(now_ms())).await?;
        refuse_if_used(&mut tx, &id, None, &format!("model \"{name}\"")).await?;
        sqlx::query("DELETE FROM registered_models WHERE id = $1")
            .bind(&id)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }

    /// Registers the next version of `new.name` (creating the model on first registration) with
    /// its file manifest, in one transaction. Two concurrent registrations get two numbers.
    pub async fn create_model_version(
        &self,
        ws: &Workspace,
        new: &NewModelVersion,
        created_by: &str,
        files: &[ModelFile],
    ) -> Result<ModelVersion, Error> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        // One statement finds or creates the model and allocates the number; on PostgreSQL a
        // concurrent registration waits here on the row until this transaction ends.
        let row = sqlx::query(
            "INSERT INTO registered_models (id, workspace_id, name, description, created_by, created_at, \
             updated_at, last_version) VALUES ($1, $2, $3, '', $4, $5, $5, 1) \
             ON CONFLICT (workspace_id, name) DO UPDATE \
             SET last_version = registered_models.last_version + 1, updated_at = $5 \
             RETURNING id, last_version",
        )
        .bind(new_id())
        .bind(&ws.id)
        .bind(&new.name)
        .bind(created_by)
        .bind(now)
        .fetch_one(&mut **tx)
        .await
        .map_err(map_err)?;
        let model_id: String = get(&row, "id")?;
        let version: i64 = get(&row, "last_version")?;
        let version_id = new_id();
        let size: i64 = files.iter().map(|f| f.size).sum();
        let source = new.source.clone().unwrap_or_else(|| format!("models:/{}/{version}", new.name));
        let properties = serde_json::to_string(&new.properties).map_err(Error::internal)?;
        sqlx::query(
            "INSERT INTO model_versions (id, model_id, version, description, status, stage, source, run_id, \
             experiment_id, logged_model_id, framework, framework_version, properties, created_by, created_at, \
             updated_at, size) VALUES ($1, $2, $3, $4, $5, 'None', $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, $15)",
        )
        .bind(&version_id)
        .bind(&model_id)
        .bind(version)
        .bind(&new.description)
        .bind(READY)
        .bind(&source)
        .bind(new.run_id.as_deref())
        .bind(new.experiment_id.as_deref())
        .bind(new.logged_model_id.as_deref())
        .bind(new.framework.as_deref())
        .bind(new.framework_version.as_deref())
        .bind(&properties)
        .bind(created_by)
        .bind(now)
        .bind(size)
        .execute(&mut **tx)
        .await
        .map_err(map_err)?;
        set_tags(&mut tx, "model_version_tags", "version_id", &version_id, &new.tags, &[]).await?;
        for f in files {
            sqlx::query(
                "INSERT INTO model_version_files (version_id, path, sha256, size) VALUES ($1, $2, $3, $4)",
            )
            .bind(&version_id)
            .bind(&f.path)
            .bind(&f.sha256)
            .bind(f.size)
            .execute(&mut **tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    Error::invalid(format!("file \"{}\" appears twice in the manifest", f.path))
                } else {
                    map_err(e)
                }
            })?;
        }
        tx.commit().await.map_err(map_err)?;
        self.model_version(ws, &new.name, &VersionRef::Number(version)).await
    }

    /// The version named by `v` (a number, `latest` or `@alias`), with tags and aliases.
    pub async fn model_version(
        &self,
        ws: &Workspace,
        name: &str,
        v: &VersionRef,
    ) -> Result<ModelVersion, Error> {
        let base = format!(
            "SELECT {VERSION_COLUMNS} FROM model_versions v JOIN registered_models m ON m.id = v.model_id \
             WHERE m.workspace_id = $1 AND m.name = $2"
        );
        let sql = match v {
            VersionRef::Number(_) => format!("{base} AND v.version = $3"),
            VersionRef::Latest => format!("{base} ORDER BY v.version DESC LIMIT 1"),
            VersionRef::Alias(_) => format!(
                "{base} AND v.id = (SELECT a.version_id FROM model_aliases a WHERE a.model_id = m.id AND a.alias = $3)"
            ),
        };
        let q = sqlx::query(&sql).bind(&ws.id).bind(name);
        let q = match v {
            VersionRef::Number(n) => q.bind(*n),
            VersionRef::Latest => q,
            VersionRef::Alias(a) => q.bind(a.as_str()),
        };
        let row = q.fetch_optional(&self.pool).await.map_err(map_err)?;
        let Some(row) = row else {
            // Say precisely what is missing: the model, the alias or the number.
            let model = self.model(ws, name).await?;
            return Err(match v {
                VersionRef::Alias(a) => Error::not_found("model alias", format!("{name}@{a}")),
                VersionRef::Latest => Error::not_found(
                    "model version",
                    format!("{name}:latest\" (the model has no versions) in workspace \"{}", ws.name),
                ),
                VersionRef::Number(n) => Error::not_found(
                    "model version",
                    match model.latest_version {
                        Some(l) => format!("{name}:{n}\" (latest is {l}) in workspace \"{}", ws.name),
                        None => {
                            format!("{name}:{n}\" (the model has no versions) in workspace \"{}", ws.name)
                        }
                    },
                ),
            });
        };
        let mut mv = version_from_row(&row, ws)?;
        let id: String = get(&row, "id")?;
        self.fill_versions(std::slice::from_mut(&mut mv), &[id]).await?;
        Ok(mv)
    }

    /// Fills the tags and aliases of `versions` (whose database ids are `ids`): two queries per
    /// chunk of ids, not two per version, so a model with many versions lists in a few queries.
    async fn fill_versions(&self, versions: &mut [ModelVersion], ids: &[String]) -> Result<(), Error> {
        /// Ids per query, far under both engines' limits on bound values.
        const IDS_PER_QUERY: usize = 500;
        let position: BTreeMap<&str, usize> =
            ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let list = crate::binds::in_list(self.backend(), chunk.len());
            let tags_sql =
                format!("SELECT version_id, key, value FROM model_version_tags WHERE version_id IN ({list})");
            let aliases_sql = format!(
                "SELECT version_id, alias FROM model_aliases WHERE version_id IN ({list}) ORDER BY alias"
            );
            let mut tags = sqlx::query(&tags_sql);
            let mut aliases = sqlx::query(&aliases_sql);
            for id in chunk {
                tags = tags.bind(id);
                aliases = aliases.bind(id);
            }
            for r in tags.fetch_all(&self.pool).await.map_err(map_err)? {
                let id: String = get(&r, "version_id")?;
                if let Some(&i) = position.get(id.as_str()) {
                    versions[i].tags.insert(get(&r, "key")?, get(&r, "value")?);
                }
            }
            for r in aliases.fetch_all(&self.pool).await.map_err(map_err)? {
                let id: String = get(&r, "version_id")?;
                if let Some(&i) = position.get(id.as_str()) {
                    versions[i].aliases.push(get(&r, "alias")?);
                }
            }
        }
        Ok(())
    }

    /// Every version of a model, newest first.
    pub async fn list_model_versions(&self, ws: &Workspace, name: &str) -> Result<Vec<ModelVersion>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM model_versions v JOIN registered_models m ON m.id = v.model_id \
             WHERE m.workspace_id = $1 AND m.name = $2 ORDER BY v.version DESC"
        ))
        .bind(&ws.id)
        .bind(name)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        if rows.is_empty() {
            self.model(ws, name).await?;
        }
        let mut versions = rows.iter().map(|r| version_from_row(r, ws)).collect::<Result<Vec<_>, _>>()?;
        let ids = rows.iter().map(|r| get(r, "id")).collect::<Result<Vec<String>, _>>()?;
        self.fill_versions(&mut versions, &ids).await?;
        Ok(versions)
    }

    /// Versions across the workspace's models, optionally of one model name and/or one run (what
    /// MLflow's `model-versions/search` filters on), newest first.
    pub async fn search_model_versions(
        &self,
        ws: &Workspace,
        name: Option<&str>,
        run_id: Option<&str>,
    ) -> Result<Vec<ModelVersion>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM model_versions v JOIN registered_models m ON m.id = v.model_id \
             WHERE m.workspace_id = $1 AND ($2 = '' OR m.name = $2) AND ($3 = '' OR v.run_id = $3) \
             ORDER BY v.created_at DESC, v.version DESC"
        ))
        .bind(&ws.id)
        .bind(name.unwrap_or(""))
        .bind(run_id.unwrap_or(""))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        let mut versions = rows.iter().map(|r| version_from_row(r, ws)).collect::<Result<Vec<_>, _>>()?;
        let ids = rows.iter().map(|r| get(r, "id")).collect::<Result<Vec<String>, _>>()?;
        self.fill_versions(&mut versions, &ids).await?;
        Ok(versions)
    }

    /// Changes a version's description and tags.
    pub async fn update_model_version(
        &self,
        ws: &Workspace,
        name: &str,
        version: i64,
        description: Option<&str>,
        set_tags_: &BTreeMap<String, String>,
        remove_tags: &[String],
    ) -> Result<ModelVersion, Error> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let model_id = lock_model(&mut tx, ws, name, Some(now)).await?;
        let id = version_id_in(&mut tx, &model_id, name, version).await?;
        let current: String = get(
            &sqlx::query("SELECT description FROM model_versions WHERE id = $1")
                .bind(&id)
                .fetch_one(&mut **tx)
                .await
                .map_err(map_err)?,
            "description",
        )?;
        sqlx::query("UPDATE model_versions SET updated_at = $1, description = $2 WHERE id = $3")
            .bind(now)
            .bind(description.map(str::to_string).unwrap_or(current))
            .bind(&id)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
        set_tags(&mut tx, "model_version_tags", "version_id", &id, set_tags_, remove_tags).await?;
        tx.commit().await.map_err(map_err)?;
        self.model_version(ws, name, &VersionRef::Number(version)).await
    }

    /// Sets MLflow's legacy stage of a version; with `archive_others`, the model's other versions
    /// in that stage move to `Archived` (MLflow's `archive_existing_versions`).
    pub async fn set_model_version_stage(
        &self,
        ws: &Workspace,
        name: &str,
        version: i64,
        stage: &str,
        archive_others: bool,
    ) -> Result<ModelVersion, Error> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let model_id = lock_model(&mut tx, ws, name, Some(now)).await?;
        let id = version_id_in(&mut tx, &model_id, name, version).await?;
        if archive_others && stage != "None" && stage != "Archived" {
            sqlx::query(
                "UPDATE model_versions SET stage = 'Archived', updated_at = $1 \
                 WHERE model_id = $2 AND stage = $3 AND id <> $4",
            )
            .bind(now)
            .bind(&model_id)
            .bind(stage)
            .bind(&id)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
        }
        sqlx::query("UPDATE model_versions SET stage = $1, updated_at = $2 WHERE id = $3")
            .bind(stage)
            .bind(now)
            .bind(&id)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        self.model_version(ws, name, &VersionRef::Number(version)).await
    }

    /// Deletes one version (its aliases go with it), unless it is in use (409). The number is
    /// never handed out again.
    pub async fn delete_model_version(&self, ws: &Workspace, name: &str, version: i64) -> Result<(), Error> {
        let mut tx = self.begin_write().await?;
        let model_id = lock_model(&mut tx, ws, name, Some(now_ms())).await?;
        let id = version_id_in(&mut tx, &model_id, name, version).await?;
        refuse_if_used(&mut tx, &model_id, Some(&id), &format!("model version {name}:{version}")).await?;
        sqlx::query("DELETE FROM model_versions WHERE id = $1")
            .bind(&id)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }

    /// The manifest of a version, in path order.
    pub async fn model_version_files(
        &self,
        ws: &Workspace,
        name: &str,
        version: i64,
    ) -> Result<Vec<ModelFile>, Error> {
        let mv = self.model_version(ws, name, &VersionRef::Number(version)).await?;
        let rows = sqlx::query(
            "SELECT f.path, f.sha256, f.size FROM model_version_files f JOIN model_versions v ON v.id = f.version_id \
             JOIN registered_models m ON m.id = v.model_id \
             WHERE m.workspace_id = $1 AND m.name = $2 AND v.version = $3 ORDER BY f.path",
        )
        .bind(&ws.id)
        .bind(&mv.name)
        .bind(mv.version)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                Ok(ModelFile { path: get(r, "path")?, sha256: get(r, "sha256")?, size: get(r, "size")? })
            })
            .collect()
    }

    /// The SHA-256 of every blob some model version of workspace `ws` holds (what blob garbage
    /// collection must keep).
    pub async fn model_blob_refs(&self, ws: &Workspace) -> Result<std::collections::HashSet<String>, Error> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT f.sha256 FROM model_version_files f JOIN model_versions v ON v.id = f.version_id \
             JOIN registered_models m ON m.id = v.model_id WHERE m.workspace_id = $1",
        )
        .bind(&ws.id)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(rows.into_iter().map(|s| s.to_lowercase()).collect())
    }

    /// Points `alias` at `version`, moving it if it pointed elsewhere.
    pub async fn set_model_alias(
        &self,
        ws: &Workspace,
        name: &str,
        alias: &str,
        version: i64,
    ) -> Result<ModelVersion, Error> {
        let mut tx = self.begin_write().await?;
        let model_id = lock_model(&mut tx, ws, name, Some(now_ms())).await?;
        let id = version_id_in(&mut tx, &model_id, name, version).await?;
        sqlx::query(
            "INSERT INTO model_aliases (model_id, alias, version_id) VALUES ($1, $2, $3) \
             ON CONFLICT (model_id, alias) DO UPDATE SET version_id = $3",
        )
        .bind(&model_id)
        .bind(alias)
        .bind(&id)
        .execute(&mut **tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        self.model_version(ws, name, &VersionRef::Number(version)).await
    }

    pub async fn delete_model_alias(&self, ws: &Workspace, name: &str, alias: &str) -> Result<(), Error> {
        let mut tx = self.begin_write().await?;
        let model_id = lock_model(&mut tx, ws, name, Some(now_ms())).await?;
        let done = sqlx::query("DELETE FROM model_aliases WHERE model_id = $1 AND alias = $2")
            .bind(&model_id)
            .bind(alias)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("model alias", format!("{name}@{alias}")));
        }
        tx.commit().await.map_err(map_err)
    }

    /// Records that `user_kind` `user_id` (e.g. a deployment) uses a version; idempotent.
    pub async fn add_model_version_use(
        &self,
        ws: &Workspace,
        name: &str,
        version: i64,
        user_kind: &str,
        user_id: &str,
    ) -> Result<(), Error> {
        self.add_model_version_uses(ws, &[(name, version)], user_kind, user_id).await
    }

    /// Records that `user_kind` `user_id` uses every version of `versions` (name, number), all or
    /// none (404 naming a missing one); idempotent.
    pub async fn add_model_version_uses(
        &self,
        ws: &Workspace,
        versions: &[(&str, i64)],
        user_kind: &str,
        user_id: &str,
    ) -> Result<(), Error> {
        let mut tx = self.begin_write().await?;
        for id in lock_versions(&mut tx, ws, versions).await? {
            record_use(&mut tx, &id, user_kind, user_id).await?;
        }
        tx.commit().await.map_err(map_err)
    }

    /// Makes `version` of `name` the only version `user_kind` `user_id` uses: its use is recorded
    /// and any other use by that user dropped (uses left by an update a restart cut short).
    /// Returns how many stale uses were dropped.
    pub async fn keep_only_model_version_use(
        &self,
        ws: &Workspace,
        name: &str,
        version: i64,
        user_kind: &str,
        user_id: &str,
    ) -> Result<u64, Error> {
        self.keep_only_model_version_uses(ws, &[(name, version)], user_kind, user_id).await
    }

    /// As `keep_only_model_version_use`, for a set of versions (name, number).
    pub async fn keep_only_model_version_uses(
        &self,
        ws: &Workspace,
        versions: &[(&str, i64)],
        user_kind: &str,
        user_id: &str,
    ) -> Result<u64, Error> {
        let mut tx = self.begin_write().await?;
        let keep = lock_versions(&mut tx, ws, versions).await?;
        let rows =
            sqlx::query("SELECT version_id FROM model_version_uses WHERE user_kind = $1 AND user_id = $2")
                .bind(user_kind)
                .bind(user_id)
                .fetch_all(&mut **tx)
                .await
                .map_err(map_err)?;
        let mut dropped = 0;
        for r in &rows {
            let id: String = get(r, "version_id")?;
            if keep.contains(&id) {
                continue;
            }
            dropped += sqlx::query(
                "DELETE FROM model_version_uses WHERE user_kind = $1 AND user_id = $2 AND version_id = $3",
            )
            .bind(user_kind)
            .bind(user_id)
            .bind(&id)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?
            .rows_affected();
        }
        for id in &keep {
            record_use(&mut tx, id, user_kind, user_id).await?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(dropped)
    }

    /// Forgets a use; true when there was one.
    pub async fn remove_model_version_use(
        &self,
        ws: &Workspace,
        name: &str,
        version: i64,
        user_kind: &str,
        user_id: &str,
    ) -> Result<bool, Error> {
        let mut tx = self.begin_write().await?;
        let model_id = lock_model(&mut tx, ws, name, None).await?;
        let id = version_id_in(&mut tx, &model_id, name, version).await?;
        let done = sqlx::query(
            "DELETE FROM model_version_uses WHERE version_id = $1 AND user_kind = $2 AND user_id = $3",
        )
        .bind(&id)
        .bind(user_kind)
        .bind(user_id)
        .execute(&mut **tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }
}

/// The ids of `versions` (name, number), each model's row locked first as every registry write
/// does (in name order, so that two writers cannot wait on each other); 404 naming one missing.
async fn lock_versions(
    tx: &mut WriteTx,
    ws: &Workspace,
    versions: &[(&str, i64)],
) -> Result<Vec<String>, Error> {
    let mut order: Vec<usize> = (0..versions.len()).collect();
    order.sort_by_key(|&i| versions[i].0);
    let mut ids = vec![String::new(); versions.len()];
    for i in order {
        let (name, version) = versions[i];
        let model_id = lock_model(tx, ws, name, None).await?;
        ids[i] = version_id_in(tx, &model_id, name, version).await?;
    }
    Ok(ids)
}

/// Records that `user_kind` `user_id` uses version `version_id` (idempotent), inside `tx`.
async fn record_use(tx: &mut WriteTx, version_id: &str, user_kind: &str, user_id: &str) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO model_version_uses (version_id, user_kind, user_id, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (version_id, user_kind, user_id) DO NOTHING",
    )
    .bind(version_id)
    .bind(user_kind)
    .bind(user_id)
    .bind(now_ms())
    .execute(&mut ***tx)
    .await
    .map_err(map_err)?;
    Ok(())
}
