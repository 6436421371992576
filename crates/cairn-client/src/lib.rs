//! A typed client of Cairn's REST API, used by the CLI and the integration tests. Each method is
//! one API call; [`transfer`] builds folder uploads and downloads on top of them.

pub mod blobs;
pub mod transfer;

use std::time::Duration;

use bytes::Bytes;
use cairn_core::api::*;
use cairn_core::models::*;
use cairn_core::runs::{CreateSnapshot, SnapshotCreated};
use futures::{Stream, TryStreamExt};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use url::Url;

/// What can go wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error: its status, code and message.
    #[error("{message} (HTTP {status}, {code})")]
    Api { status: u16, code: String, message: String },
    /// The server could not be reached or the connection broke.
    #[error("cannot reach the Cairn server at {url}: {message}")]
    Transport { url: String, message: String },
    /// A local problem (reading or writing files).
    #[error("{0}")]
    Local(String),
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// One file of [`Client::upload_batch`]: its path in the datastore, its content, and a checksum
/// of it (`x-cairn-sha256` or `x-cairn-crc32`, lower-case hex).
#[derive(Clone, Debug)]
pub struct BatchPart {
    pub path: String,
    pub content: Vec<u8>,
    pub checksum: (&'static str, String),
}

/// Options of [`Client::put_file`].
#[derive(Clone, Copy, Debug, Default)]
pub struct PutFile<'a> {
    /// Lower-case hex SHA-256 of the content; the server refuses a mismatch (422).
    pub sha256: Option<&'a str>,
    /// Replace an existing file with different content.
    pub overwrite: bool,
}

/// A connection to one Cairn server with one token. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl Client {
    /// `base` is the server's root URL, e.g. `http://127.0.0.1:8080`.
    pub fn new(base: &str, token: Option<String>) -> Result<Client> {
        let mut base =
            Url::parse(base).map_err(|e| ClientError::Local(format!("invalid server URL {base:?}: {e}")))?;
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(32)
            .build()
            .map_err(|e| ClientError::Local(e.to_string()))?;
        Ok(Client { http, base, token })
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The URL of `segments` under `/api/v1/`, each segment percent-encoded.
    fn url<I, S>(&self, segments: I) -> Url
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().expect("http URLs have paths");
            path.pop_if_empty().extend(["api", "v1"]);
            for s in segments {
                path.push(s.as_ref());
            }
        }
        url
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let rb = self.http.request(method, url);
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    async fn send(&self, rb: RequestBuilder) -> Result<Response> {
        let response = rb.send().await.map_err(|e| self.transport(e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => ClientError::Api {
                status: status.as_u16(),
                code: body.error.code,
                message: body.error.message,
            },
            Err(_) => ClientError::Api {
                status: status.as_u16(),
                code: "http_error".into(),
                message: if text.is_empty() { status.to_string() } else { text },
            },
        })
    }

    fn transport(&self, e: reqwest::Error) -> ClientError {
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message = format!("{message}: {s}");
            source = s.source();
        }
        ClientError::Transport { url: self.base.to_string(), message }
    }

    async fn json<T: DeserializeOwned>(&self, rb: RequestBuilder) -> Result<T> {
        let response = self.send(rb).await?;
        response.json().await.map_err(|e| self.transport(e))
    }

    async fn get<T: DeserializeOwned>(&self, segments: &[&str], query: &[(&str, String)]) -> Result<T> {
        self.json(self.request(Method::GET, self.url(segments)).query(query)).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, segments: &[&str], body: &B) -> Result<T> {
        self.json(self.request(Method::POST, self.url(segments)).json(body)).await
    }

    async fn delete(&self, segments: &[&str], query: &[(&str, String)]) -> Result<()> {
        self.send(self.request(Method::DELETE, self.url(segments)).query(query)).await.map(|_| ())
    }

    /// Follows `next_page_token` until the last page.
    async fn all_pages<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        extra: &[(&str, String)],
    ) -> Result<Vec<T>> {
        self.all_pages_of(segments, extra, 1000).await
    }

    /// [`Client::all_pages`] asking for `page_size` items a page.
    async fn all_pages_of<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        extra: &[(&str, String)],
        page_size: usize,
    ) -> Result<Vec<T>> {
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query: Vec<(&str, String)> = extra.to_vec();
            query.push(("page_size", page_size.to_string()));
            if let Some(t) = &token {
                query.push(("page_token", t.clone()));
            }
            let page: Page<T> = self.get(segments, &query).await?;
            items.extend(page.items);
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => return Ok(items),
            }
        }
    }

    // --- health and identity -------------------------------------------------------------

    /// `GET /healthz`: true if the server answers.
    pub async fn healthy(&self) -> bool {
        let url = self.base.join("healthz").expect("static path");
        matches!(self.http.get(url).send().await, Ok(r) if r.status() == StatusCode::OK)
    }

    pub async fn whoami(&self) -> Result<Whoami> {
        self.get(&["whoami"], &[]).await
    }

    // --- tokens ---------------------------------------------------------------------------

    /// Every named token, all pages.
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>> {
        self.all_pages(&["tokens"], &[]).await
    }

    pub async fn create_token(&self, req: &CreateToken) -> Result<CreatedToken> {
        self.post(&["tokens"], req).await
    }

    pub async fn revoke_token(&self, name: &str) -> Result<()> {
        self.delete(&["tokens", name], &[]).await
    }

    // --- administration -------------------------------------------------------------------

    /// `POST /admin/gc`: deletes (or, dry, counts) blobs nothing references.
    pub async fn gc(&self, req: &GcRequest) -> Result<GcReport> {
        self.post(&["admin", "gc"], req).await
    }

    // --- workspaces -----------------------------------------------------------------------

    pub async fn list_workspaces(&self) -> Result<Vec<Workspace>> {
        self.all_pages(&["workspaces"], &[]).await
    }

    pub async fn create_workspace(&self, req: &CreateWorkspace) -> Result<Workspace> {
        self.post(&["workspaces"], req).await
    }

    pub async fn workspace(&self, name: &str) -> Result<Workspace> {
        self.get(&["workspaces", name], &[]).await
    }

    /// The workspace with its MLflow tracking URI.
    pub async fn workspace_detail(&self, name: &str) -> Result<WorkspaceDetail> {
        self.get(&["workspaces", name], &[]).await
    }

    pub async fn delete_workspace(&self, name: &str, force: bool) -> Result<()> {
        self.delete(&["workspaces", name], &[("force", force.to_string())]).await
    }

    // --- datastores -----------------------------------------------------------------------

    pub async fn list_datastores(&self, ws: &str) -> Result<Vec<Datastore>> {
        self.all_pages(&["workspaces", ws, "datastores"], &[]).await
    }

    pub async fn create_datastore(&self, ws: &str, req: &CreateDatastore) -> Result<Datastore> {
        self.post(&["workspaces", ws, "datastores"], req).await
    }

    pub async fn datastore(&self, ws: &str, name: &str) -> Result<Datastore> {
        self.get(&["workspaces", ws, "datastores", name], &[]).await
    }

    pub async fn delete_datastore(&self, ws: &str, name: &str) -> Result<()> {
        self.delete(&["workspaces", ws, "datastores", name], &[]).await
    }

    // --- files ----------------------------------------------------------------------------

    /// The URL of a datastore file. The path is checked here first: a URL drops `.` and `..`
    /// segments and empty ones change the route, so such a path would never reach the server's
    /// own check as it was given.
    fn file_url(&self, ws: &str, ds: &str, path: &str) -> Result<Url> {
        let path = cairn_core::RelPath::parse(path).map_err(|e| ClientError::Local(e.to_string()))?;
        let mut segments = vec!["workspaces", ws, "datastores", ds, "files"];
        segments.extend(path.as_str().split('/'));
        Ok(self.url(segments))
    }

    pub async fn upload_plan(&self, ws: &str, ds: &str, req: &UploadPlanRequest) -> Result<UploadPlan> {
        self.post(&["workspaces", ws, "datastores", ds, "upload-plan"], req).await
    }

    /// Uploads many small files in one request (`POST …/upload-batch`): all of them or, without
    /// `overwrite`, none. Each part carries its file's path and the checksum it was read with.
    pub async fn upload_batch(
        &self,
        ws: &str,
        ds: &str,
        files: Vec<BatchPart>,
        overwrite: bool,
    ) -> Result<UploadBatchResult> {
        let mut form = reqwest::multipart::Form::new();
        for f in files {
            let mut headers = reqwest::header::HeaderMap::new();
            let (name, value) = f.checksum;
            headers.insert(
                name,
                reqwest::header::HeaderValue::from_str(&value).expect("hex is a valid header value"),
            );
            form = form
                .part("file", reqwest::multipart::Part::bytes(f.content).file_name(f.path).headers(headers));
        }
        let url = self.url(["workspaces", ws, "datastores", ds, "upload-batch"]);
        self.json(
            self.request(Method::POST, url).query(&[("overwrite", overwrite.to_string())]).multipart(form),
        )
        .await
    }

    /// Uploads one file's content from a stream; `opts.sha256` lets the server verify it.
    pub async fn put_file<S>(
        &self,
        ws: &str,
        ds: &str,
        path: &str,
        body: S,
        opts: PutFile<'_>,
    ) -> Result<PutFileResult>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static,
    {
        self.put_body(ws, ds, path, reqwest::Body::wrap_stream(body), opts, false).await
    }

    /// Uploads one file's content from an HTTP body. With `crc32_trailer`, the request declares
    /// an `x-cairn-crc32` trailer, which the body must yield as its last frame: the sender can
    /// checksum what it sends as it goes, and the server checks the trailer before the file
    /// becomes visible (and refuses the upload if it does not arrive).
    pub async fn put_file_body<B>(
        &self,
        ws: &str,
        ds: &str,
        path: &str,
        body: B,
        opts: PutFile<'_>,
        crc32_trailer: bool,
    ) -> Result<PutFileResult>
    where
        B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.put_body(ws, ds, path, reqwest::Body::wrap(body), opts, crc32_trailer).await
    }

    async fn put_body(
        &self,
        ws: &str,
        ds: &str,
        path: &str,
        body: reqwest::Body,
        opts: PutFile<'_>,
        crc32_trailer: bool,
    ) -> Result<PutFileResult> {
        let mut rb = self
            .request(Method::PUT, self.file_url(ws, ds, path)?)
            .query(&[("overwrite", opts.overwrite.to_string())])
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body);
        if let Some(sha) = opts.sha256 {
            rb = rb.header(SHA256_HEADER, sha);
        }
        if crc32_trailer {
            rb = rb.header(reqwest::header::TRAILER, CRC32_HEADER);
        }
        self.json(rb).await
    }

    /// Every file under `prefix` (the whole datastore when empty), recursively.
    pub async fn list_files(&self, ws: &str, ds: &str, prefix: &str) -> Result<Vec<FileEntry>> {
        // The server's largest page: each page of a local directory walks the whole folder, so
        // fewer pages cost less (10,000 files: one walk instead of ten).
        let at = ["workspaces", ws, "datastores", ds, "files"];
        self.all_pages_of(&at, &[("prefix", prefix.to_string())], 10_000).await
    }

    /// Streams one file's content, with its size when the server sends it.
    pub async fn get_file(
        &self,
        ws: &str,
        ds: &str,
        path: &str,
    ) -> Result<(Option<u64>, impl Stream<Item = Result<Bytes>> + use<>)> {
        let response = self.send(self.request(Method::GET, self.file_url(ws, ds, path)?)).await?;
        let size = response.content_length();
        Ok((size, self.body_stream(response)))
    }

    /// A response's body as a stream whose errors say the download was cut.
    fn body_stream(&self, response: reqwest::Response) -> impl Stream<Item = Result<Bytes>> + use<> {
        let base = self.base.to_string();
        response.bytes_stream().map_err(move |e| ClientError::Transport {
            url: base.clone(),
            message: format!("download interrupted: {e}"),
        })
    }

    /// Downloads small files in one request (`POST …/download-batch`): their contents, in the
    /// order asked, each part checked to carry the path asked for and its whole declared length.
    pub async fn download_batch(&self, ws: &str, ds: &str, paths: &[String]) -> Result<Vec<Bytes>> {
        self.batch_from(self.url(["workspaces", ws, "datastores", ds, "download-batch"]), paths).await
    }

    /// A run's small artifacts in one request, as [`Client::download_batch`] for a datastore.
    pub async fn run_download_batch(&self, ws: &str, run: &str, paths: &[String]) -> Result<Vec<Bytes>> {
        self.batch_from(self.url(["workspaces", ws, "runs", run, "download-batch"]), paths).await
    }

    async fn batch_from(&self, url: Url, paths: &[String]) -> Result<Vec<Bytes>> {
        let request = DownloadBatchRequest { paths: paths.to_vec() };
        let response = self.send(self.request(Method::POST, url.clone()).json(&request)).await?;
        let unreadable = |why: String| ClientError::Transport {
            url: url.to_string(),
            message: format!("the download batch's answer cannot be read: {why}"),
        };
        let content_type =
            response.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let boundary = content_type
            .parse::<mime::Mime>()
            .ok()
            .filter(|m| m.type_() == mime::MULTIPART)
            .and_then(|m| m.get_param(mime::BOUNDARY).map(|b| b.as_str().to_string()))
            .ok_or_else(|| unreadable(format!("it is {content_type:?}, not multipart with a boundary")))?;
        let mut parts = multer::Multipart::new(response.bytes_stream(), boundary);
        let mut contents = Vec::with_capacity(paths.len());
        while let Some(part) = parts.next_field().await.map_err(|e| unreadable(e.to_string()))? {
            let header = |name| part.headers().get(name).and_then(|v| v.to_str().ok());
            let path = header(reqwest::header::CONTENT_DISPOSITION).and_then(download_part_path);
            let declared = header(reqwest::header::CONTENT_LENGTH).and_then(|v| v.parse::<usize>().ok());
            let wanted = paths.get(contents.len());
            if path.as_ref() != wanted {
                return Err(unreadable(format!(
                    "part {} is {path:?} where {wanted:?} was asked",
                    contents.len() + 1
                )));
            }
            let content = part.bytes().await.map_err(|e| unreadable(e.to_string()))?;
            if declared != Some(content.len()) {
                return Err(unreadable(format!(
                    "{} came with {} bytes, not the {declared:?} it declares",
                    path.unwrap_or_default(),
                    content.len()
                )));
            }
            contents.push(content);
        }
        if contents.len() != paths.len() {
            return Err(unreadable(format!(
                "it holds {} of the {} files asked",
                contents.len(),
                paths.len()
            )));
        }
        Ok(contents)
    }

    pub async fn delete_file(&self, ws: &str, ds: &str, path: &str) -> Result<()> {
        self.send(self.request(Method::DELETE, self.file_url(ws, ds, path)?)).await.map(|_| ())
    }

    // --- content-addressed blobs ------------------------------------------------------------

    /// Records a snapshot manifest; the answer lists the contents the server still lacks.
    pub async fn create_snapshot(&self, ws: &str, req: &CreateSnapshot) -> Result<SnapshotCreated> {
        self.post(&["workspaces", ws, "snapshots"], req).await
    }

    /// Which of these contents the workspace lacks (no snapshot is recorded).
    pub async fn missing_blobs(&self, ws: &str, sha256: Vec<String>) -> Result<Vec<String>> {
        let answer: MissingBlobs =
            self.post(&["workspaces", ws, "blobs", "missing"], &BlobsQuery { sha256 }).await?;
        Ok(answer.missing)
    }

    /// Uploads one content-addressed blob from a stream (the server checks that `sha256` matches).
    pub async fn put_blob<S>(&self, ws: &str, sha256: &str, body: S) -> Result<()>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static,
    {
        let rb = self
            .request(Method::PUT, self.url(["workspaces", ws, "blobs", sha256]))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(body));
        self.send(rb).await.map(|_| ())
    }

    // --- models ---------------------------------------------------------------------------

    pub async fn list_models(&self, ws: &str, filter: &[(&str, String)]) -> Result<Vec<Model>> {
        self.all_pages(&["workspaces", ws, "models"], filter).await
    }

    pub async fn model(&self, ws: &str, name: &str) -> Result<Model> {
        self.get(&["workspaces", ws, "models", name], &[]).await
    }

    pub async fn delete_model(&self, ws: &str, name: &str) -> Result<()> {
        self.delete(&["workspaces", ws, "models", name], &[]).await
    }

    pub async fn register_model_version(
        &self,
        ws: &str,
        name: &str,
        req: &RegisterModelVersion,
    ) -> Result<ModelVersion> {
        self.post(&["workspaces", ws, "models", name, "versions"], req).await
    }

    pub async fn model_versions(&self, ws: &str, name: &str) -> Result<Vec<ModelVersion>> {
        self.get(&["workspaces", ws, "models", name, "versions"], &[]).await
    }

    /// `version` is a number, `latest` or `@alias`.
    pub async fn model_version(&self, ws: &str, name: &str, version: &str) -> Result<ModelVersion> {
        self.get(&["workspaces", ws, "models", name, "versions", version], &[]).await
    }

    pub async fn update_model_version(
        &self,
        ws: &str,
        name: &str,
        version: &str,
        req: &UpdateModelVersion,
    ) -> Result<ModelVersion> {
        let url = self.url(["workspaces", ws, "models", name, "versions", version]);
        self.json(self.request(Method::PATCH, url).json(req)).await
    }

    pub async fn delete_model_version(&self, ws: &str, name: &str, version: &str) -> Result<()> {
        self.delete(&["workspaces", ws, "models", name, "versions", version], &[]).await
    }

    pub async fn set_model_alias(
        &self,
        ws: &str,
        name: &str,
        alias: &str,
        version: i64,
    ) -> Result<ModelVersion> {
        let url = self.url(["workspaces", ws, "models", name, "aliases", alias]);
        self.json(self.request(Method::PUT, url).json(&SetAlias { version })).await
    }

    pub async fn delete_model_alias(&self, ws: &str, name: &str, alias: &str) -> Result<()> {
        self.delete(&["workspaces", ws, "models", name, "aliases", alias], &[]).await
    }

    pub async fn model_files(&self, ws: &str, name: &str, version: &str) -> Result<Vec<ModelFile>> {
        self.get(&["workspaces", ws, "models", name, "versions", version, "files"], &[]).await
    }

    /// Streams one file of a model version.
    pub async fn get_model_file(
        &self,
        ws: &str,
        name: &str,
        version: &str,
        path: &str,
    ) -> Result<impl Stream<Item = Result<Bytes>> + use<>> {
        let mut segments = vec!["workspaces", ws, "models", name, "versions", version, "files"];
        segments.extend(path.split('/'));
        let response = self.send(self.request(Method::GET, self.url(segments))).await?;
        Ok(self.body_stream(response))
    }

    /// Every artifact of a run (`outputs/…`, `logs/…`, what the script logged), with sizes.
    pub async fn run_artifacts(&self, ws: &str, run: &str) -> Result<Vec<FileEntry>> {
        self.get(&["workspaces", ws, "runs", run, "artifacts"], &[]).await
    }

    /// Streams one artifact of a run.
    pub async fn get_run_artifact(
        &self,
        ws: &str,
        run: &str,
        path: &str,
    ) -> Result<impl Stream<Item = Result<Bytes>> + use<>> {
        let mut segments = vec!["workspaces", ws, "runs", run, "artifacts"];
        segments.extend(path.split('/'));
        let response = self.send(self.request(Method::GET, self.url(segments))).await?;
        Ok(self.body_stream(response))
    }
}

/// Calls under `/api/v1/workspaces/{ws}/` named by a relative path (`runs/RUN/cancel`), for the
/// CLI commands whose resources have no typed method here. Each `/`-separated part of the path is
/// percent-encoded on its own, so names need no escaping; errors are the typed client's.
#[derive(Clone, Debug)]
pub struct WorkspaceApi {
    client: Client,
    ws: String,
}

impl Client {
    /// The calls under one workspace, by path.
    pub fn workspace_api(&self, ws: &str) -> WorkspaceApi {
        WorkspaceApi { client: self.clone(), ws: ws.to_string() }
    }
}

impl WorkspaceApi {
    pub fn workspace(&self) -> &str {
        &self.ws
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A request to `path` (relative to the workspace) with the client's token; add a query or a
    /// body, then [`WorkspaceApi::send`] it.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let segments = ["workspaces", self.ws.as_str()].into_iter().chain(path.split('/'));
        self.client.request(method, self.client.url(segments))
    }

    /// Sends a request; a non-2xx answer becomes [`ClientError::Api`] with the server's message.
    pub async fn send(&self, rb: RequestBuilder) -> Result<Response> {
        self.client.send(rb).await
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.get_query(path, &[]).await
    }

    /// `GET path?query`, the values percent-encoded.
    pub async fn get_query<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T> {
        self.client.json(self.request(Method::GET, path).query(query)).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        self.client.json(self.request(Method::POST, path).json(body)).await
    }

    pub async fn put<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        self.client.json(self.request(Method::PUT, path).json(body)).await
    }

    pub async fn patch<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        self.client.json(self.request(Method::PATCH, path).json(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<()> {
        self.send(self.request(Method::DELETE, path)).await.map(|_| ())
    }
}
