//! Searching runs: the filter grammar of `cairn_core::search` turned into one SQL query, and runs
//! loaded in bulk: a handful of queries per page, not several per run, sent at once, each giving
//! one row per run (its params, tags, properties or latest metrics as one JSON array). MLflow
//! traces are searched the same way ([`Store::search_traces`]), with the same text comparisons.

use std::collections::HashMap;

use cairn_core::api::Workspace;
use cairn_core::runs::{MetricPoint, Run, RunStatus, Transition};
use cairn_core::search::{attribute_column, trace_attribute, Clause, Entity, Op, OrderBy, Value};

use crate::mlflow::RUN_ARTIFACT_URI_SQL;
use cairn_core::Error;
use sqlx::Row;

use crate::binds::{in_list, Placeholders};
use crate::db::{map_err, Backend};
use crate::Store;

enum Bind {
    Text(String),
    Number(f64),
    Int(i64),
}

/// Builds a search's SQL, collecting the values to bind. Placeholders are positional on SQLite
/// (`binds.rs`), so fragments must be asked for in the order they appear in the query's text.
struct Sql {
    binds: Vec<Bind>,
    placeholders: Placeholders,
    backend: Backend,
}

impl Sql {
    fn new(backend: Backend) -> Sql {
        Sql { binds: Vec::new(), placeholders: Placeholders::new(backend), backend }
    }

    fn bind(&mut self, b: Bind) -> String {
        self.binds.push(b);
        self.placeholders.one()
    }

    /// `OP VALUE` of a text comparison on `lhs` (a column or expression), `IN (…)` included.
    fn text_test(&mut self, lhs: &str, c: &Clause) -> String {
        let (lw, rw) = if c.op == Op::ILike { ("LOWER(", ")") } else { ("", "") };
        match &c.value {
            Value::List(values) => {
                let ps: Vec<String> = values.iter().map(|v| self.bind(Bind::Text(v.clone()))).collect();
                format!("{lhs} {} ({})", c.op.sql(), ps.join(", "))
            }
            Value::Text(t) if c.op == Op::Like => self.like(lhs, t),
            Value::Text(t) => {
                let v = self.bind(Bind::Text(t.clone()));
                format!("{lw}{lhs}{rw} {} {lw}{v}{rw}", c.op.sql())
            }
            Value::Number(n) => {
                let v = self.bind(Bind::Int(*n as i64));
                format!("{lhs} {} {v}", c.op.sql())
            }
            Value::Null => format!("{lhs} {}", c.op.sql()),
        }
    }

    /// `lhs LIKE pattern`, minding case on both backends as MLflow's LIKE does (ILIKE is the one
    /// that does not). PostgreSQL's LIKE minds case; SQLite's ignores ASCII case but its GLOB
    /// does not, and GLOB, like a case-minding LIKE, can still use an index for a fixed prefix.
    fn like(&mut self, lhs: &str, pattern: &str) -> String {
        match self.backend {
            Backend::Postgres => {
                let p = self.bind(Bind::Text(pattern.to_string()));
                format!("{lhs} LIKE {p}")
            }
            Backend::Sqlite => {
                let p = self.bind(Bind::Text(like_to_glob(pattern)));
                format!("{lhs} GLOB {p}")
            }
        }
    }

    fn clause(&mut self, c: &Clause) -> String {
        if let Some(col) = tag_column(c.entity, &c.key) {
            return self.text_test(col, c);
        }
        match c.entity {
            Entity::Metric => {
                let key = self.bind(Bind::Text(c.key.clone()));
                let Value::Number(n) = c.value else { unreachable!("parser checked") };
                let v = self.bind(Bind::Number(n));
                // A NaN differs from every number and compares with none, as in MLflow: it
                // matches `!=` and nothing else (PostgreSQL's NaN would be above every number).
                let nan = is_nan("m.value");
                let test = if c.op == Op::Ne { format!("OR {nan}") } else { format!("AND NOT {nan}") };
                format!(
                    "EXISTS (SELECT 1 FROM latest_metrics m WHERE m.run_id = r.id AND m.key = {key} AND (m.value {} {v} {test}))",
                    c.op.sql()
                )
            }
            Entity::Param | Entity::Tag => {
                let table = if c.entity == Entity::Param { "params" } else { "run_tags" };
                let key = self.bind(Bind::Text(c.key.clone()));
                if matches!(c.op, Op::IsNull | Op::IsNotNull) {
                    let not = if c.op == Op::IsNull { "NOT " } else { "" };
                    return format!(
                        "{not}EXISTS (SELECT 1 FROM {table} x WHERE x.run_id = r.id AND x.key = {key})"
                    );
                }
                let test = self.text_test("x.value", c);
                format!("EXISTS (SELECT 1 FROM {table} x WHERE x.run_id = r.id AND x.key = {key} AND {test})")
            }
            Entity::Attribute => self.text_test(attribute_sql(&c.key), c),
            Entity::Dataset if c.key == "context" => {
                // The context is an input tag, kept in the tags' JSON as the client sent it.
                let values = match &c.value {
                    Value::List(v) => v.clone(),
                    Value::Text(t) => vec![t.clone()],
                    Value::Number(_) | Value::Null => unreachable!("parser checked"),
                };
                let tests: Vec<String> = values
                    .iter()
                    .map(|v| {
                        let tag = serde_json::json!({"key": "mlflow.data.context", "value": v}).to_string();
                        let p = self.bind(Bind::Text(format!("%{}%", crate::models::like_escape(&tag))));
                        format!("d.tags_json LIKE {p} ESCAPE '\\'")
                    })
                    .collect();
                format!(
                    "EXISTS (SELECT 1 FROM run_datasets d WHERE d.run_id = r.id AND ({}))",
                    tests.join(" OR ")
                )
            }
            Entity::Metadata | Entity::Span => {
                unreachable!("the run parser refuses request_metadata. and span.")
            }
            Entity::Dataset => {
                let col = if c.key == "name" { "d.name" } else { "d.digest" };
                let test = self.text_test(col, c);
                format!("EXISTS (SELECT 1 FROM run_datasets d WHERE d.run_id = r.id AND {test})")
            }
        }
    }
}

/// A LIKE pattern as the GLOB pattern matching the same texts: `%` and `_` become `*` and `?`,
/// and GLOB's own wildcards are made literal by a one-character class.
fn like_to_glob(pattern: &str) -> String {
    let mut glob = String::with_capacity(pattern.len());
    for ch in pattern.chars() {
        match ch {
            '%' => glob.push('*'),
            '_' => glob.push('?'),
            '*' => glob.push_str("[*]"),
            '?' => glob.push_str("[?]"),
            '[' => glob.push_str("[[]"),
            other => glob.push(other),
        }
    }
    glob
}

/// Whether metric value `column` is a NaN: SQLite stores one as NULL, PostgreSQL as its NaN
/// (equal to itself there; the text never equals a number on SQLite).
pub(crate) fn is_nan(column: &str) -> String {
    format!("({column} IS NULL OR {column} = 'NaN')")
}

/// A run attribute's column, or the expression of one MLflow derives
/// (`cairn_core::search::DERIVED_ATTRIBUTES`): its user is who created it, or for a run created
/// before Cairn kept that, its `mlflow.user` tag (empty without one), as `RunInfo.user_id` shows
/// it; its artifact URI the proxy's location.
fn attribute_sql(key: &str) -> &'static str {
    match key {
        "user_id" => {
            "COALESCE(r.created_by, \
             (SELECT u.value FROM run_tags u WHERE u.run_id = r.id AND u.key = 'mlflow.user'), '')"
        }
        "artifact_uri" => RUN_ARTIFACT_URI_SQL,
        other => attribute_column(other).expect("parser checked"),
    }
}

/// Two MLflow tags are columns here: the parent run and the run's name.
fn tag_column(entity: Entity, key: &str) -> Option<&'static str> {
    match (entity, key) {
        (Entity::Tag, "mlflow.parentRunId") => Some("r.parent_id"),
        (Entity::Tag, "mlflow.runName") => Some("r.display_name"),
        _ => None,
    }
}

/// Which runs a search looks at.
pub struct RunScope<'a> {
    pub experiment_names: Vec<&'a str>,
    pub experiment_ids: &'a [String],
    pub deleted: Option<bool>,
    /// The text a status sorts by when a search orders by status (`None`: its stored name).
    /// MLflow sorts by its own names, which are not Cairn's.
    pub status_sort_key: Option<fn(RunStatus) -> &'static str>,
}

/// `column` (a stored status) as the text `key` gives each status. Statuses are fixed words,
/// written into the SQL: placeholders in the ORDER BY would bind out of place (`Sql`).
fn status_sort_text(column: &str, key: fn(RunStatus) -> &'static str) -> String {
    let quote = |t: &str| t.replace('\'', "''");
    let whens: Vec<String> = RunStatus::ALL
        .iter()
        .map(|s| format!(" WHEN '{}' THEN '{}'", quote(s.as_str()), quote(key(*s))))
        .collect();
    format!("CASE {column}{} END", whens.concat())
}

impl Store {
    /// Runs of `experiment` matching every clause, ordered, one page (`offset`, `limit`).
    /// Returns the runs and whether more follow.
    pub async fn search_runs(
        &self,
        ws: &Workspace,
        experiment: Option<&str>,
        clauses: &[Clause],
        order: &[OrderBy],
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<Run>, bool), Error> {
        // Runs deleted through the MLflow API stay restorable there but are hidden here.
        let scope = RunScope {
            experiment_names: experiment.into_iter().collect(),
            experiment_ids: &[],
            deleted: Some(false),
            status_sort_key: None,
        };
        self.search_runs_in(ws, &scope, clauses, order, offset, limit).await
    }

    /// [`Store::search_runs`] over several experiments (by name or id; all when both are empty)
    /// and any lifecycle: `deleted` `Some(false)` live runs, `Some(true)` deleted ones, `None` both
    /// (MLflow's run view types).
    pub async fn search_runs_in(
        &self,
        ws: &Workspace,
        scope: &RunScope<'_>,
        clauses: &[Clause],
        order: &[OrderBy],
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<Run>, bool), Error> {
        let mut sql = Sql::new(self.backend());
        // The joins of the order keys come before the WHERE clause in the query, so they bind first.
        let mut joins = String::new();
        let mut orders = Vec::new();
        for (i, o) in order.iter().enumerate() {
            let dir = if o.ascending { "ASC" } else { "DESC" };
            let col = match (o.entity, tag_column(o.entity, &o.key)) {
                (_, Some(col)) => col.to_string(),
                (Entity::Attribute, _) if o.key == "status" && scope.status_sort_key.is_some() => {
                    status_sort_text("r.status", scope.status_sort_key.expect("just checked"))
                }
                (Entity::Metric | Entity::Param | Entity::Tag, _) => {
                    let table = match o.entity {
                        Entity::Metric => "latest_metrics",
                        Entity::Param => "params",
                        _ => "run_tags",
                    };
                    let key = sql.bind(Bind::Text(o.key.clone()));
                    joins.push_str(&format!(
                        " LEFT JOIN {table} o{i} ON o{i}.run_id = r.id AND o{i}.key = {key}"
                    ));
                    format!("o{i}.value")
                }
                (Entity::Attribute, _) => attribute_sql(&o.key).to_string(),
                (Entity::Dataset, _) => unreachable!("parser refuses ordering by datasets"),
                (Entity::Metadata | Entity::Span, _) => {
                    unreachable!("the run parser refuses request_metadata. and span.")
                }
            };
            // Runs without the value sort last, whatever the direction (as in MLflow), and a
            // NaN metric (NULL in a row that is there) just before them.
            let rank = if o.entity == Entity::Metric {
                format!("CASE WHEN o{i}.run_id IS NULL THEN 2 WHEN {} THEN 1 ELSE 0 END", is_nan(&col))
            } else {
                format!("CASE WHEN {col} IS NULL THEN 1 ELSE 0 END")
            };
            orders.push(format!("{rank}, {col} {dir}"));
        }
        let ws_p = sql.bind(Bind::Text(ws.id.clone()));
        let mut wheres = vec![format!("r.workspace_id = {ws_p}")];
        match scope.deleted {
            Some(false) => wheres.push("r.deleted_at IS NULL".to_string()),
            Some(true) => wheres.push("r.deleted_at IS NOT NULL".to_string()),
            None => {}
        }
        let mut any_of = Vec::new();
        for e in &scope.experiment_names {
            let p = sql.bind(Bind::Text(e.to_string()));
            any_of.push(format!("e.name = {p}"));
        }
        for e in scope.experiment_ids {
            let p = sql.bind(Bind::Text(e.to_string()));
            any_of.push(format!("e.id = {p}"));
        }
        if !any_of.is_empty() {
            wheres.push(format!("({})", any_of.join(" OR ")));
        }
        for c in clauses {
            wheres.push(sql.clause(c));
        }
        orders.push("r.created_at DESC, r.id DESC".into());
        let from = format!("runs r JOIN experiments e ON e.id = r.experiment_id{joins}");
        let (ids, more) = self.page_of_ids(sql, "r.id", &from, &wheres, &orders, offset, limit).await?;
        Ok((self.runs_by_ids(ws, &ids).await?, more))
    }

    /// The ids (`id_col`) of one page of a search built in `sql`: `SELECT … FROM from WHERE
    /// wheres ORDER BY orders`, `limit` from `offset`; and whether more follow.
    #[allow(clippy::too_many_arguments)]
    async fn page_of_ids(
        &self,
        mut sql: Sql,
        id_col: &str,
        from: &str,
        wheres: &[String],
        orders: &[String],
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<String>, bool), Error> {
        let lim = sql.bind(Bind::Int(limit + 1));
        let off = sql.bind(Bind::Int(offset));
        let query = format!(
            "SELECT {id_col} AS id FROM {from} WHERE {} ORDER BY {} LIMIT {lim} OFFSET {off}",
            wheres.join(" AND "),
            orders.join(", ")
        );
        let mut q = sqlx::query(&query);
        for b in &sql.binds {
            q = match b {
                Bind::Text(t) => q.bind(t.clone()),
                Bind::Number(n) => q.bind(*n),
                Bind::Int(i) => q.bind(*i),
            };
        }
        let rows = q.fetch_all(&self.pool).await.map_err(map_err)?;
        let mut ids: Vec<String> =
            rows.iter().map(|r| r.try_get("id")).collect::<Result<_, _>>().map_err(map_err)?;
        let more = ids.len() as i64 > limit;
        ids.truncate(limit as usize);
        Ok((ids, more))
    }

    async fn fetch_in(&self, sql: &str, ids: &[String]) -> Result<Vec<sqlx::any::AnyRow>, Error> {
        let mut q = sqlx::query(sql);
        for id in ids {
            q = q.bind(id.clone());
        }
        q.fetch_all(&self.pool).await.map_err(map_err)
    }

    /// Loads runs (with params, tags, latest metrics and transitions) in a few bulk queries,
    /// keeping the order of `ids`.
    pub async fn runs_by_ids(&self, ws: &Workspace, ids: &[String]) -> Result<Vec<Run>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = in_list(self.backend(), ids.len());
        let base_sql = format!(
            "SELECT r.id, e.name AS experiment, r.parent_id, r.display_name, r.status, r.job, r.compute, r.environment, \
             r.error, r.created_at, r.started_at, r.ended_at, r.created_by FROM runs r JOIN experiments e ON e.id = r.experiment_id \
             WHERE r.id IN ({list})"
        );
        let grouped = |table: &str, columns: &[&str]| grouped_rows(self.backend(), table, columns, &list);
        let params_sql = grouped("params", &["key", "value"]);
        let tags_sql = grouped("run_tags", &["key", "value"]);
        let props_sql = grouped("run_properties", &["key", "value"]);
        let value = exact_real(self.backend(), "value");
        let metrics_sql = grouped("latest_metrics", &["key", &value, "step", "timestamp"]);
        let transitions_sql =
            format!("SELECT run_id, status, at FROM run_transitions WHERE run_id IN ({list}) ORDER BY at");
        // Independent reads on separate pooled connections: on SQLite each connection has its own
        // worker thread, so the reads overlap, and the page costs about its largest read.
        let (base, params, tags, props, metrics, transitions) = tokio::try_join!(
            self.fetch_in(&base_sql, ids),
            self.fetch_in(&params_sql, ids),
            self.fetch_in(&tags_sql, ids),
            self.fetch_in(&props_sql, ids),
            self.fetch_in(&metrics_sql, ids),
            self.fetch_in(&transitions_sql, ids),
        )?;
        let mut runs: HashMap<String, Run> = HashMap::new();
        for row in &base {
            let run = crate::runs::run_from_row(row, &ws.name)?;
            runs.insert(run.id.clone(), run);
        }
        type Field = fn(&mut Run) -> &mut std::collections::BTreeMap<String, String>;
        let fields: [(_, Field); 3] =
            [(params, |r| &mut r.params), (tags, |r| &mut r.tags), (props, |r| &mut r.properties)];
        for (rows, field) in fields {
            for r in rows {
                let id: String = r.try_get("run_id").map_err(map_err)?;
                if let Some(run) = runs.get_mut(&id) {
                    field(run).extend(parse_group::<(String, String)>(&r)?);
                }
            }
        }
        for r in metrics {
            let id: String = r.try_get("run_id").map_err(map_err)?;
            let Some(run) = runs.get_mut(&id) else { continue };
            let points: Vec<(String, Option<String>, i64, i64)> = parse_group(&r)?;
            for (key, value, step, timestamp) in points {
                let value = match value {
                    None => f64::NAN,
                    Some(text) => text.parse().map_err(|_| {
                        Error::internal(format!("metric {key:?} of run {id}: unreadable value {text:?}"))
                    })?,
                };
                run.metrics.insert(key, MetricPoint { value, step, timestamp });
            }
        }
        for r in transitions {
            let id: String = r.try_get("run_id").map_err(map_err)?;
            if let Some(run) = runs.get_mut(&id) {
                let s: String = r.try_get("status").map_err(map_err)?;
                if let Some(status) = cairn_core::runs::RunStatus::parse(&s) {
                    run.transitions.push(Transition { status, at: r.try_get("at").map_err(map_err)? });
                }
            }
        }
        Ok(ids.iter().filter_map(|id| runs.remove(id)).collect())
    }
}

/// A trace attribute's SQL over `traces t` (`run_id` is [`trace_run_test`]'s).
fn trace_attribute_sql(key: &str) -> &'static str {
    match trace_attribute(key).expect("parser checked") {
        "trace_id" => "t.id",
        "status" => "t.state",
        "client_request_id" => "t.client_request_id",
        "experiment_id" => "t.experiment_id",
        "timestamp_ms" => "t.request_time",
        "execution_time_ms" => "t.execution_duration",
        "end_time_ms" => "(t.request_time + t.execution_duration)",
        "name" => {
            "(SELECT n.value FROM trace_tags n WHERE n.workspace_id = t.workspace_id AND n.trace_id = t.id \
             AND n.key = 'mlflow.traceName')"
        }
        _ => "t.source_run_id",
    }
}

/// The runs a trace is linked to (beside the one it was logged in), for `run_id` tests.
const TRACE_LINKS: &str =
    "FROM trace_run_links l WHERE l.workspace_id = t.workspace_id AND l.trace_id = t.id";

impl Sql {
    /// `run_id` of a trace: the run it was logged in or any it was linked to, as in MLflow. A
    /// positive test holds when one of them passes, `!=` and `NOT IN` when the trace has a run
    /// and all of them pass.
    fn trace_run_test(&mut self, c: &Clause) -> String {
        if matches!(c.op, Op::Ne | Op::NotIn) {
            let own = self.text_test("t.source_run_id", c);
            let linked = self.text_test("l.run_id", c);
            format!(
                "((t.source_run_id IS NOT NULL OR EXISTS (SELECT 1 {TRACE_LINKS})) \
                 AND (t.source_run_id IS NULL OR {own}) AND NOT EXISTS (SELECT 1 {TRACE_LINKS} AND NOT ({linked})))"
            )
        } else {
            let own = self.text_test("t.source_run_id", c);
            let linked = self.text_test("l.run_id", c);
            format!("({own} OR EXISTS (SELECT 1 {TRACE_LINKS} AND {linked}))")
        }
    }

    /// A span attribute as text, from the span's stored dict (where each attribute is
    /// JSON-encoded): a string as itself, anything else as its JSON (`12`, `true`, `{"a":1}`).
    /// The parser keeps `"` and `\` out of the name.
    fn span_attribute(&mut self, attr: &str) -> String {
        match self.backend {
            Backend::Sqlite => {
                // SQLite's placeholders are positional: one bound path per use, in text order.
                let path = format!("$.attributes.\"{attr}\"");
                let raw: Vec<String> = (0..4)
                    .map(|_| format!("json_extract(s.content, {})", self.bind(Bind::Text(path.clone()))))
                    .collect();
                format!(
                    "(CASE WHEN json_valid({}) AND json_type({}) = 'text' THEN json_extract({}, '$') ELSE {} END)",
                    raw[0], raw[1], raw[2], raw[3]
                )
            }
            Backend::Postgres => {
                let key = self.bind(Bind::Text(attr.to_string()));
                let raw = format!("(s.content::jsonb -> 'attributes' ->> {key})");
                format!("(CASE WHEN jsonb_typeof({raw}::jsonb) = 'string' THEN {raw}::jsonb #>> '{{}}' ELSE {raw} END)")
            }
        }
    }

    fn trace_clause(&mut self, c: &Clause) -> String {
        let run_metadata = c.entity == Entity::Metadata && c.key == crate::traces::SOURCE_RUN;
        match c.entity {
            // As in MLflow, the source-run metadata also matches the runs a trace was linked to.
            _ if run_metadata && !matches!(c.op, Op::IsNull | Op::IsNotNull) => self.trace_run_test(c),
            Entity::Tag | Entity::Metadata => {
                let table = if c.entity == Entity::Tag { "trace_tags" } else { "trace_metadata" };
                let key = self.bind(Bind::Text(c.key.clone()));
                let from = format!(
                    "FROM {table} x WHERE x.workspace_id = t.workspace_id AND x.trace_id = t.id AND x.key = {key}"
                );
                match c.op {
                    Op::IsNull => format!("NOT EXISTS (SELECT 1 {from})"),
                    Op::IsNotNull => format!("EXISTS (SELECT 1 {from})"),
                    _ => {
                        let test = self.text_test("x.value", c);
                        format!("EXISTS (SELECT 1 {from} AND {test})")
                    }
                }
            }
            // Any of the trace's spans kept here (those that came over OTLP), as MLflow's.
            Entity::Span => {
                let column = match (c.key.as_str(), c.key.strip_prefix("attributes.")) {
                    ("type", _) => "s.span_type".to_string(),
                    ("status", _) => "s.status".to_string(),
                    ("content", _) => "s.content".to_string(),
                    (_, Some(attr)) => self.span_attribute(attr),
                    _ => "s.name".to_string(),
                };
                let test = self.text_test(&column, c);
                format!(
                    "EXISTS (SELECT 1 FROM trace_spans s WHERE s.workspace_id = t.workspace_id \
                     AND s.trace_id = t.id AND {test})"
                )
            }
            _ if trace_attribute(&c.key) == Some("run_id") => self.trace_run_test(c),
            // Times compare as numbers, fractions kept (`execution_time_ms < 0.5`).
            _ => match c.value {
                Value::Number(n) => {
                    let v = self.bind(Bind::Number(n));
                    format!("{} {} {v}", trace_attribute_sql(&c.key), c.op.sql())
                }
                _ => self.text_test(trace_attribute_sql(&c.key), c),
            },
        }
    }
}

impl Store {
    /// Traces of `ws` in the given experiments matching every clause (MLflow's trace grammar,
    /// `cairn_core::search::parse_trace_filter`), ordered by `order` (values a trace lacks last),
    /// then newest first; one page (`offset`, `limit`). Returns the traces and whether more follow.
    pub async fn search_traces(
        &self,
        ws: &Workspace,
        experiment_ids: &[String],
        clauses: &[Clause],
        order: &[OrderBy],
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<crate::TraceRecord>, bool), Error> {
        let mut sql = Sql::new(self.backend());
        // The joins of the order keys come before the WHERE clause in the query, so they bind first.
        let mut joins = String::new();
        let mut orders = Vec::new();
        for (i, o) in order.iter().enumerate() {
            let col = match o.entity {
                Entity::Tag | Entity::Metadata => {
                    let table = if o.entity == Entity::Tag { "trace_tags" } else { "trace_metadata" };
                    let key = sql.bind(Bind::Text(o.key.clone()));
                    joins.push_str(&format!(
                        " LEFT JOIN {table} o{i} ON o{i}.workspace_id = t.workspace_id AND o{i}.trace_id = t.id \
                         AND o{i}.key = {key}"
                    ));
                    format!("o{i}.value")
                }
                _ => trace_attribute_sql(&o.key).to_string(),
            };
            let dir = if o.ascending { "ASC" } else { "DESC" };
            orders.push(format!("CASE WHEN {col} IS NULL THEN 1 ELSE 0 END, {col} {dir}"));
        }
        let ws_p = sql.bind(Bind::Text(ws.id.clone()));
        let mut wheres = vec![format!("t.workspace_id = {ws_p}")];
        if !experiment_ids.is_empty() {
            let ps: Vec<String> = experiment_ids.iter().map(|e| sql.bind(Bind::Text(e.clone()))).collect();
            wheres.push(format!("t.experiment_id IN ({})", ps.join(", ")));
        }
        for c in clauses {
            wheres.push(sql.trace_clause(c));
        }
        orders.push("t.request_time DESC, t.id ASC".into());
        let from = format!("traces t{joins}");
        let (ids, more) = self.page_of_ids(sql, "t.id", &from, &wheres, &orders, offset, limit).await?;
        // Loaded newest first; put back in the search's order.
        let mut traces = self.traces(ws, Some(&ids), &[]).await?;
        let rank: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
        traces.sort_by_key(|t| rank.get(t.id.as_str()).copied().unwrap_or(usize::MAX));
        Ok((traces, more))
    }
}

/// Column `column` (a double) as exact text, for a JSON row: JSON numbers cannot hold ±Inf, and
/// SQLite's JSON numbers keep 15 significant digits, not the 17 that bring every double back
/// unchanged. NULL (how a NaN is stored) stays NULL.
fn exact_real(backend: Backend, column: &str) -> String {
    match backend {
        Backend::Sqlite => {
            format!("CASE WHEN {column} IS NULL THEN NULL ELSE printf('%!.17g', {column}) END")
        }
        Backend::Postgres => format!("{column}::text"),
    }
}

/// `SELECT run_id, rows FROM table WHERE run_id IN (list) GROUP BY run_id`, where `rows` is the
/// JSON text of an array of `[column, …]` arrays: one result row per run however many values it
/// has. Rows cost more than values here: on SQLite, sqlx hands every result row from the
/// connection's worker thread to the async task through a small channel, a few µs each, and a
/// page of 100 runs has thousands of params and metrics.
fn grouped_rows(backend: Backend, table: &str, columns: &[&str], list: &str) -> String {
    let columns = columns.join(", ");
    let rows = match backend {
        Backend::Sqlite => format!("json_group_array(json_array({columns}))"),
        Backend::Postgres => format!("json_agg(json_build_array({columns}))::text"),
    };
    format!("SELECT run_id, {rows} AS rows FROM {table} WHERE run_id IN ({list}) GROUP BY run_id")
}

/// The `rows` column of a `grouped_rows` result.
fn parse_group<T: serde::de::DeserializeOwned>(row: &sqlx::any::AnyRow) -> Result<Vec<T>, Error> {
    let text: String = row.try_get("rows").map_err(map_err)?;
    serde_json::from_str(&text).map_err(|e| Error::internal(format!("unreadable grouped rows: {e}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_patterns_become_globs_matching_the_same_texts() {
        assert_eq!(super::like_to_glob("w%_x"), "w*?x");
        assert_eq!(super::like_to_glob("a*b?[c]"), "a[*]b[?][[]c]");
    }
}
