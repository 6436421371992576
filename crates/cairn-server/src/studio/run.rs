//! The run page (`/w/{ws}/runs/{id}`): overview with the status timeline, params, tags, one chart
//! per metric (drawn by `charts.js` from the series route), logged tables, MLflow traces, images, the outputs
//! browser, the code snapshot, and the log (tailed live while the run has not ended). Also the
//! downloads of a run's artifacts and code files.
//!
//! Tables are those MLflow's `log_table` writes: a JSON artifact in pandas' `split` layout
//! (`{"columns": [...], "data": [[...], ...]}`) listed in the run's `mlflow.loggedArtifacts` tag
//! as `{"path": ..., "type": "table"}`. The in-job runtime's `log_table`/`log_row` log metrics
//! (`TABLE.COLUMN` stepped by row), which are charted with the other metrics.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cairn_core::api::FileEntry;
use cairn_core::runs::{JobInput, Run, SnapshotFile, SubmitJob};
use cairn_core::{Error, RelPath};
use maud::{html, Markup};

use super::layout::{self, path_url, seg, Nav, OrPage, PageResult};
use super::session::Session;
use crate::state::AppState;

/// How much of the log the page shows at first (the rest is a download or a scroll away).
const LOG_TAIL_BYTES: u64 = 64 * 1024;
/// Most artifacts listed on the page.
const MAX_LISTED: usize = 2000;
/// Most logged tables shown on the page.
const MAX_TABLES: usize = 10;
/// Rows of a table shown on the page (the whole table is a download away).
const TABLE_ROWS: usize = 100;
/// Columns of a table shown on the page.
const TABLE_COLUMNS: usize = 50;
/// Larger table files are not read for the page (every view parses them), only offered as
/// downloads.
const MAX_TABLE_BYTES: u64 = 2 * 1024 * 1024;
/// Characters of a cell shown (the rest is cut, with an ellipsis).
const CELL_CHARS: usize = 300;
/// The tag in which MLflow lists the tables (and other typed artifacts) a run logged.
const LOGGED_ARTIFACTS_TAG: &str = "mlflow.loggedArtifacts";
/// The tag in which the in-job runtime lists the tables logged with `log_row`/`log_table`
/// (stored as metrics `NAME.COLUMN`, one step per row).
const RUNTIME_TABLES_TAG: &str = "cairn.tables";

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/w/{ws}/runs/{id}", get(show))
        .route("/w/{ws}/runs/{id}/artifacts/{*path}", get(artifact))
        .route("/w/{ws}/runs/{id}/code/{*path}", get(code_file))
}

fn run_url(ws: &str, id: &str) -> String {
    format!("{}/runs/{}", layout::ws_url(ws), seg(id))
}

/// A relative path with each segment percent-encoded (for links to files).
fn is_image(path: &str) -> bool {
    let p = path.to_ascii_lowercase();
    [".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg"].iter().any(|e| p.ends_with(e))
}

/// Content type for a download: images are shown inline, everything else is an attachment.
fn content_type(path: &str) -> (&'static str, bool) {
    let p = path.to_ascii_lowercase();
    let ext = p.rsplit('.').next().unwrap_or("");
    match ext {
        "png" => ("image/png", true),
        "jpg" | "jpeg" => ("image/jpeg", true),
        "gif" => ("image/gif", true),
        "webp" => ("image/webp", true),
        "svg" => ("image/svg+xml", true),
        "json" => ("application/json", false),
        "txt" | "log" | "csv" | "py" | "yaml" | "yml" | "md" | "toml" => ("text/plain; charset=utf-8", false),
        _ => ("application/octet-stream", false),
    }
}

/// A streamed download. The sandbox policy keeps a served file (an SVG, say) from running
/// script in the studio's origin.
fn download(
    path: &str,
    size: u64,
    stream: futures::stream::BoxStream<'static, Result<bytes::Bytes, Error>>,
) -> Response {
    let (ctype, inline) = content_type(path);
    let name = path.rsplit('/').next().unwrap_or(path).replace(['"', '\\', '\r', '\n'], "_");
    let disposition = if inline {
        format!("inline; filename=\"{name}\"")
    } else {
        format!("attachment; filename=\"{name}\"")
    };
    (
        [
            (header::CONTENT_TYPE, ctype.to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
            (
                header::CONTENT_SECURITY_POLICY,
                "sandbox; default-src 'none'; img-src 'self'; style-src 'unsafe-inline'".to_string(),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
            (header::CACHE_CONTROL, "private, no-cache".to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn artifact(
    s: Session,
    State(state): State<Arc<AppState>>,
    Path((ws, id, path)): Path<(String, String, String)>,
) -> PageResult {
    let workspace = super::open_workspace(&state, &s, &ws).await?;
    state.store.run(&workspace, &id).await.or_page(&s)?;
    let rel = RelPath::parse(&path).or_page(&s)?;
    let (size, stream) =
        crate::routes::runs::artifacts_of(&state, &workspace.id, &id).get_stream(&rel).await.or_page(&s)?;
    Ok(download(&path, size, stream))
}

async fn code_file(
    s: Session,
    State(state): State<Arc<AppState>>,
    Path((ws, id, path)): Path<(String, String, String)>,
) -> PageResult {
    let workspace = super::open_workspace(&state, &s, &ws).await?;
    let run = state.store.run(&workspace, &id).await.or_page(&s)?;
    let rel = RelPath::parse(&path).or_page(&s)?;
    let files = snapshot_files(&state, &workspace.id, &run).await.or_page(&s)?.unwrap_or_default();
    let file = files
        .iter()
        .find(|f| f.path == rel.as_str())
        .ok_or_else(|| Error::not_found("file of the code snapshot", rel.as_str()))
        .or_page(&s)?;
    let blob = RelPath::parse(&file.sha256.to_lowercase()).or_page(&s)?;
    let (size, stream) =
        crate::routes::jobs::blobs_of(&state, &workspace.id).get_stream(&blob).await.or_page(&s)?;
    Ok(download(&file.path, size, stream))
}

fn job_of(run: &Run) -> Option<SubmitJob> {
    run.job.as_ref().and_then(|j| serde_json::from_value(j.clone()).ok())
}

/// The files of the run's code snapshot, if it was a job with one.
async fn snapshot_files(
    state: &AppState,
    ws_id: &str,
    run: &Run,
) -> Result<Option<Vec<SnapshotFile>>, Error> {
    match job_of(run).and_then(|j| j.snapshot) {
        Some(id) => Ok(Some(crate::routes::jobs::read_snapshot(state, ws_id, &id).await?)),
        None => Ok(None),
    }
}

/// The last `LOG_TAIL_BYTES` of the run's log and the offset after it (`None` without a log).
async fn log_tail(state: &AppState, run_id: &str) -> Result<Option<(String, u64, bool)>, Error> {
    use std::io::{Read, Seek, SeekFrom};
    let path = crate::jobs::runner::log_path(state, run_id);
    tokio::task::spawn_blocking(move || -> std::io::Result<Option<(String, u64, bool)>> {
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        let start = len.saturating_sub(LOG_TAIL_BYTES);
        f.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::new();
        f.take(len - start).read_to_end(&mut buf)?;
        let next = start + buf.len() as u64;
        Ok(Some((String::from_utf8_lossy(&buf).into_owned(), next, start > 0)))
    })
    .await
    .map_err(Error::internal)?
    .map_err(Error::internal)
}

async fn show(
    s: Session,
    State(state): State<Arc<AppState>>,
    Path((ws, id)): Path<(String, String)>,
) -> PageResult {
    let workspace = super::open_workspace(&state, &s, &ws).await?;
    let run = state.store.run(&workspace, &id).await.or_page(&s)?;
    let children = state.store.list_runs(&workspace, None, Some(&id), 200).await.or_page(&s)?;
    let artifacts: Vec<FileEntry> = crate::routes::runs::artifacts_of(&state, &workspace.id, &id)
        .list(&RelPath::parse_dir("").or_page(&s)?)
        .await
        .or_page(&s)?;
    let code = match snapshot_files(&state, &workspace.id, &run).await {
        Ok(c) => c,
        // A missing manifest should not hide the rest of the run.
        Err(e) => {
            tracing::warn!(run = %id, error = %e, "code snapshot unreadable");
            None
        }
    };
    let log = log_tail(&state, &id).await.or_page(&s)?;
    let tables = read_tables(&state, &workspace.id, &run, &artifacts).await;
    let traces = state.store.traces_of_run(&workspace, &id, super::traces::RUN_TRACES).await.or_page(&s)?;
    let body = html! {
        h1 { (run.display_name) " " span #run-status data-live-run=[(!run.status.is_terminal()).then_some(&run.id)] data-run-id=(run.id) { (layout::status_badge(run.status)) } }
        p.muted { "Run " code { (run.id) } " in experiment "
            a href={ (layout::ws_url(&ws)) "/experiments/" (seg(&run.experiment)) } { (run.experiment) } }
        (overview(&ws, &run, &children))
        div.grid-2 {
            section #params {
                h2 { "Params" }
                @if run.params.is_empty() { (layout::empty("No params.")) } @else {
                    div.table-wrap { table #params-table .kv {
                        thead { tr { th scope="col" { "Name" } th scope="col" { "Value" } } }
                        tbody { @for (k, v) in &run.params { tr data-param=(k) { th scope="row" { (k) } td.mono { (v) } } } }
                    } }
                }
            }
            section #tags {
                h2 { "Tags" }
                @if run.tags.is_empty() { (layout::empty("No tags.")) } @else {
                    div.table-wrap { table #tags-table .kv {
                        thead { tr { th scope="col" { "Name" } th scope="col" { "Value" } } }
                        tbody { @for (k, v) in &run.tags { tr { th scope="row" { (k) } td { (v) } } } }
                    } }
                }
                @if !run.properties.is_empty() {
                    h3 { "Properties" }
                    div.table-wrap { table.kv { tbody { @for (k, v) in &run.properties { tr { th scope="row" { (k) } td { (v) } } } } } }
                }
            }
        }
        (metrics(&ws, &run))
        (tables_section(&ws, &run.id, &tables))
        (super::traces::run_section(&ws, &run.id, &traces))
        (images(&ws, &run.id, &artifacts))
        (outputs(&ws, &run.id, &artifacts))
        (code_section(&ws, &run.id, code.as_deref()))
        (logs(&ws, &run, log))
        script src=(super::asset_url("charts.js")) defer {}
    };
    Ok(layout::page(&s, Some(&ws), Nav::Runs, &format!("Run {}", run.display_name), body).into_response())
}

fn overview(ws: &str, run: &Run, children: &[Run]) -> Markup {
    let job = job_of(run);
    html! {
        section #run-overview {
            h2 { "Overview" }
            h3 { "Status timeline" }
            @if run.transitions.is_empty() { (layout::empty("No transitions recorded.")) } @else {
                ol.timeline aria-label="Status timeline" {
                    @for t in &run.transitions {
                        li { (layout::status_badge(t.status)) " " (layout::time_el(t.at)) }
                    }
                }
            }
            dl.facts {
                dt { "Created" } dd { (layout::time_el(run.created_at)) }
                dt { "Started" } dd { @if let Some(t) = run.started_at { (layout::time_el(t)) } @else { "—" } }
                dt { "Ended" } dd { @if let Some(t) = run.ended_at { (layout::time_el(t)) } @else { "—" } }
                dt { "Duration" } dd data-duration { (layout::run_duration(run.started_at, run.ended_at)) }
                @if let Some(j) = &job {
                    dt { "Command" } dd { code { (j.command) } }
                }
                dt { "Environment" } dd {
                    @match run.environment.as_deref().or(job.as_ref().map(|j| j.environment.as_str())) {
                        Some(e) => { a href={ (layout::ws_url(ws)) "/environments/" (seg(e.split('@').next().unwrap_or(e))) } { (e) } }
                        None => { "—" }
                    }
                }
                @if let Some(who) = &run.created_by {
                    dt { "Created by" } dd #created-by { (who) }
                }
                dt { "Compute" } dd {
                    @match &run.compute {
                        Some(c) => { a href={ (layout::ws_url(ws)) "/compute/" (seg(c)) } { (c) } }
                        None => { "—" }
                    }
                }
                @if let Some(j) = &job {
                    @if !j.inputs.is_empty() {
                        dt { "Inputs" } dd { ul { @for (name, input) in &j.inputs {
                            li { code { (name) } ": "
                                @match input {
                                    JobInput::Data(d) => { (d.path) " (" (format!("{:?}", d.mode).to_lowercase()) ")" }
                                    JobInput::Literal(v) => { code { (v.text()) } }
                                }
                            }
                        } } }
                    }
                    @if !j.environment_variables.is_empty() {
                        // Names only: values may be secrets.
                        dt { "Environment variables" } dd { @for k in j.environment_variables.keys() { code { (k) } " " } }
                    }
                }
                dt { "Parent run" } dd {
                    @match &run.parent_id {
                        Some(p) => { a #parent-run href=(run_url(ws, p)) { (p) } }
                        None => { "—" }
                    }
                }
                @if !children.is_empty() {
                    dt { "Child runs" } dd { ul #child-runs { @for c in children {
                        li { a href=(run_url(ws, &c.id)) { (c.display_name) } " " (layout::status_badge(c.status)) }
                    } } }
                }
            }
            @if let Some(e) = &run.error {
                h3 { "Error" }
                pre.log #run-error { (e) }
            }
        }
    }
}

fn metrics(ws: &str, run: &Run) -> Markup {
    html! {
        section #metrics {
            h2 { "Metrics" }
            @if run.metrics.is_empty() { (layout::empty("No metrics logged.")) } @else {
                div.cards {
                    @for (key, last) in &run.metrics {
                        figure.metric-chart data-metric=(key) data-run=(run.id)
                            data-series-url={ (run_url(ws, &run.id)) "/metrics/" (seg(key)) "/series" } {
                            figcaption { (key) " " span.muted { "latest " (layout::fmt_value(last.value)) " at step " (last.step) } }
                        }
                    }
                }
            }
        }
    }
}

/// The artifact paths of the tables the run logged (from the `mlflow.loggedArtifacts` tag),
/// in the order logged, without repeats.
fn logged_tables(run: &Run) -> Vec<String> {
    let Some(tag) = run.tags.get(LOGGED_ARTIFACTS_TAG) else { return Vec::new() };
    let Ok(serde_json::Value::Array(items)) = serde_json::from_str(tag) else { return Vec::new() };
    let mut paths: Vec<String> = Vec::new();
    for item in &items {
        if item["type"] == "table" {
            if let Some(p) = item["path"].as_str() {
                if !paths.iter().any(|q| q == p) {
                    paths.push(p.to_string());
                }
            }
        }
    }
    paths
}

/// The names of the tables the run logged through the in-job runtime (the `cairn.tables` tag).
fn runtime_tables(run: &Run) -> Vec<String> {
    let Some(tag) = run.tags.get(RUNTIME_TABLES_TAG) else { return Vec::new() };
    serde_json::from_str::<Vec<String>>(tag).unwrap_or_default()
}

/// The first rows of a logged table.
#[derive(Debug, PartialEq)]
struct TablePreview {
    columns: Vec<String>,
    rows: Vec<Vec<serde_json::Value>>,
    total_rows: usize,
    total_columns: usize,
}

/// Reads a table in pandas' `split` layout; `Err` says why the file is not one.
fn parse_table(bytes: &[u8]) -> Result<TablePreview, String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON ({e})"))?;
    let (Some(columns), Some(data)) = (v["columns"].as_array(), v["data"].as_array()) else {
        return Err("not a table: no \"columns\" and \"data\" lists".into());
    };
    let name = |c: &serde_json::Value| c.as_str().map(str::to_string).unwrap_or_else(|| c.to_string());
    let rows = data
        .iter()
        .take(TABLE_ROWS)
        .map(|row| match row.as_array() {
            Some(cells) => Ok(cells.iter().take(TABLE_COLUMNS).cloned().collect()),
            None => Err("not a table: a row is not a list".to_string()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TablePreview {
        columns: columns.iter().take(TABLE_COLUMNS).map(name).collect(),
        rows,
        total_rows: data.len(),
        total_columns: columns.len(),
    })
}

/// A logged table as the page shows it: its file (or its name, for the runtime's tables, which
/// are metrics), and its first rows or why they are not shown.
struct LoggedTable {
    path: String,
    size: Option<u64>,
    preview: Result<TablePreview, String>,
    /// Logged with the runtime's `log_row`/`log_table`: no file to download.
    from_metrics: bool,
}

/// Reads the run's logged tables (at most [`MAX_TABLES`]). A table that cannot be read is shown
/// with the reason, never hides the page.
async fn read_tables(state: &AppState, ws_id: &str, run: &Run, artifacts: &[FileEntry]) -> Vec<LoggedTable> {
    let blobs = crate::routes::runs::artifacts_of(state, ws_id, &run.id);
    let mut out = Vec::new();
    for path in logged_tables(run).into_iter().take(MAX_TABLES) {
        let size = artifacts.iter().find(|a| a.path == path).map(|a| a.size);
        let preview = match size {
            None => Err("the file is not among the run's outputs".to_string()),
            Some(n) if n > MAX_TABLE_BYTES => {
                Err(format!("{} is too large to preview here: download it", layout::fmt_bytes(n)))
            }
            Some(_) if !path.to_ascii_lowercase().ends_with(".json") => {
                Err("only JSON tables are previewed: download it".to_string())
            }
            Some(_) => match read_small(&blobs, &path, MAX_TABLE_BYTES).await {
                Ok(bytes) => parse_table(&bytes),
                Err(e) => {
                    tracing::warn!(run = %run.id, %path, error = %e, "logged table unreadable");
                    Err(format!("could not be read: {e}"))
                }
            },
        };
        out.push(LoggedTable { path, size, preview, from_metrics: false });
    }
    for name in runtime_tables(run).into_iter().take(MAX_TABLES.saturating_sub(out.len())) {
        let preview = match state.store.run_metric_table(&run.id, &name, TABLE_ROWS).await {
            Ok((columns, rows, total_rows)) => Ok(TablePreview {
                total_columns: columns.len(),
                columns: columns.into_iter().take(TABLE_COLUMNS).collect(),
                rows: rows
                    .into_iter()
                    .map(|row| {
                        row.into_iter()
                            .take(TABLE_COLUMNS)
                            .map(|v| v.map_or(serde_json::Value::Null, |v| layout::fmt_value(v).into()))
                            .collect()
                    })
                    .collect(),
                total_rows,
            }),
            Err(e) => {
                tracing::warn!(run = %run.id, table = %name, error = %e, "runtime table unreadable");
                Err(format!("could not be read: {e}"))
            }
        };
        out.push(LoggedTable { path: name, size: None, preview, from_metrics: true });
    }
    out
}

/// The whole of a small file (at most `max` bytes; past that, an error).
pub(super) async fn read_small(
    blobs: &cairn_blob::BlobStore,
    path: &str,
    max: u64,
) -> Result<Vec<u8>, Error> {
    use futures::StreamExt;
    let (_, mut stream) = blobs.get_stream(&RelPath::parse(path)?).await?;
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk?);
        if bytes.len() as u64 > max {
            return Err(Error::invalid(format!(
                "the file is past the page's limit of {}",
                layout::fmt_bytes(max)
            )));
        }
    }
    Ok(bytes)
}

/// One cell: text as is (cut when long), numbers and booleans as JSON writes them, images that
/// MLflow saved beside the table as thumbnails, anything else as compact JSON.
fn cell(ws: &str, id: &str, v: &serde_json::Value) -> Markup {
    let text = match v {
        serde_json::Value::Null => return html! { span.muted { "null" } },
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(o) if o.get("type").and_then(|t| t.as_str()) == Some("image") => {
            let file = o.get("compressed_filepath").or_else(|| o.get("filepath")).and_then(|f| f.as_str());
            if let Some(f) = file.filter(|f| RelPath::parse(f).is_ok()) {
                let src = format!("{}/artifacts/{}", run_url(ws, id), path_url(f));
                return html! { img.cell-image src=(src) alt=(f) loading="lazy"; };
            }
            v.to_string()
        }
        other => other.to_string(),
    };
    match text.char_indices().nth(CELL_CHARS) {
        Some((cut, _)) => html! { span title=(text) { (&text[..cut]) "…" } },
        None => html! { (text) },
    }
}

fn tables_section(ws: &str, id: &str, tables: &[LoggedTable]) -> Markup {
    html! {
        @if !tables.is_empty() {
            section #tables {
                h2 { "Tables" }
                @for (i, t) in tables.iter().enumerate() {
                    @let href = format!("{}/artifacts/{}", run_url(ws, id), path_url(&t.path));
                    @let caption_id = format!("logged-table-{i}");
                    div.logged-table data-table=(t.path) {
                        h3 #(caption_id) { (t.path) }
                        @match &t.preview {
                            Ok(p) => {
                                p.hint.table-note {
                                    @if p.total_rows > p.rows.len() {
                                        "First " (p.rows.len()) " of " (p.total_rows) " rows"
                                    } @else {
                                        (p.total_rows) " row" @if p.total_rows != 1 { "s" }
                                    }
                                    @if p.total_columns > p.columns.len() {
                                        ", first " (p.columns.len()) " of " (p.total_columns) " columns"
                                    }
                                    "."
                                }
                                div.table-wrap { table.logged aria-labelledby=(caption_id) {
                                    thead { tr { @for c in &p.columns { th scope="col" { (c) } } } }
                                    tbody { @for row in &p.rows {
                                        tr { @for v in row { td { (cell(ws, id, v)) } } }
                                    } }
                                } }
                            }
                            Err(why) => { p.hint.table-note { "Not shown: " (why) } }
                        }
                        @if t.from_metrics {
                            p.hint { "Logged with " code { "log_row" } "/" code { "log_table" } "; its columns are the metrics "
                                code { (t.path) ".*" } " above, one step per row." }
                        } @else {
                            p { a.table-download href=(href) download {
                                "Download " (t.path) @if let Some(n) = t.size { " (" (layout::fmt_bytes(n)) ")" }
                            } }
                        }
                    }
                }
            }
        }
    }
}

fn images(ws: &str, id: &str, artifacts: &[FileEntry]) -> Markup {
    let imgs: Vec<&FileEntry> = artifacts.iter().filter(|a| is_image(&a.path)).take(24).collect();
    html! {
        @if !imgs.is_empty() {
            section #images {
                h2 { "Images" }
                div.cards {
                    @for a in imgs {
                        figure.image {
                            img src={ (run_url(ws, id)) "/artifacts/" (path_url(&a.path)) } alt=(a.path) loading="lazy";
                            figcaption { (a.path) }
                        }
                    }
                }
            }
        }
    }
}

fn outputs(ws: &str, id: &str, artifacts: &[FileEntry]) -> Markup {
    html! {
        section #outputs {
            h2 { "Outputs" }
            @if artifacts.is_empty() { (layout::empty("No outputs.")) } @else {
                ul.files {
                    @for a in artifacts.iter().take(MAX_LISTED) {
                        li {
                            a.artifact href={ (run_url(ws, id)) "/artifacts/" (path_url(&a.path)) } download { (a.path) }
                            span.muted { (layout::fmt_bytes(a.size)) }
                        }
                    }
                }
                @if artifacts.len() > MAX_LISTED { p.hint { (artifacts.len() - MAX_LISTED) " more not listed." } }
            }
        }
    }
}

fn code_section(ws: &str, id: &str, files: Option<&[SnapshotFile]>) -> Markup {
    html! {
        @if let Some(files) = files {
            section #code {
                h2 { "Code snapshot" }
                @if files.is_empty() { (layout::empty("The snapshot is empty.")) } @else {
                    ul.files {
                        @for f in files.iter().take(MAX_LISTED) {
                            li {
                                a.code-file href={ (run_url(ws, id)) "/code/" (path_url(&f.path)) } download { (f.path) }
                                span.muted { (layout::fmt_bytes(f.size)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn logs(ws: &str, run: &Run, log: Option<(String, u64, bool)>) -> Markup {
    let live = !run.status.is_terminal();
    let api = format!("/api/v1/workspaces/{}/runs/{}/logs", seg(ws), seg(&run.id));
    html! {
        @if log.is_some() || (live && run.job.is_some()) {
            section #logs {
                h2 { "Logs" }
                @let (text, offset, cut) = log.unwrap_or_default();
                @if cut { p.hint { "Showing the end of the log." } }
                pre #run-logs data-logs-url=(api) data-offset=(offset) data-live=(if live { "1" } else { "0" }) tabindex="0" aria-label="Run log" {
                    @if text.is_empty() { span.log-empty.muted { "(nothing logged yet)" } } @else { (text) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_served_safely() {
        assert_eq!(content_type("plots/loss.PNG"), ("image/png", true));
        assert_eq!(content_type("model.pkl"), ("application/octet-stream", false));
        assert_eq!(path_url("a b/c#d.txt"), "a%20b/c%23d.txt");
        assert!(is_image("x/y.svg") && !is_image("x/y.json"));
    }

    #[test]
    fn logged_tables_come_from_the_mlflow_tag_and_parse_in_split_layout() {
        let mut run: Run = serde_json::from_value(serde_json::json!({
            "id": "r", "workspace": "w", "experiment": "e", "display_name": "r", "status": "Completed", "created_at": 0
        }))
        .expect("a minimal run");
        assert!(logged_tables(&run).is_empty());
        run.tags.insert(
            LOGGED_ARTIFACTS_TAG.into(),
            r#"[{"path": "a.json", "type": "table"}, {"path": "p.png", "type": "image"},
                {"path": "a.json", "type": "table"}, {"path": "b/c.json", "type": "table"}]"#
                .into(),
        );
        assert_eq!(logged_tables(&run), ["a.json", "b/c.json"]);
        run.tags.insert(LOGGED_ARTIFACTS_TAG.into(), "not json".into());
        assert!(logged_tables(&run).is_empty());

        let data: Vec<String> = (0..150).map(|i| format!("[{i}, \"r{i}\", null]")).collect();
        let json = format!(r#"{{"columns": ["n", "name", 3], "data": [{}]}}"#, data.join(","));
        let t = parse_table(json.as_bytes()).unwrap();
        assert_eq!(t.columns, ["n", "name", "3"]);
        assert_eq!((t.rows.len(), t.total_rows, t.total_columns), (TABLE_ROWS, 150, 3));
        assert_eq!(t.rows[1], vec![serde_json::json!(1), serde_json::json!("r1"), serde_json::Value::Null]);
        assert!(parse_table(b"{\"columns\": []}").unwrap_err().contains("not a table"));
        assert!(parse_table(b"{\"columns\": [], \"data\": [1]}").unwrap_err().contains("not a list"));
        assert!(parse_table(b"[1").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn cells_are_cut_and_images_must_be_run_paths() {
        let long = "é".repeat(CELL_CHARS + 5);
        let shown = cell("w", "r", &serde_json::json!(long)).into_string();
        assert!(shown.contains('…') && shown.matches('é').count() == 2 * CELL_CHARS + 5, "{shown}");
        let img =
            cell("w", "r", &serde_json::json!({"type": "image", "filepath": "t/x y.png"})).into_string();
        assert!(img.contains(r#"src="/w/w/runs/r/artifacts/t/x%20y.png""#), "{img}");
        let bad = cell("w", "r", &serde_json::json!({"type": "image", "filepath": "../x.png"})).into_string();
        assert!(!bad.contains("<img"), "{bad}");
        assert_eq!(cell("w", "r", &serde_json::json!("<b>")).into_string(), "&lt;b&gt;");
    }
}
