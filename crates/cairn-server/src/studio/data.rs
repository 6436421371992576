//! Studio pages of datastores: the list (kind, location, file count, total size) and a folder
//! browser, one level per page, with breadcrumbs, folder sizes and file downloads.
//!
//! Every path from the URL goes through `RelPath::parse_dir` before it reaches the blob store, so
//! `..` and friends are refused here as everywhere else. Files download through the files API
//! (`…/datastores/DS/files/PATH`), which accepts the session cookie for GET.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use axum::Router;
use cairn_core::api::{DatastoreKind, FileEntry, Workspace};
use cairn_core::{Error, RelPath};
use maud::{html, Markup};

use super::layout::{self, path_url, Nav, OrPage, PageResult};
use super::open_workspace;
use super::session::Session;
use crate::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/w/{ws}/data", get(list))
        .route("/w/{ws}/data/{ds}", get(root))
        .route("/w/{ws}/data/{ds}/", get(root))
        .route("/w/{ws}/data/{ds}/{*path}", get(folder))
}

/// Count and total size of a set of files.
#[derive(Default, Clone, Copy)]
struct Totals {
    files: u64,
    bytes: u64,
}

impl Totals {
    fn add(&mut self, size: u64) {
        self.files += 1;
        self.bytes += size;
    }
}

fn totals(files: &[FileEntry]) -> Totals {
    let mut t = Totals::default();
    for f in files {
        t.add(f.size);
    }
    t
}

async fn list(State(state): State<Arc<AppState>>, s: Session, Path(ws): Path<String>) -> PageResult {
    let workspace = open_workspace(&state, &s, &ws).await?;
    let body = list_body(&state, &workspace).await.or_page(&s)?;
    Ok(layout::page(&s, Some(&ws), Nav::Data, "Data", body).into_response())
}

async fn list_body(state: &AppState, workspace: &Workspace) -> Result<Markup, Error> {
    let ws = &workspace.name;
    let page = state.store.list_datastores(workspace, None, Some(cairn_store::MAX_PAGE_SIZE)).await?;
    let mut rows = Vec::new();
    for d in page.items {
        // One unreachable bucket must not hide the other datastores.
        let t = match state.blobs_of(&d) {
            Ok(b) => b.list(&RelPath::parse_dir("")?).await.map(|f| totals(&f)),
            Err(e) => Err(e),
        };
        rows.push((d.datastore, t));
    }
    let body = html! {
        h1 { "Data" }
        div.table-wrap { table #datastores-table {
            thead { tr {
                th scope="col" { "Datastore" } th scope="col" { "Kind" } th scope="col" { "Location" }
                th scope="col" { "Files" } th scope="col" { "Size" } th scope="col" { "Created" }
            } }
            tbody { @for (d, t) in &rows {
                tr data-datastore=(d.name) {
                    td { a href=(ds_href(ws, &d.name, "")) { (d.name) } }
                    td { (d.kind.as_str()) }
                    td { @if d.kind == DatastoreKind::Default { "workspace storage" } @else { code { (d.location) } } }
                    @match t {
                        Ok(t) => { td.files { (t.files) } td.size { (layout::fmt_bytes(t.bytes)) } },
                        Err(e) => { td.error colspan="2" { "unavailable: " (e) } },
                    }
                    td { (layout::time_el(d.created_at)) }
                }
            } }
        } }
    };
    Ok(body)
}

/// The studio URL of folder `dir` (`""` for the root) of a datastore.
fn ds_href(ws: &str, ds: &str, dir: &str) -> String {
    let mut href = format!("{}/data/{}", layout::ws_url(ws), layout::seg(ds));
    if !dir.is_empty() {
        href.push('/');
        href.push_str(&path_url(dir));
    }
    href
}

async fn root(
    State(state): State<Arc<AppState>>,
    s: Session,
    Path((ws, ds)): Path<(String, String)>,
) -> PageResult {
    folder_page(&state, &s, &ws, &ds, "").await
}

async fn folder(
    State(state): State<Arc<AppState>>,
    s: Session,
    Path((ws, ds, path)): Path<(String, String, String)>,
) -> PageResult {
    folder_page(&state, &s, &ws, &ds, &path).await
}

async fn folder_page(state: &AppState, s: &Session, ws: &str, ds: &str, raw: &str) -> PageResult {
    let workspace = open_workspace(state, s, ws).await?;
    match browse(state, &workspace, ds, raw).await.or_page(s)? {
        Browsed::Folder { title, body } => {
            Ok(layout::page(s, Some(ws), Nav::Data, &title, body).into_response())
        }
        Browsed::File(href) => Ok(Redirect::to(&href).into_response()),
    }
}

/// What a path in a datastore turned out to be.
enum Browsed {
    Folder {
        title: String,
        body: Markup,
    },
    /// A file: its download URL.
    File(String),
}

/// One level of a folder: its subfolders (with their recursive totals) and its files.
struct Level {
    folders: BTreeMap<String, Totals>,
    files: Vec<FileEntry>,
}

fn one_level(dir: &RelPath, all: Vec<FileEntry>) -> Level {
    let prefix = if dir.is_root() { String::new() } else { format!("{}/", dir.as_str()) };
    let mut level = Level { folders: BTreeMap::new(), files: Vec::new() };
    for f in all {
        let Some(rest) = f.path.strip_prefix(&prefix) else { continue };
        match rest.split_once('/') {
            Some((sub, _)) => level.folders.entry(sub.to_string()).or_default().add(f.size),
            None => level.files.push(f),
        }
    }
    level
}

fn files_api(ws: &str, ds: &str) -> String {
    format!("/api/v1/workspaces/{}/datastores/{}/files", layout::seg(ws), layout::seg(ds))
}

async fn browse(state: &AppState, workspace: &Workspace, ds: &str, raw: &str) -> Result<Browsed, Error> {
    let ws = workspace.name.as_str();
    let dir = RelPath::parse_dir(raw)?;
    let record = state.store.datastore(workspace, ds).await?;
    let blobs = state.blobs_of(&record)?;
    let all = blobs.list(&dir).await?;
    let total = totals(&all);
    let level = one_level(&dir, all);
    let files_api = files_api(ws, ds);
    if !dir.is_root() && level.folders.is_empty() && level.files.is_empty() {
        // A file's URL downloads it; anything else under the datastore is unknown.
        if blobs.head(&dir).await?.is_some() {
            return Ok(Browsed::File(format!("{files_api}/{}", path_url(dir.as_str()))));
        }
        return Err(Error::not_found("folder", format!("{dir}\" in datastore \"{ds}")));
    }
    let child =
        |name: &str| if dir.is_root() { name.to_string() } else { format!("{}/{name}", dir.as_str()) };
    let title = if dir.is_root() { ds.to_string() } else { format!("{ds}/{dir}") };
    let body = html! {
        nav.breadcrumbs #data-breadcrumbs aria-label="Breadcrumbs" {
            a href={ (layout::ws_url(ws)) "/data" } { "Data" } " / "
            @if dir.is_root() { span aria-current="page" { (ds) } }
            @else {
                a href=(ds_href(ws, ds, "")) { (ds) }
                @let parts: Vec<&str> = dir.as_str().split('/').collect();
                @for (i, part) in parts.iter().enumerate() {
                    " / "
                    @if i + 1 == parts.len() { span aria-current="page" { (part) } }
                    @else { a href=(ds_href(ws, ds, &parts[..=i].join("/"))) { (part) } }
                }
            }
        }
        h1 { (title) }
        p.summary { (total.files) " file(s), " (layout::fmt_bytes(total.bytes)) " in this folder and below." }
        div.table-wrap { table #files-table {
            thead { tr { th scope="col" { "Name" } th scope="col" { "Size" } th scope="col" { "Modified" } } }
            tbody {
                @for (name, t) in &level.folders {
                    tr.folder data-path=(child(name)) {
                        td { a href=(ds_href(ws, ds, &child(name))) { (name) "/" } }
                        td { (layout::fmt_bytes(t.bytes)) " (" (t.files) " files)" }
                        td {}
                    }
                }
                @for f in &level.files {
                    @let name = f.path.rsplit('/').next().unwrap_or(&f.path);
                    tr.file data-path=(f.path) {
                        td { a.download href={ (files_api) "/" (path_url(&f.path)) } download=(name) { (name) } }
                        td { (layout::fmt_bytes(f.size)) }
                        td { (layout::time_el(f.last_modified)) }
                    }
                }
            }
        } }
    };
    Ok(Browsed::Folder { title, body })
}
