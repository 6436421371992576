//! Studio pages of datastores: the list (kind, location, created) and a folder browser, one
//! level per page, with breadcrumbs, file sizes and downloads.
//!
//! A folder is read with one delimiter listing (`BlobStore::list_level`), so its page costs what
//! the folder holds, not everything below it, and long folders are shown in pages. Totals (file
//! counts and sizes of datastores and subfolders) need a listing of everything below, so they
//! are computed only when asked (`?sizes=1`, a link on the page) and shown as "—" otherwise.
//!
//! Every path from the URL goes through `RelPath::parse_dir` before it reaches the blob store, so
//! `..` and friends are refused here as everywhere else. Files download through the files API
//! (`…/datastores/DS/files/PATH`), which accepts the session cookie for GET.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use axum::Router;
use cairn_core::api::{DatastoreKind, FileEntry, Workspace};
use cairn_core::{Error, RelPath};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, path_url, Nav, OrPage, PageResult};
use super::open_workspace;
use super::session::Session;
use crate::state::AppState;

/// Entries (folders, then files) per page of a folder.
const PAGE_SIZE: usize = 200;

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

/// `?sizes=1` (compute totals) and `?page=N`.
#[derive(Deserialize, Default)]
struct DataQuery {
    sizes: Option<String>,
    page: Option<String>,
}

impl DataQuery {
    fn sizes(&self) -> bool {
        self.sizes.as_deref().is_some_and(|v| !v.is_empty() && v != "0")
    }
}

fn size_cell(t: Option<&Result<Totals, Error>>) -> Markup {
    html! {
        @match t {
            Some(Ok(t)) => { td.files { (t.files) } td.size { (layout::fmt_bytes(t.bytes)) } },
            Some(Err(e)) => { td.error colspan="2" { "unavailable: " (e) } },
            None => { td.files { "—" } td.size { "—" } },
        }
    }
}

async fn list(
    State(state): State<Arc<AppState>>,
    s: Session,
    Path(ws): Path<String>,
    Query(q): Query<DataQuery>,
) -> PageResult {
    let workspace = open_workspace(&state, &s, &ws).await?;
    let body = list_body(&state, &workspace, q.sizes()).await.or_page(&s)?;
    Ok(layout::page(&s, Some(&ws), Nav::Data, "Data", body).into_response())
}

async fn list_body(state: &AppState, workspace: &Workspace, sizes: bool) -> Result<Markup, Error> {
    let ws = &workspace.name;
    let page = state.store.list_datastores(workspace, None, Some(cairn_store::MAX_PAGE_SIZE)).await?;
    let mut rows = Vec::new();
    for d in page.items {
        // One unreachable bucket must not hide the other datastores.
        let t = if sizes {
            Some(match state.blobs_of(&d) {
                Ok(b) => b.list(&RelPath::parse_dir("")?).await.map(|f| totals(&f)),
                Err(e) => Err(e),
            })
        } else {
            None
        };
        rows.push((d.datastore, t));
    }
    let body = html! {
        h1 { "Data" }
        @if !sizes {
            p.hint { "File counts and sizes need a listing of every file: "
                a #show-sizes href={ (layout::ws_url(ws)) "/data?sizes=1" } { "compute them" } "." }
        }
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
                    (size_cell(t.as_ref()))
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
    Query(q): Query<DataQuery>,
) -> PageResult {
    folder_page(&state, &s, &ws, &ds, "", &q).await
}

async fn folder(
    State(state): State<Arc<AppState>>,
    s: Session,
    Path((ws, ds, path)): Path<(String, String, String)>,
    Query(q): Query<DataQuery>,
) -> PageResult {
    folder_page(&state, &s, &ws, &ds, &path, &q).await
}

async fn folder_page(
    state: &AppState,
    s: &Session,
    ws: &str,
    ds: &str,
    raw: &str,
    q: &DataQuery,
) -> PageResult {
    let workspace = open_workspace(state, s, ws).await?;
    match browse(state, &workspace, ds, raw, q).await.or_page(s)? {
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

/// The recursive totals of each subfolder of `dir`, from a listing of everything below it.
fn folder_totals(dir: &RelPath, all: &[FileEntry]) -> BTreeMap<String, Totals> {
    let prefix = if dir.is_root() { String::new() } else { format!("{}/", dir.as_str()) };
    let mut folders: BTreeMap<String, Totals> = BTreeMap::new();
    for f in all {
        let Some(rest) = f.path.strip_prefix(&prefix) else { continue };
        if let Some((sub, _)) = rest.split_once('/') {
            folders.entry(sub.to_string()).or_default().add(f.size);
        }
    }
    folders
}

fn files_api(ws: &str, ds: &str) -> String {
    format!("/api/v1/workspaces/{}/datastores/{}/files", layout::seg(ws), layout::seg(ds))
}

/// The link to page `page` of a folder, keeping `?sizes=1`.
fn page_href(ws: &str, ds: &str, dir: &str, page: usize, sizes: bool) -> String {
    let mut href = ds_href(ws, ds, dir);
    let mut sep = '?';
    if sizes {
        href.push_str("?sizes=1");
        sep = '&';
    }
    if page > 1 {
        href.push(sep);
        href.push_str(&format!("page={page}"));
    }
    href
}

/// The entries of page `page` (from 1) of a folder: its folders first, then its files.
fn page_of<'a>(
    folders: &'a [String],
    files: &'a [FileEntry],
    page: usize,
) -> (&'a [String], &'a [FileEntry]) {
    let start = (page - 1).saturating_mul(PAGE_SIZE);
    let end = start.saturating_add(PAGE_SIZE);
    let clamp = |n: usize, len: usize| n.min(len);
    let f_start = clamp(start, folders.len());
    let f_end = clamp(end, folders.len());
    let file_start = clamp(start.saturating_sub(folders.len()), files.len());
    let file_end = clamp(end.saturating_sub(folders.len()), files.len());
    (&folders[f_start..f_end], &files[file_start..file_end])
}

async fn browse(
    state: &AppState,
    workspace: &Workspace,
    ds: &str,
    raw: &str,
    q: &DataQuery,
) -> Result<Browsed, Error> {
    let ws = workspace.name.as_str();
    let dir = RelPath::parse_dir(raw)?;
    let record = state.store.datastore(workspace, ds).await?;
    let blobs = state.blobs_of(&record)?;
    let (folders, files) = blobs.list_level(&dir).await?;
    let files_api = files_api(ws, ds);
    if !dir.is_root() && folders.is_empty() && files.is_empty() {
        // A file's URL downloads it; anything else under the datastore is unknown.
        if blobs.head(&dir).await?.is_some() {
            return Ok(Browsed::File(format!("{files_api}/{}", path_url(dir.as_str()))));
        }
        return Err(Error::not_found("folder", format!("{dir}\" in datastore \"{ds}")));
    }
    let sizes = q.sizes();
    let (total, sub_totals) = if sizes {
        let all = blobs.list(&dir).await?;
        (Some(totals(&all)), folder_totals(&dir, &all))
    } else {
        (None, BTreeMap::new())
    };
    let entries = folders.len() + files.len();
    let pages = entries.div_ceil(PAGE_SIZE).max(1);
    let page = match q.page.as_deref().filter(|p| !p.is_empty()) {
        None => 1,
        Some(p) => p.parse::<usize>().ok().filter(|n| (1..=pages).contains(n)).ok_or_else(|| {
            Error::not_found(
                "page",
                format!("{p}\" of folder \"{}", if dir.is_root() { ds } else { dir.as_str() }),
            )
        })?,
    };
    let (page_folders, page_files) = page_of(&folders, &files, page);
    let child =
        |name: &str| if dir.is_root() { name.to_string() } else { format!("{}/{name}", dir.as_str()) };
    let title = if dir.is_root() { ds.to_string() } else { format!("{ds}/{dir}") };
    let here = dir.as_str();
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
        p.summary {
            (folders.len()) " folder(s) and " (files.len()) " file(s) here"
            @if let Some(t) = total {
                "; " (t.files) " file(s), " (layout::fmt_bytes(t.bytes)) " in this folder and below."
            } @else {
                ". " a #show-sizes href=(page_href(ws, ds, here, page, true)) { "Compute folder sizes" }
            }
        }
        div.table-wrap { table #files-table {
            thead { tr { th scope="col" { "Name" } th scope="col" { "Size" } th scope="col" { "Modified" } } }
            tbody {
                @for name in page_folders {
                    tr.folder data-path=(child(name)) {
                        td { a href=(ds_href(ws, ds, &child(name))) { (name) "/" } }
                        td { @match sub_totals.get(name) {
                            Some(t) => { (layout::fmt_bytes(t.bytes)) " (" (t.files) " files)" }
                            None => { span title="not computed" { "—" } }
                        } }
                        td {}
                    }
                }
                @for f in page_files {
                    @let name = f.path.rsplit('/').next().unwrap_or(&f.path);
                    tr.file data-path=(f.path) {
                        td { a.download href={ (files_api) "/" (path_url(&f.path)) } download=(name) { (name) } }
                        td { (layout::fmt_bytes(f.size)) }
                        td { (layout::time_el(f.last_modified)) }
                    }
                }
            }
        } }
        @if pages > 1 {
            nav.pager aria-label="Pages" {
                @if page > 1 { a #prev-page href=(page_href(ws, ds, here, page - 1, sizes)) { "← Previous" } }
                span { "Page " (page) " of " (pages) " (" (entries) " entries)" }
                @if page < pages { a #next-page href=(page_href(ws, ds, here, page + 1, sizes)) { "Next →" } }
            }
        }
    };
    Ok(Browsed::Folder { title, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_hold_folders_first_then_files() {
        let folders: Vec<String> = (0..250).map(|i| format!("d{i:03}")).collect();
        let files: Vec<FileEntry> =
            (0..10).map(|i| FileEntry { path: format!("f{i}"), size: 1, last_modified: 0 }).collect();
        let (d, f) = page_of(&folders, &files, 1);
        assert_eq!((d.len(), f.len()), (PAGE_SIZE, 0));
        let (d, f) = page_of(&folders, &files, 2);
        assert_eq!((d.len(), f.len(), d[0].as_str(), f[0].path.as_str()), (50, 10, "d200", "f0"));
        let (d, f) = page_of(&folders, &files, 3);
        assert!(d.is_empty() && f.is_empty());
        assert_eq!(page_href("w", "ds", "a b", 2, true), "/w/w/data/ds/a%20b?sizes=1&page=2");
        assert_eq!(page_href("w", "ds", "", 1, false), "/w/w/data/ds");
    }

    #[test]
    fn folder_totals_count_everything_below_each_subfolder() {
        let all: Vec<FileEntry> = [("a/x", 1), ("a/b/y", 2), ("a/b/c/z", 4), ("a/top", 8)]
            .iter()
            .map(|(p, n)| FileEntry { path: p.to_string(), size: *n, last_modified: 0 })
            .collect();
        let t = folder_totals(&RelPath::parse_dir("a").unwrap(), &all);
        assert_eq!(t.len(), 1);
        assert_eq!((t["b"].files, t["b"].bytes), (2, 6));
    }
}
