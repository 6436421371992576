//! Datastores and artifacts on a real S3-compatible server: moto in server mode, started by each
//! test on a free loopback port (scripts/setup.sh installs it into `.venv`). The cairn server
//! reaches it only through the usual `AWS_*` variables, as it would reach AWS or MinIO.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Opts, Server};
use serde_json::Value;

/// The artifact store of every test's server: default datastores live under it.
const BUCKET: &str = "bucket";
const PREFIX: &str = "prefix";
/// The blob store sends files larger than this as multipart uploads (cairn_blob::PART_SIZE).
const PART_SIZE: usize = 8 * 1024 * 1024;

/// A moto S3 server on 127.0.0.1, killed when dropped.
struct Moto {
    child: Child,
    port: u16,
    http: reqwest::Client,
    /// Holds moto's log (its stdout and stderr), shown when it fails to start.
    dir: tempfile::TempDir,
}

/// `CAIRN_TEST_MOTO_SERVER`, or the one scripts/setup.sh installs.
fn moto_server_bin() -> PathBuf {
    match std::env::var_os("CAIRN_TEST_MOTO_SERVER") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/moto_server"),
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

impl Moto {
    async fn start() -> Moto {
        let bin = moto_server_bin();
        // A missing S3 server is a broken setup, not a reason to skip: these tests guard the S3 path.
        assert!(
            bin.is_file(),
            "moto_server not found at {}: run scripts/setup.sh (or set CAIRN_TEST_MOTO_SERVER)",
            bin.display()
        );
        let http = reqwest::Client::builder().no_proxy().build().expect("HTTP client");
        // The port is free when picked but may be taken before moto binds it: then moto exits at
        // once, and another port is tried.
        for _ in 0..3 {
            let port = free_port();
            let dir = tempfile::tempdir().expect("tempdir");
            let out = File::create(dir.path().join("moto.log")).expect("moto log file");
            let err = out.try_clone().expect("moto log file");
            let child = Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let mut moto = Moto { child, port, http: http.clone(), dir };
            if moto.wait_until_answering().await {
                return moto;
            }
            eprintln!("moto_server on port {port} exited early:\n{}", moto.log());
        }
        panic!("moto_server did not start on any of 3 ports (see the logs above)");
    }

    /// True once moto answers HTTP; false if it exited first. Importing moto takes seconds.
    async fn wait_until_answering(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.child.try_wait().expect("moto status").is_some() {
                return false;
            }
            let probe = self.http.get(self.endpoint()).timeout(Duration::from_secs(2)).send().await;
            if probe.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("moto_server did not answer within 60 s; its log:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default()
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Moto accepts unsigned requests, which keeps the test free of an S3 client of its own.
    async fn create_bucket(&self, bucket: &str) {
        let response =
            self.http.put(format!("{}/{bucket}", self.endpoint())).send().await.expect("PUT bucket");
        assert!(response.status().is_success(), "creating bucket {bucket}: {}", response.status());
    }

    /// The objects stored under `prefix` in `bucket`, as S3 itself lists them: key → ETag.
    async fn objects(&self, bucket: &str, prefix: &str) -> BTreeMap<String, String> {
        let xml = self.get_xml(&format!("{bucket}?list-type=2&prefix={prefix}")).await;
        assert!(
            xml.contains("<IsTruncated>false</IsTruncated>"),
            "listing is paginated; the test expects one page:\n{xml}"
        );
        xml_values(&xml, "Contents")
            .iter()
            .map(|object| {
                let field =
                    |tag| xml_values(object, tag).pop().unwrap_or_else(|| panic!("no {tag} in {object}"));
                (field("Key"), field("ETag").replace("&#34;", "").replace("&quot;", "").replace('"', ""))
            })
            .collect()
    }

    async fn keys(&self, bucket: &str, prefix: &str) -> BTreeSet<String> {
        self.objects(bucket, prefix).await.into_keys().collect()
    }

    /// The keys of multipart uploads started in `bucket` and neither completed nor aborted.
    async fn unfinished_uploads(&self, bucket: &str) -> Vec<String> {
        xml_values(&self.get_xml(&format!("{bucket}?uploads")).await, "Key")
    }

    async fn get_xml(&self, path_and_query: &str) -> String {
        let response = self
            .http
            .get(format!("{}/{path_and_query}", self.endpoint()))
            .send()
            .await
            .expect("GET from moto");
        assert!(response.status().is_success(), "GET {path_and_query}: {}", response.status());
        response.text().await.expect("moto response body")
    }

    /// Server options storing artifacts in `s3://BUCKET/PREFIX` on this moto.
    fn cairn_opts(&self) -> Opts {
        let env = [
            ("AWS_ACCESS_KEY_ID", "test".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ];
        Opts {
            artifact_store: Some(format!("s3://{BUCKET}/{PREFIX}")),
            env: env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            ..Opts::default()
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of every `<tag>…</tag>` element, in document order (S3 listings are flat enough).
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.split(&open).skip(1).filter_map(|rest| rest.split_once(&close).map(|(v, _)| v.to_string())).collect()
}

/// Moto, its artifact bucket, and a cairn server storing artifacts there with workspace `w`.
/// Returns the workspace id, which names its folder in the bucket.
async fn setup() -> (Moto, Server, String) {
    let moto = Moto::start().await;
    moto.create_bucket(BUCKET).await;
    let server = Server::start_with(moto.cairn_opts());
    let ws = json(&server.ok(&["workspace", "create", "w", "-o", "json"]));
    let id = ws["id"].as_str().expect("workspace id").to_string();
    (moto, server, id)
}

/// A small folder tree with a nested file, and one file large enough to go up in three parts.
fn sample_files() -> BTreeMap<String, Vec<u8>> {
    let big: Vec<u8> =
        (0..(2 * PART_SIZE + 12_345) as u64).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    [
        ("a.txt", b"alpha\n".to_vec()),
        ("b.csv", b"x,y\n1,2\n".to_vec()),
        ("nested/deeper/c.json", br#"{"c": 3}"#.to_vec()),
        ("big.bin", big),
    ]
    .into_iter()
    .map(|(p, c)| (p.to_string(), c))
    .collect()
}

fn write_files(root: &Path, files: &BTreeMap<String, Vec<u8>>) {
    let borrowed: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (p.as_str(), c.as_slice())).collect();
    common::write_tree(root, &borrowed);
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().expect("a JSON array").iter().map(|s| s.as_str().expect("a string").to_string()).collect()
}

/// `files`' paths under `dir` in a datastore, in path order.
fn remote_paths(dir: &str, files: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    files.keys().map(|p| if dir.is_empty() { p.clone() } else { format!("{dir}/{p}") }).collect()
}

/// `datastore upload` of `src` into `dir`, as its JSON report.
fn upload(server: &Server, ds: &str, src: &Path, dir: &str) -> Value {
    let src = src.to_str().expect("UTF-8 temp path");
    json(&server.ok(&[
        "datastore",
        "upload",
        "-w",
        "w",
        "-d",
        ds,
        src,
        "--target-path",
        dir,
        "--quiet",
        "-o",
        "json",
    ]))
}

/// `datastore ls` as path → size.
fn listed(server: &Server, ds: &str) -> BTreeMap<String, u64> {
    let entries = json(&server.ok(&["datastore", "ls", "-w", "w", "-d", ds, "-o", "json"]));
    entries
        .as_array()
        .expect("a JSON array of files")
        .iter()
        .map(|e| (e["path"].as_str().expect("path").to_string(), e["size"].as_u64().expect("size")))
        .collect()
}

/// Downloads `dir` with the CLI into a fresh folder and checks every byte of `files`.
fn assert_downloads(server: &Server, ds: &str, dir: &str, files: &BTreeMap<String, Vec<u8>>) {
    let dest = tempfile::tempdir().expect("tempdir");
    let dest_arg = dest.path().to_str().expect("UTF-8 temp path");
    server.ok(&["datastore", "download", dir, "-w", "w", "-d", ds, "--dest", dest_arg, "--quiet"]);
    for (rel, content) in files {
        let local = dest.path().join(dir).join(rel);
        let got =
            std::fs::read(&local).unwrap_or_else(|e| panic!("{} was not downloaded: {e}", local.display()));
        assert!(
            got == *content,
            "{rel}: downloaded {} bytes that differ from the {} uploaded",
            got.len(),
            content.len()
        );
    }
}

fn expected_sizes(dir: &str, files: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, u64> {
    remote_paths(dir, files).into_iter().zip(files.values().map(|c| c.len() as u64)).collect()
}

#[tokio::test]
async fn default_datastore_on_s3_uploads_skips_and_downloads() {
    let (moto, server, ws_id) = setup().await;
    let files = sample_files();
    let src = server.tmp().join("src");
    write_files(&src, &files);

    let first = upload(&server, "default", &src, "data");
    assert_eq!(strings(&first["uploaded"]), remote_paths("data", &files));
    assert_eq!(strings(&first["skipped"]), Vec::<String>::new());

    assert_eq!(listed(&server, "default"), expected_sizes("data", &files));

    // Same content again: the plan finds every file already there and nothing is sent.
    let again = upload(&server, "default", &src, "data");
    assert_eq!(strings(&again["uploaded"]), Vec::<String>::new());
    assert_eq!(strings(&again["skipped"]), remote_paths("data", &files));
    assert_eq!(again["bytes_sent"], 0);

    assert_downloads(&server, "default", "data", &files);
    // Listed a file a page, the bucket gives the same listing (each page starts after the last).
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let url = format!(
            "/api/v1/workspaces/w/datastores/default/files?prefix=data&page_size=1&page_token={token}"
        );
        let (status, page) = server.get(&url).await;
        assert_eq!(status, 200, "{page}");
        paged.extend(
            page["items"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap().to_string()),
        );
        match page["next_page_token"].as_str() {
            Some(t) => token = t.replace('/', "%2F"),
            None => break,
        }
    }
    assert_eq!(paged, remote_paths("data", &files));
    // A batch from the bucket comes in the order asked, or is a 404 naming what is missing.
    let asked = ["data/b.csv".to_string(), "data/a.txt".to_string()];
    let got = server.client().download_batch("w", "default", &asked).await.unwrap();
    assert_eq!(got, [files["b.csv"].clone(), files["a.txt"].clone()]);
    let asked = ["data/a.txt".to_string(), "data/nope.txt".to_string()];
    let err = server.client().download_batch("w", "default", &asked).await.unwrap_err();
    assert!(err.to_string().contains("data/nope.txt"), "{err}");

    // The files really are objects in the bucket, under the workspace's default-datastore
    // folder, and nothing else is (no staging copies, no half-written parts).
    let workspace_dir = format!("{PREFIX}/workspaces/{ws_id}/");
    let key = |p: &str| format!("{workspace_dir}datastores/default/{p}");
    let objects = moto.objects(BUCKET, &workspace_dir).await;
    let expected: BTreeSet<String> = remote_paths("data", &files).iter().map(|p| key(p)).collect();
    assert_eq!(objects.keys().cloned().collect::<BTreeSet<_>>(), expected);
    // S3 gives an object assembled from N parts the ETag "<hash>-N": the large file really took
    // the multipart path (three 8 MiB parts), the small ones a single put.
    assert!(objects[&key("data/big.bin")].ends_with("-3"), "big.bin ETag: {objects:?}");
    assert!(!objects[&key("data/a.txt")].contains('-'), "a.txt ETag: {objects:?}");
    assert_eq!(moto.unfinished_uploads(BUCKET).await, Vec::<String>::new());
}

#[tokio::test]
async fn s3_checksum_mismatch_keeps_old_content() {
    let (moto, server, ws_id) = setup().await;
    let http = reqwest::Client::builder().no_proxy().build().expect("HTTP client");
    let url = format!("{}/api/v1/workspaces/w/datastores/default/files/models/model.bin", server.url);
    let old = b"the old model".to_vec();

    let put = |body: Vec<u8>, sha256: String| {
        http.put(&url)
            .query(&[("overwrite", "true")])
            .bearer_auth(&server.token)
            .header("x-cairn-sha256", sha256)
            .body(body)
            .send()
    };
    let created = put(old.clone(), common::sha256_hex(&old)).await.expect("PUT");
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap_or_default());

    // A small body takes the single-put path, a large one the multipart path: neither may
    // replace the old content when the checksum does not match.
    for size in [100, PART_SIZE + 1024 * 1024] {
        let new = vec![7u8; size];
        let wrong = common::sha256_hex(b"something else");
        let refused = put(new, wrong).await.expect("PUT");
        let status = refused.status();
        let body: Value = refused.json().await.expect("JSON error body");
        assert_eq!(status, 422, "{size}-byte body with a wrong checksum: {body}");
        assert_eq!(body["error"]["code"], "unprocessable", "{body}");

        let got = http.get(&url).bearer_auth(&server.token).send().await.expect("GET");
        assert_eq!(got.status(), 200);
        assert!(
            got.bytes().await.expect("body") == old,
            "the old content must survive a refused {size}-byte upload"
        );
    }

    let key = format!("{PREFIX}/workspaces/{ws_id}/datastores/default/models/model.bin");
    assert_eq!(moto.keys(BUCKET, &format!("{PREFIX}/")).await, BTreeSet::from([key]));
    // The refused multipart upload was aborted, not left to accumulate parts in the bucket.
    assert_eq!(moto.unfinished_uploads(BUCKET).await, Vec::<String>::new());
}

#[tokio::test]
async fn s3_datastore_can_be_registered_and_removed_without_deleting_data() {
    let (moto, server, _) = setup().await;
    moto.create_bucket("bucket2").await;
    server.ok(&[
        "datastore",
        "create",
        "s3data",
        "--kind",
        "s3",
        "--location",
        "s3://bucket2/pre",
        "-w",
        "w",
    ]);

    let files = sample_files();
    let src = server.tmp().join("src");
    write_files(&src, &files);
    let report = upload(&server, "s3data", &src, "");
    assert_eq!(strings(&report["uploaded"]), remote_paths("", &files));
    assert_eq!(listed(&server, "s3data"), expected_sizes("", &files));

    let in_bucket: BTreeSet<String> = files.keys().map(|p| format!("pre/{p}")).collect();
    assert_eq!(moto.keys("bucket2", "pre/").await, in_bucket);
    // Registered datastores keep their own location: nothing landed in the artifact store.
    assert_eq!(moto.keys(BUCKET, &format!("{PREFIX}/")).await, BTreeSet::new());

    server.ok(&["datastore", "delete", "s3data", "-w", "w"]);
    let gone = server.fails(&["datastore", "show", "s3data", "-w", "w"]);
    assert!(gone.contains("not found") || gone.contains("404"), "{gone}");
    assert_eq!(moto.keys("bucket2", "pre/").await, in_bucket, "unregistering must not delete the files");

    // Registering the location again shows the same files.
    server.ok(&["datastore", "create", "again", "--kind", "s3", "--location", "s3://bucket2/pre", "-w", "w"]);
    assert_eq!(listed(&server, "again"), expected_sizes("", &files));
    assert_downloads(&server, "again", "", &files);
}

#[tokio::test]
async fn s3_artifacts_survive_kill_and_restart() {
    let (_moto, server, _) = setup().await;
    let files = sample_files();
    let src = server.tmp().join("src");
    write_files(&src, &files);
    upload(&server, "default", &src, "data");

    let server = server.restart();

    assert_eq!(listed(&server, "default"), expected_sizes("data", &files));
    assert_downloads(&server, "default", "data", &files);
    // The checksums recorded before the kill still let an unchanged upload skip every file.
    let again = upload(&server, "default", &src, "data");
    assert_eq!(strings(&again["skipped"]), remote_paths("data", &files));
    assert_eq!(strings(&again["uploaded"]), Vec::<String>::new());
}

#[tokio::test]
async fn s3_model_files_are_stored_once_and_download_intact() {
    let (moto, server, ws_id) = setup().await;
    let files = sample_files();
    let src = server.tmp().join("model");
    write_files(&src, &files);
    let register = || {
        json(&server.ok(&[
            "model",
            "register",
            "--name",
            "m",
            "--path",
            src.to_str().unwrap(),
            "-w",
            "w",
            "-o",
            "json",
        ]))
    };
    assert_eq!(register()["version"], 1);
    let blobs = format!("{PREFIX}/workspaces/{ws_id}/blobs/");
    let stored = moto.objects(BUCKET, &blobs).await;
    assert_eq!(stored.len(), files.len(), "{stored:?}");
    assert_eq!(register()["version"], 2);
    assert_eq!(moto.objects(BUCKET, &blobs).await, stored, "the same bytes were stored again");

    let dest = server.tmp().join("dl");
    server.ok(&["model", "download", "m:2", "-d", dest.to_str().unwrap(), "-w", "w"]);
    for (path, content) in &files {
        assert_eq!(&std::fs::read(dest.join(path)).unwrap(), content, "{path}");
    }
    assert!(moto.unfinished_uploads(BUCKET).await.is_empty());
}
