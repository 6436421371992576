//! Behaviour of workspaces, datastores, files and tokens, driven through the real CLI and HTTP
//! API of a real server — every test runs twice: on SQLite and on a fresh PostgreSQL database.

#[macro_use]
mod common;

use cairn_core::api::{CreateToken, Role};
use common::*;
use futures::{StreamExt, TryStreamExt};
use serde_json::Value;

const WS: &str = "/api/v1/workspaces/w";
const RUNS: &str = "/api/v1/workspaces/w/runs";

on_both_backends!(
    workspaces_are_created_listed_shown_and_deleted,
    invalid_or_duplicate_workspace_names_are_refused_clearly,
    non_empty_workspace_is_deleted_only_with_force,
    roles_and_workspace_scopes_are_enforced,
    bad_tokens_get_401_without_revealing_what_exists,
    upload_skips_unchanged_files_and_refuses_conflicts_without_overwrite,
    upload_refuses_path_traversal_and_writes_nothing_outside,
    checksum_mismatch_is_422_and_keeps_the_old_content,
    the_same_content_sent_again_is_unchanged_and_different_content_a_conflict,
    an_empty_folder_uploads_nothing_successfully,
    interrupted_upload_leaves_nothing_visible_and_a_retry_completes,
    a_trailing_checksum_is_verified_before_the_file_is_visible,
    plans_without_checksums_ask_for_them_only_when_a_same_size_file_exists,
    a_batch_of_small_files_is_stored_whole_or_not_at_all,
    a_path_is_a_file_or_a_folder_not_both,
    unknown_fields_and_wrong_types_are_400_naming_the_field,
    local_datastores_are_registered_checked_and_removed_without_touching_data,
    symbolic_links_never_lead_out_of_a_datastore,
    files_are_downloaded_listed_and_deleted,
    small_files_download_in_batches_whole_and_in_order,
    a_runs_artifacts_download_in_batches_and_by_folder,
    lists_are_paginated,
    everything_acknowledged_survives_kill_9,
    runs_are_searched_by_metrics_params_tags_and_attributes,
    run_properties_are_set_once_and_child_runs_are_listed_by_parent,
    workspace_compute_sizes_are_added_used_and_deleted_only_when_unused,
);

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

async fn workspaces_are_created_listed_shown_and_deleted(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    let created =
        json(&s.ok(&["workspace", "create", "azureml_workspace", "--description", "wine", "-o", "json"]));
    assert_eq!(created["name"], "azureml_workspace");
    s.ok(&["workspace", "create", "second"]);
    let listed = json(&s.ok(&["workspace", "list", "-o", "json"]));
    let names: Vec<_> = listed.as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["azureml_workspace", "second"]);
    let shown = json(&s.ok(&["workspace", "show", "azureml_workspace", "-o", "json"]));
    assert_eq!(shown["workspace"]["description"], "wine");
    assert_eq!(shown["datastores"][0]["name"], "default", "every workspace gets a default datastore");
    assert_eq!(shown["datastores"][0]["kind"], "default");
    s.ok(&["workspace", "delete", "second"]);
    let err = s.fails(&["workspace", "show", "second"]);
    assert!(err.contains("workspace \"second\" not found") && err.contains("404"), "{err}");
}

async fn invalid_or_duplicate_workspace_names_are_refused_clearly(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    for bad in ["Wine", "-wine", "wi ne", "wine/x", &"a".repeat(64)] {
        let err = s.fails(&["workspace", "create", "--", bad]);
        assert!(err.contains("invalid workspace name") && err.contains("lower-case letters"), "{bad}: {err}");
        assert!(err.contains("400"), "{err}");
    }
    s.ok(&["workspace", "create", "wine"]);
    let err = s.fails(&["workspace", "create", "wine"]);
    assert!(err.contains("already exists") && err.contains("409"), "{err}");
    assert_eq!(json(&s.ok(&["workspace", "list", "-o", "json"])).as_array().unwrap().len(), 1);
}

async fn non_empty_workspace_is_deleted_only_with_force(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    s.ok(&["workspace", "create", "w"]);
    let src = s.tmp().join("src");
    write_tree(&src, &[("a.txt", b"a")]);
    s.ok(&["datastore", "upload", "-w", "w", src.to_str().unwrap(), "--target-path", "d", "-q"]);
    let err = s.fails(&["workspace", "delete", "w"]);
    assert!(err.contains("not empty") && err.contains("--force"), "{err}");
    s.ok(&["workspace", "show", "w"]);
    s.ok(&["workspace", "delete", "w", "--force"]);
    s.fails(&["workspace", "show", "w"]);
    // A new workspace of the same name starts empty.
    s.ok(&["workspace", "create", "w"]);
    assert_eq!(json(&s.ok(&["datastore", "ls", "-w", "w", "-o", "json"])).as_array().unwrap().len(), 0);
}

async fn roles_and_workspace_scopes_are_enforced(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    s.ok(&["workspace", "create", "w1"]);
    s.ok(&["workspace", "create", "w2"]);
    let admin = s.client();
    let mk = |name: &str, role, ws: Option<&str>| CreateToken {
        name: name.into(),
        role,
        workspace: ws.map(Into::into),
    };
    let reader = admin.create_token(&mk("reader", Role::Reader, None)).await.unwrap().token;
    let writer = admin.create_token(&mk("writer", Role::Writer, Some("w1"))).await.unwrap().token;

    let r = s.client_with(&reader);
    assert_eq!(r.list_workspaces().await.unwrap().len(), 2);
    let e = r
        .create_workspace(&cairn_core::api::CreateWorkspace { name: "x".into(), description: String::new() })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    assert!(e.to_string().contains("needs admin"), "{e}");
    let e = r.list_tokens().await.unwrap_err();
    assert_eq!(e.status(), Some(403));

    let w = s.client_with(&writer);
    let listed = w.list_workspaces().await.unwrap();
    assert_eq!(
        listed.iter().map(|x| x.name.as_str()).collect::<Vec<_>>(),
        ["w1"],
        "scoped tokens see their workspace only"
    );
    let body = futures::stream::iter(vec![Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"hi"))]);
    w.put_file("w1", "default", "f.txt", body, Default::default()).await.unwrap();
    let e = w.datastore("w2", "default").await.unwrap_err();
    assert_eq!(e.status(), Some(403));
    assert!(e.to_string().contains("limited to workspace \"w1\""), "{e}");
    // A reader may not write files.
    let body = futures::stream::iter(vec![Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"hi"))]);
    let e = r.put_file("w1", "default", "g.txt", body, Default::default()).await.unwrap_err();
    assert_eq!(e.status(), Some(403));

    // Revoked tokens stop working at once; the last admin token cannot be revoked.
    admin.revoke_token("writer").await.unwrap();
    assert_eq!(w.whoami().await.unwrap_err().status(), Some(401));
    let e = admin.revoke_token("admin").await.unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    let names = json(&s.ok(&["token", "list", "-o", "json"]));
    let names: Vec<_> =
        names.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["admin", "reader"]);
    assert!(!s.ok(&["token", "list", "-o", "json"]).contains(&reader), "secrets are never listed");

    // A workspace's tokens go with it: a token of the old w2 does not open a new w2.
    let scoped = admin.create_token(&mk("w2-writer", Role::Writer, Some("w2"))).await.unwrap().token;
    let old = s.client_with(&scoped);
    old.datastore("w2", "default").await.unwrap();
    s.ok(&["workspace", "delete", "w2"]);
    s.ok(&["workspace", "create", "w2"]);
    assert_eq!(old.datastore("w2", "default").await.unwrap_err().status(), Some(401));
    assert!(!s.ok(&["token", "list", "-o", "json"]).contains("w2-writer"));
}

async fn bad_tokens_get_401_without_revealing_what_exists(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    s.ok(&["workspace", "create", "exists"]);
    let http = reqwest::Client::new();
    let mut bodies = Vec::new();
    for ws in ["exists", "does-not-exist"] {
        for auth in [None, Some("Bearer wrong-token"), Some("Basic abc")] {
            let mut rb = http.get(format!("{}/api/v1/workspaces/{ws}", s.url));
            if let Some(a) = auth {
                rb = rb.header("authorization", a);
            }
            let resp = rb.send().await.unwrap();
            assert_eq!(resp.status(), 401);
            assert_eq!(resp.headers()["www-authenticate"], "Bearer");
            bodies.push((auth, resp.text().await.unwrap()));
        }
    }
    // Same answer whether the workspace exists or not.
    assert_eq!(bodies[0..3], bodies[3..6]);
    let v = json(&bodies[1].1);
    assert_eq!(v["error"]["code"], "unauthenticated");
    // The token never appears in the server's log.
    assert!(!s.log().contains(&s.token));
}

async fn upload_skips_unchanged_files_and_refuses_conflicts_without_overwrite(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    s.ok(&["workspace", "create", "w"]);
    let src = s.tmp().join("winedata");
    write_tree(&src, &[("winequality_red.csv", b"a,b\n1,2\n"), ("sub/notes.txt", b"hello")]);
    let src_s = src.to_str().unwrap();
    let first =
        json(&s.ok(&["datastore", "upload", "-w", "w", src_s, "--target-path", "winedata", "-o", "json"]));
    assert_eq!(first["uploaded"].as_array().unwrap().len(), 2);
    let again =
        json(&s.ok(&["datastore", "upload", "-w", "w", src_s, "--target-path", "winedata", "-o", "json"]));
    assert_eq!(again["uploaded"].as_array().unwrap().len(), 0);
    assert_eq!(again["skipped"].as_array().unwrap().len(), 2);

    // One file changes, one is new: without --overwrite nothing at all is written.
    write_tree(&src, &[("sub/notes.txt", b"changed"), ("new.txt", b"new")]);
    let err = s.fails(&["datastore", "upload", "-w", "w", src_s, "--target-path", "winedata"]);
    assert!(err.contains("winedata/sub/notes.txt") && err.contains("--overwrite"), "{err}");
    assert!(err.contains("nothing was uploaded"), "{err}");
    let listed = json(&s.ok(&["datastore", "ls", "-w", "w", "winedata", "-o", "json"]));
    assert_eq!(listed.as_array().unwrap().len(), 2, "new.txt must not have been uploaded: {listed}");

    let done = json(&s.ok(&[
        "datastore",
        "upload",
        "-w",
        "w",
        src_s,
        "--target-path",
        "winedata",
        "--overwrite",
        "-o",
        "json",
    ]));
    assert_eq!(done["uploaded"], serde_json::json!(["winedata/new.txt", "winedata/sub/notes.txt"]));
    let out = s.tmp().join("out");
    s.ok(&[
        "datastore",
        "download",
        "-w",
        "w",
        "winedata/sub/notes.txt",
        "--dest",
        out.to_str().unwrap(),
        "-q",
    ]);
    assert_eq!(std::fs::read(out.join("winedata/sub/notes.txt")).unwrap(), b"changed");
}

async fn upload_refuses_path_traversal_and_writes_nothing_outside(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    s.ok(&["workspace", "create", "w"]);
    let before = files_under(s.tmp());
    let long = "a".repeat(300);
    for raw in [
        "../../../escape.txt",
        "a/../../escape.txt",
        "%2e%2e/%2e%2e/escape.txt",
        "%2E%2E%2F%2E%2E%2Fescape.txt",
        "..%5Cescape.txt",
        "a%5C..%5C..%5Cescape.txt",
        "a%00b",
        "/etc/escape.txt",
        "a//b",
        "./a",
        long.as_str(),
    ] {
        let (status, body) = raw_put(&s, "w", raw, b"evil");
        assert_eq!(status, 400, "{raw}: {body}");
        assert!(body.contains("invalid path"), "{raw}: {body}");
    }
    // A refused path is shown as it was given, quoted once (not escaped as a Rust string, which
    // the JSON body would then escape again); only control characters are escaped.
    let (status, body) = raw_put(&s, "w", "a%5C%22b", b"evil");
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        json(&body)["error"]["message"],
        r#"invalid path "a\"b": it contains a backslash; use '/' to separate folders"#
    );
    let err = s.fails(&["datastore", "ls", "-w", "w", r#"q"/../x"#]);
    assert!(err.contains(r#"error: invalid path "q"/../x": it contains '.' or '..'"#), "{err}");
    let (_, body) = raw_put(&s, "w", "a%00b", b"evil");
    assert_eq!(json(&body)["error"]["message"], r#"invalid path "a\0b": it contains a NUL byte"#);
    let err =
        s.fails(&["datastore", "create", "-w", "w", "x", "--kind", "local", "--location", r#"rel"\dir"#]);
    assert!(err.contains(r#"location "rel"\dir" must be an absolute directory path"#), "{err}");
    let (status, body) = raw_put(&s, "w", "ok/fine.txt", b"fine");
    assert_eq!(status, 201, "{body}");
    let after = files_under(s.tmp());
    let new: Vec<_> = after.iter().filter(|p| !before.contains(p)).collect();
    assert!(new.iter().all(|p| p.ends_with("ok/fine.txt") || !p.contains("escape")), "{new:?}");
    assert!(!after.iter().any(|p| p.contains("escape")), "{after:?}");

    // The same rules apply to upload plans and listings.
    let plan = serde_json::json!({"files": [{"path": "../x", "size": 1, "sha256": "0".repeat(64)}]});
    let (status, body) = s.post(&format!("{WS}/datastores/default/upload-plan"), plan).await;
    assert_eq!(status, 400, "{body}");
    let err = s.fails(&["datastore", "ls", "-w", "w", "../.."]);
    assert!(err.contains("invalid path"), "{err}");

    // A name the file system would take but a local datastore cannot write (it needs room for
    // the temporary name): 400 before anything is sent, from the plan, the file API and a batch.
    let longest = "n".repeat(cairn_blob::LOCAL_NAME_MAX);
    let too_long = "n".repeat(cairn_blob::LOCAL_NAME_MAX + 1);
    let src = s.tmp().join("long");
    write_tree(&src, &[(too_long.as_str(), b"too long"), ("short.txt", b"short")]);
    let err = s.fails(&["datastore", "upload", "-w", "w", src.to_str().unwrap(), "--target-path", "long"]);
    assert!(
        err.contains(&format!("at most {} bytes", cairn_blob::LOCAL_NAME_MAX)) && err.contains("400"),
        "{err}"
    );
    let (status, body) = raw_put(&s, "w", &format!("long/{too_long}"), b"x");
    assert_eq!(status, 400, "{body}");
    let (status, body) =
        post_batch(&s, &[(&format!("long/{too_long}"), b"x", "", String::new())], false).await;
    assert_eq!(status, 400, "{body}");
    let err = s.fails(&["datastore", "ls", "-w", "w", "long"]);
    assert!(
        err.contains("\"long\" in datastore \"default\" not found"),
        "nothing of the refused upload is stored: {err}"
    );
    std::fs::remove_file(src.join(&too_long)).unwrap();
    write_tree(&src, &[(longest.as_str(), b"longest")]);
    s.ok(&["datastore", "upload", "-w", "w", src.to_str().unwrap(), "--target-path", "long", "-q"]);
    let listed = json(&s.ok(&["datastore", "ls", "-w", "w", "long", "-o", "json"]));
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
}

async fn checksum_mismatch_is_422_and_keeps_the_old_content(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    s.ok(&["workspace", "create", "w"]);
    let c = s.client();
    let put = |data: &'static [u8], sha: String, overwrite: bool| {
        let c = c.clone();
        async move {
            let body = futures::stream::iter(vec![Ok::<_, std::io::Error>(bytes::Bytes::from_static(data))]);
            c.put_file("w", "default", "f.csv", body, cairn_client::PutFile { sha256: Some(&sha), overwrite })
                .await
        }
    };
    put(b"old", sha256_hex(b"old"), false).await.unwrap();
    // No checksum and no length (a streamed body), nothing to replace: the server does not look
    // first, and the atomic create refuses it; nothing else is left in the store.
    let body = futures::stream::iter(vec![Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"other"))]);
    let e = c
        .put_file("w", "default", "f.csv", body, cairn_client::PutFile { sha256: None, overwrite: false })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    assert!(e.to_string().contains("f.csv already exists"), "{e}");
    let stored = files_under(&s.data_dir.join("artifacts"));
    assert_eq!(stored.len(), 1, "{stored:?}");
    let e = put(b"new", sha256_hex(b"something else"), true).await.unwrap_err();
    assert_eq!(e.status(), Some(422), "{e}");
    assert!(e.to_string().contains("does not match its checksum"), "{e}");
    let e = put(b"new", "xyz".into(), true).await.unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    let out = s.tmp().join("out");
    s.ok(&["datastore", "download", "-w", "w", "f.csv", "--dest", out.to_str().unwrap(), "-q"]);
    assert_eq!(std::fs::read(out.join("f.csv")).unwrap(), b"old");
}

async fn the_same_content_sent_again_is_unchanged_and_different_content_a_conflict(b: Backend) {
    use std::os::unix::fs::MetadataExt;
    let (s, _db) = start_on(b, Opts::default()).await;
    s.ok(&["workspace", "create", "w"]);
    let c = s.client();
    let artifacts = s.data_dir.join("artifacts");
    // Larger than one part (8 MiB): the server looks before it reads such a body.
    let big: Vec<u8> = (0..9 * 1024 * 1024 + 7).map(|i| (i % 251) as u8).collect();
    let mut other_big = big.clone();
    *other_big.last_mut().unwrap() ^= 1;
    let streamed = |data: Vec<u8>| {
        let c = c.clone();
        async move {
            // No length and no checksum: the server does not look first, the create finds it.
            let body = futures::stream::iter(
                data.chunks(1 << 20)
                    .map(|b| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(b)))
                    .collect::<Vec<_>>(),
            );
            c.put_file("w", "default", "d/f", body, cairn_client::PutFile { sha256: None, overwrite: false })
                .await
        }
    };
    for (content, other) in [(b"hello".to_vec(), b"hellO".to_vec()), (big, other_big)] {
        let (status, body) = raw_put(&s, "w", "d/f", &content);
        assert_eq!(status, 201, "{body}");
        let stored =
            artifacts.join(files_under(&artifacts).into_iter().find(|p| p.ends_with("d/f")).unwrap());
        let before = std::fs::metadata(&stored).unwrap();
        // The same bytes again, without a checksum or overwrite: unchanged, nothing rewritten.
        let (status, body) = raw_put(&s, "w", "d/f", &content);
        assert_eq!(status, 200, "{body}");
        let body = json(&body);
        assert_eq!(body["status"], "unchanged", "{body}");
        assert_eq!(body["sha256"], sha256_hex(&content));
        let again = streamed(content.clone()).await.unwrap();
        assert_eq!((again.status, again.size), (cairn_core::api::PutStatus::Unchanged, content.len() as u64));
        let after = std::fs::metadata(&stored).unwrap();
        assert_eq!(
            (after.ino(), after.mtime_nsec(), after.ctime_nsec()),
            (before.ino(), before.mtime_nsec(), before.ctime_nsec())
        );
        // Different content of the same length, or of another length: 409, nothing changed.
        for different in [other.clone(), content[..content.len() - 1].to_vec()] {
            let (status, body) = raw_put(&s, "w", "d/f", &different);
            assert_eq!(status, 409, "{body}");
            assert!(body.contains("d/f already exists with different content"), "{body}");
            let e = streamed(different).await.unwrap_err();
            assert_eq!(e.status(), Some(409), "{e}");
            assert!(e.to_string().contains("d/f already exists with different content"), "{e}");
        }
        assert_eq!(std::fs::read(&stored).unwrap(), content);
        let left = files_under(&artifacts);
        assert_eq!(left.len(), 1, "no staging file is left: {left:?}");
        s.ok(&["datastore", "rm", "-w", "w", "d/f"]);
    }
}

async fn an_empty_folder_uploads_nothing_successfully(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    s.ok(&["workspace", "create", "w"]);
    let empty = s.tmp().join("empty");
    std::fs::create_dir_all(empty.join("only/folders")).unwrap();
    for output in ["table", "json"] {
        let out = s.cli(&[
            "datastore",
            "upload",
            "-w",
            "w",
            empty.to_str().unwrap(),
            "--target-path",
            "x",
            "-o",
            output,
        ]);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains("warning:") && stderr.contains("holds no files to upload; nothing was uploaded"),
            "{stderr}"
        );
        if output == "json" {
            let report = json(&stdout);
            assert_eq!(
                (report["files"].as_u64(), report["uploaded"].as_array().map(Vec::len)),
                (Some(0), Some(0))
            );
        } else {
            assert!(stdout.contains("0 file(s)"), "{stdout}");
        }
    }
    // The root of an empty datastore is an empty listing, not an error.
    assert_eq!(json(&s.ok(&["datastore", "ls", "-w", "w", "-o", "json"])), serde_json::json!([]));
    // Nothing to send still asks the server: a datastore or workspace that is not there fails.
    let err = s.fails(&["datastore", "upload", "-w", "w", "-d", "nope", empty.to_str().unwrap()]);
    assert!(err.contains("datastore \"nope\" in workspace \"w\" not found") && err.contains("404"), "{err}");
    let err = s.fails(&["datastore", "upload", "-w", "nope", empty.to_str().unwrap()]);
    assert!(err.contains("\"nope\" not found"), "{err}");
}

async fn interrupted_upload_leaves_nothing_visible_and_a_retry_completes(b: Backend) {
    use std::io::Write;
    let (s, _db) = start_on(b, Opts::default()).await;
    s.ok(&["workspace", "create", "w"]);
    let size = 24 * 1024 * 1024;
    let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    {
        // A client that announces 24 MiB, sends 12, and dies.
        let mut sock = std::net::TcpStream::connect(authority(&s.url)).unwrap();
        write!(
            sock,
            "PUT /api/v1/workspaces/w/datastores/default/files/big/model.bin HTTP/1.1\r\nHost: x\r\n\
             Authorization: Bearer {}\r\nContent-Length: {size}\r\nx-cairn-sha256: {}\r\n\r\n",
            s.token,
            sha256_hex(&data)
        )
        .unwrap();
        sock.write_all(&data[..size / 2]).unwrap();
        sock.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let listed = json(&s.ok(&["datastore", "ls", "-w", "w", "-o", "json"]));
    assert_eq!(listed.as_array().unwrap().len(), 0, "{listed}");
    let leftovers: Vec<_> = files_under(&s.data_dir.join("artifacts"));
    assert!(leftovers.is_empty(), "no partial file may remain: {leftovers:?}");

    let src = s.tmp().join("big");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("model.bin"), &data).unwrap();
    s.ok(&["datastore", "upload", "-w", "w", src.to_str().unwrap(), "--target-path", "big", "-q"]);
    let listed = json(&s.ok(&["datastore", "ls", "-w", "w", "-o", "json"]));
    assert_eq!(listed[0]["size"], size as u64);

    // Asked for, the client's per-file timings go to stderr; stdout stays the report.
    let out = s
        .cmd()
        .env("CAIRN_LOG", "cairn_client=debug")
        .args([
            "datastore",
            "upload",
            "-w",
            "w",
            src.to_str().unwrap(),
            "--target-path",
            "big2",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("file read timings") && stderr.contains(&format!("size={size}")), "{stderr}");
    assert_eq!(json(&String::from_utf8_lossy(&out.stdout))["uploaded"][0], "big2/model.bin");
}

/// A raw chunked PUT of `data` (in 64 KiB chunks) to the default datastore of `w`, optionally
/// declaring (`Trailer:`) and sending a checksum trailer named `name`.
fn chunked_put(
    s: &Server,
    path: &str,
    data: &[u8],
    name: &str,
    declare: bool,
    trailer: Option<&str>,
) -> (u16, String) {
    let mut req = format!(
        "PUT /api/v1/workspaces/w/datastores/default/files/{path} HTTP/1.1\r\nHost: {}\r\n\
         Authorization: Bearer {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n{}\r\n",
        authority(&s.url),
        s.token,
        if declare { format!("Trailer: {name}\r\n") } else { String::new() }
    )
    .into_bytes();
    for chunk in data.chunks(64 << 10) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n");
    if let Some(t) = trailer {
        req.extend_from_slice(format!("{name}: {t}\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    raw_http(&s.url, &req)
}

fn crc32_hex(data: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(data))
}

async fn a_trailing_checksum_is_verified_before_the_file_is_visible(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    s.ok(&["workspace", "create", "w"]);
    let artifacts = s.data_dir.join("artifacts");
    let mut stored = Vec::new();
    // SHA-256 (what the server records) or CRC-32 (a cheaper check of the transfer).
    type Checksum = fn(&[u8]) -> String;
    let checksums: [(&str, Checksum); 2] = [("x-cairn-sha256", sha256_hex), ("x-cairn-crc32", crc32_hex)];
    for (header, checksum) in checksums {
        // Small bodies are buffered and written at once; large ones stream to a staging file.
        for (name, size) in [("small.bin", 1000usize), ("large.bin", 9 << 20)] {
            let name = format!("{}-{name}", &header[8..]);
            let name = name.as_str();
            let data: Vec<u8> = (0..size).map(|i| (i * 13 % 251) as u8).collect();
            let (status, body) =
                chunked_put(&s, name, &data, header, true, Some(&checksum(b"something else")));
            assert_eq!(status, 422, "{name}: {body}");
            assert!(body.contains("does not match its checksum"), "{body}");
            let (status, body) = chunked_put(&s, name, &data, header, true, None);
            assert_eq!(status, 400, "{name}: {body}");
            assert!(body.contains("trailer announced for") && body.contains("did not arrive"), "{body}");
            let (status, body) = chunked_put(&s, name, &data, header, true, Some("not-a-checksum"));
            assert_eq!(status, 400, "{name}: {body}");
            let listed = json(&s.ok(&["datastore", "ls", "-w", "w", "-o", "json"]));
            assert_eq!(
                listed.as_array().unwrap().len(),
                stored.len(),
                "{name} must not be visible: {listed}"
            );
            let left = files_under(&artifacts);
            assert_eq!(left.len(), stored.len(), "nothing of a refused upload may remain: {left:?}");

            let (status, body) = chunked_put(&s, name, &data, header, true, Some(&checksum(&data)));
            assert_eq!(status, 201, "{name}: {body}");
            // Whichever checksum came, the SHA-256 of the content is what is recorded: on arrival,
            // unless a large file came with only a CRC-32; that one is hashed when first needed.
            let lazy = header == "x-cairn-crc32" && size > cairn_blob::PART_SIZE;
            let expected = if lazy { serde_json::Value::Null } else { sha256_hex(&data).into() };
            assert_eq!(json(&body)["sha256"], expected, "{name}");
            stored.push(name.to_string());
            if lazy {
                // Sent again by the CLI: the plan asks for its checksum, the server hashes what
                // it stored, and the file is skipped as already there.
                let src = s.tmp().join("lazy");
                write_tree(&src, &[(name, &data)]);
                let again =
                    json(&s.ok(&["datastore", "upload", "-w", "w", src.to_str().unwrap(), "-o", "json"]));
                assert_eq!(again["skipped"], serde_json::json!([name]), "{again}");
                let mut changed = data.clone();
                changed[5 << 20] ^= 1;
                write_tree(&src, &[(name, &changed)]);
                let refused = s.fails(&["datastore", "upload", "-w", "w", src.to_str().unwrap()]);
                assert!(refused.contains(name) && refused.contains("--overwrite"), "{refused}");
            }
            let left = files_under(&artifacts);
            assert!(left.len() == stored.len() && left.iter().all(|p| !p.contains('#')), "{left:?}");
        }
    }

    // Neither header nor trailer: accepted, and the server's own checksum is recorded and used.
    let (status, body) = chunked_put(&s, "plain.bin", b"no checksum sent", "x-cairn-sha256", false, None);
    assert_eq!(status, 201, "{body}");
    assert_eq!(json(&body)["sha256"], sha256_hex(b"no checksum sent"));
    let src = s.tmp().join("plain");
    write_tree(&src, &[("plain.bin", b"no checksum sent")]);
    let again = json(&s.ok(&["datastore", "upload", "-w", "w", src.to_str().unwrap(), "-o", "json"]));
    assert_eq!(again["skipped"], serde_json::json!(["plain.bin"]), "{again}");
}

/// The stored file of datastore path `path` under the server's artifact folder (found by name:
/// the workspace's folder has its id in it).
fn artifacts_file(artifacts: &std::path::Path, path: &str) -> std::path::PathBuf {
    let found: Vec<String> =
        files_under(artifacts).into_iter().filter(|p| p.ends_with(&format!("/{path}"))).collect();
    assert_eq!(found.len(), 1, "{path} under {}: {found:?}", artifacts.display());
    artifacts.join(&found[0])
}

/// One part of an upload batch: path, content, checksum header (or "") and value.
type BatchPart<'a> = (&'a str, &'a [u8], &'a str, String);

/// `POST …/upload-batch` of `parts` as multipart.
async fn post_batch(s: &Server, parts: &[BatchPart<'_>], overwrite: bool) -> (u16, Value) {
    let mut form = reqwest::multipart::Form::new();
    for (path, content, header, value) in parts {
        let mut headers = reqwest::header::HeaderMap::new();
        if !header.is_empty() {
            headers.insert(
                reqwest::header::HeaderName::from_bytes(header.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let part =
            reqwest::multipart::Part::bytes(content.to_vec()).file_name(path.to_string()).headers(headers);
        form = form.part("file", part);
    }
    let resp = reqwest::Client::new()
        .post(format!("{}{WS}/datastores/default/upload-batch?overwrite={overwrite}", s.url))
        .bearer_auth(&s.token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, json(&resp.text().await.unwrap()))
}

async fn a_batch_of_small_files_is_stored_whole_or_not_at_all(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    s.ok(&["workspace", "create", "w"]);
    let artifacts = s.data_dir.join("artifacts");
    let listed = |s: &Server| {
        let v = json(&s.ok(&["datastore", "ls", "-w", "w", "-o", "json"]));
        v.as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    let crc = |d: &[u8]| crc32_hex(d);
    let sha = |d: &[u8]| sha256_hex(d);
    let (a, b_, c) = (b"alpha".as_slice(), b"beta".as_slice(), vec![7u8; 100_000]);
    let good = |p: &'static str, d: &'static [u8]| (p, d, "x-cairn-crc32", crc(d));

    // Refused before anything is written: a wrong checksum in any part, a path that escapes,
    // a path twice, a part with no file name, a bad checksum value, no part at all.
    let refusals: Vec<(Vec<BatchPart>, u16, &str)> = vec![
        (
            vec![good("b/a.txt", a), ("b/b.txt", b_, "x-cairn-crc32", crc(b"other"))],
            422,
            "does not match its checksum",
        ),
        (vec![good("b/a.txt", a), ("b/b.txt", b_, "x-cairn-sha256", sha(b"other"))], 422, "expected sha256"),
        (vec![good("b/a.txt", a), ("../escape.txt", b_, "", String::new())], 400, ".."),
        (vec![good("b/a.txt", a), good("b/a.txt", a)], 400, "appears twice"),
        (
            vec![good("b/a.txt", a), ("b/b.txt", b_, "x-cairn-crc32", "xyz".into())],
            400,
            "8 hexadecimal digits",
        ),
    ];
    for (parts, status, says) in &refusals {
        let (got, body) = post_batch(&s, parts, false).await;
        assert_eq!(got, *status, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(says), "{says}: {body}");
        assert!(listed(&s).is_empty(), "nothing may be stored: {body}");
    }
    let (got, body) = post_batch(&s, &[], false).await;
    assert_eq!(got, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("upload batch"), "{body}");
    let resp = reqwest::Client::new()
        .post(format!("{}{WS}/datastores/default/upload-batch", s.url))
        .bearer_auth(&s.token)
        .body("not multipart")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert!(json(&resp.text().await.unwrap())["error"]["message"].as_str().unwrap().contains("multipart"));

    // Stored: every file, with the SHA-256 of what arrived; a checksum may be left out.
    let parts = vec![
        good("b/a.txt", a),
        ("b/sub/b.txt", b_, "x-cairn-sha256", sha(b_)),
        ("b/c.bin", &c[..], "", String::new()),
    ];
    let (got, body) = post_batch(&s, &parts, false).await;
    assert_eq!(got, 200, "{body}");
    let statuses: Vec<_> = body["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap(),
                f["status"].as_str().unwrap(),
                f["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("b/a.txt", "created", sha(a)),
            ("b/sub/b.txt", "created", sha(b_)),
            ("b/c.bin", "created", sha(&c))
        ]
    );
    assert_eq!(listed(&s), ["b/a.txt", "b/c.bin", "b/sub/b.txt"]);
    // Recorded: a plan with the same checksums skips them.
    let plan =
        serde_json::json!({"files": [{"path": "b/a.txt", "size": 5, "sha256": sha(a)}], "overwrite": false});
    let (_, v) = s.post(&format!("{WS}/datastores/default/upload-plan"), plan).await;
    assert_eq!(v["files"][0]["action"], "skip", "{v}");

    // One file already there with other content, without overwrite: 409 naming it, and the
    // batch's new files are undone.
    let (got, body) = post_batch(&s, &[good("b/new.txt", b"new"), good("b/a.txt", b"changed")], false).await;
    assert_eq!(got, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already exist with different content (\"b/a.txt\")"),
        "{body}"
    );
    assert_eq!(listed(&s), ["b/a.txt", "b/c.bin", "b/sub/b.txt"], "b/new.txt must be undone");
    // The same batch sent again (its answer lost): the files already there are unchanged, the
    // others stored; nothing is rewritten.
    let before = std::fs::metadata(artifacts_file(&artifacts, "b/a.txt")).unwrap().modified().unwrap();
    let (got, body) =
        post_batch(&s, &[good("b/a.txt", a), good("b/again.txt", b"again"), good("b/sub/b.txt", b_)], false)
            .await;
    assert_eq!(got, 200, "{body}");
    let statuses: Vec<_> =
        body["files"].as_array().unwrap().iter().map(|f| f["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["unchanged", "created", "unchanged"], "{body}");
    assert_eq!(std::fs::metadata(artifacts_file(&artifacts, "b/a.txt")).unwrap().modified().unwrap(), before);
    let (got, body) = post_batch(&s, &[good("b/a.txt", a)], false).await;
    assert_eq!((got, body["files"][0]["status"].as_str()), (200, Some("unchanged")), "{body}");
    assert_eq!(listed(&s), ["b/a.txt", "b/again.txt", "b/c.bin", "b/sub/b.txt"]);
    // With overwrite: replaced and created.
    let (got, body) = post_batch(&s, &[good("b/new.txt", b"new"), good("b/a.txt", b"changed")], true).await;
    assert_eq!(got, 200, "{body}");
    assert_eq!(body["files"][0]["status"], "created");
    assert_eq!(body["files"][1]["status"], "replaced");
    let out = s.tmp().join("dl");
    s.ok(&["datastore", "download", "-w", "w", "b", "--dest", out.to_str().unwrap(), "-q"]);
    assert_eq!(std::fs::read(out.join("b/a.txt")).unwrap(), b"changed");
    assert_eq!(std::fs::read(out.join("b/c.bin")).unwrap(), c);
    let left = files_under(&artifacts);
    assert!(left.iter().all(|p| !p.contains('#')), "no staging file may be left: {left:?}");

    // Too much for one batch: 413, nothing stored. The body (17 MiB less a little) stays under
    // the request limit so that the server reads it all before it answers: past that limit it
    // answers while the client is still sending, and a client blocked in a write may see the
    // connection reset (broken pipe) before it reads the 413.
    let big = vec![0u8; (8 << 20) + (256 << 10)];
    let (got, body) = post_batch(
        &s,
        &[("big/1.bin", &big[..], "", String::new()), ("big/2.bin", &big[..], "", String::new())],
        false,
    )
    .await;
    assert_eq!(got, 413, "{body}");
    let many: Vec<(String, &[u8])> = (0..1001).map(|i| (format!("many/{i}.txt"), b"x".as_slice())).collect();
    let many: Vec<BatchPart> = many.iter().map(|(p, d)| (p.as_str(), *d, "", String::new())).collect();
    let (got, body) = post_batch(&s, &many, false).await;
    assert_eq!(got, 413, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("1000 files"), "{body}");
    assert_eq!(listed(&s), ["b/a.txt", "b/again.txt", "b/c.bin", "b/new.txt", "b/sub/b.txt"]);

    // The CLI sends small files in batches: names that a multipart header must quote or encode
    // arrive as they are, and a second upload finds them all there.
    let names = ["dír é/naïve \"q\" 'x' #1 %20.txt", "a+b=c&d;e.txt", "plain.txt"];
    let src = s.tmp().join("odd");
    write_tree(&src, &names.iter().map(|n| (*n, n.as_bytes())).collect::<Vec<_>>());
    let upload_odd = || {
        let src = src.to_str().unwrap();
        json(&s.ok(&["datastore", "upload", "-w", "w", src, "--target-path", "odd", "-o", "json"]))
    };
    let first = upload_odd();
    assert_eq!(first["uploaded"].as_array().unwrap().len(), 3, "{first}");
    let mut expected: Vec<String> = names.iter().map(|n| format!("odd/{n}")).collect();
    expected.sort();
    assert_eq!(listed(&s).into_iter().filter(|p| p.starts_with("odd/")).collect::<Vec<_>>(), expected);
    let again = upload_odd();
    assert_eq!(again["skipped"].as_array().unwrap().len(), 3, "{again}");
}

async fn a_path_is_a_file_or_a_folder_not_both(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    s.ok(&["workspace", "create", "w"]);
    let src = s.tmp().join("first");
    write_tree(&src, &[("a", b"a file"), ("d/e/f.txt", b"deep")]);
    s.ok(&["datastore", "upload", "-w", "w", src.to_str().unwrap(), "-q"]);
    let listed = |s: &Server| {
        let v = json(&s.ok(&["datastore", "ls", "-w", "w", "-o", "json"]));
        v.as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    let before = listed(&s);
    assert_eq!(before, ["a", "d/e/f.txt"]);

    // The plan says so up front, with or without overwrite, and why; other files are unaffected.
    for overwrite in [false, true] {
        let files = serde_json::json!([
            {"path": "a/b.txt", "size": 1},
            {"path": "d/e", "size": 1},
            {"path": "x", "size": 1},
            {"path": "x/y.txt", "size": 1},
            {"path": "fine.txt", "size": 1},
        ]);
        let (status, v) = s
            .post(
                &format!("{WS}/datastores/default/upload-plan"),
                serde_json::json!({"files": files, "overwrite": overwrite}),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        let got: Vec<(&str, &str)> = v["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["action"].as_str().unwrap(), e["reason"].as_str().unwrap_or("")))
            .collect();
        assert_eq!(
            got,
            [
                ("clash", "a/b.txt cannot be stored: a is a file in this datastore, not a folder"),
                ("clash", "d/e is a folder in this datastore; a file cannot take its place"),
                ("clash", "x is a folder of this same upload; it cannot also be a file"),
                ("clash", "x/y.txt cannot be stored: x is a file of this same upload, not a folder"),
                ("upload", ""),
            ]
        );
    }
    // A plan whose common folder runs through a file finds it too.
    let files = serde_json::json!([{"path": "a/b/c.txt", "size": 1}, {"path": "a/b/d.txt", "size": 1}]);
    let (_, v) =
        s.post(&format!("{WS}/datastores/default/upload-plan"), serde_json::json!({"files": files})).await;
    assert_eq!(v["files"][0]["action"], "clash", "{v}");
    assert_eq!(
        v["files"][1]["reason"],
        "a/b/d.txt cannot be stored: a is a file in this datastore, not a folder"
    );

    // Through the CLI: refused before anything is written, whatever --overwrite says.
    let clashing = s.tmp().join("clashing");
    write_tree(&clashing, &[("a/b.txt", b"under a file"), ("new.txt", b"new")]);
    for extra in [None, Some("--overwrite")] {
        let mut args = vec!["datastore", "upload", "-w", "w", clashing.to_str().unwrap()];
        args.extend(extra);
        let err = s.fails(&args);
        assert!(
            err.contains("1 file(s) cannot be stored")
                && err.contains("a is a file in this datastore")
                && err.contains("nothing was uploaded")
                && err.contains("409"),
            "{err}"
        );
        assert_eq!(listed(&s), before);
    }

    // Straight to the file API (no plan): 409 saying why, nothing stored, no server path shown.
    for overwrite in ["false", "true"] {
        for (path, says) in [
            ("a/b.txt", "a/b.txt cannot be stored: a is a file here, not a folder"),
            ("d/e", "d/e is a folder here; a file cannot take its place"),
        ] {
            let (status, body) = raw_put(&s, "w", &format!("{path}?overwrite={overwrite}"), b"body");
            assert_eq!(status, 409, "{body}");
            assert_eq!(json(&body)["error"]["message"], says);
        }
        let (got, body) = post_batch(
            &s,
            &[("ok.txt", b"ok", "", String::new()), ("d/e", b"x", "", String::new())],
            overwrite == "true",
        )
        .await;
        assert_eq!(got, 409, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("d/e is a folder"), "{body}");
    }
    assert_eq!(listed(&s), before, "nothing of the refused writes is stored");
    let left = files_under(&s.data_dir.join("artifacts"));
    assert!(left.iter().all(|p| !p.contains('#')), "no staging file may be left: {left:?}");

    // Reading under a file: 404, not a storage failure.
    let (status, body) = s.get(&format!("{WS}/datastores/default/files/a/b.txt")).await;
    assert_eq!(status, 404, "{body}");
}

async fn plans_without_checksums_ask_for_them_only_when_a_same_size_file_exists(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    s.ok(&["workspace", "create", "w"]);
    let src = s.tmp().join("d");
    write_tree(&src, &[("same.txt", b"12345"), ("other.txt", b"abc")]);
    s.ok(&["datastore", "upload", "-w", "w", src.to_str().unwrap(), "--target-path", "d", "-q"]);
    let plan = |files: Value, overwrite: bool| {
        let body = serde_json::json!({"files": files, "overwrite": overwrite});
        let s = &s;
        async move {
            let (status, v) = s.post(&format!("{WS}/datastores/default/upload-plan"), body).await;
            assert_eq!(status, 200, "{v}");
            v["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["action"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    let files = serde_json::json!([
        {"path": "d/same.txt", "size": 5},
        {"path": "d/other.txt", "size": 4},
        {"path": "d/new.txt", "size": 3},
        {"path": "d/same.txt", "size": 5, "sha256": sha256_hex(b"12345")},
        {"path": "d/same.txt", "size": 5, "sha256": sha256_hex(b"54321")},
    ]);
    assert_eq!(plan(files.clone(), false).await, ["checksum", "conflict", "upload", "skip", "conflict"]);
    assert_eq!(plan(files, true).await, ["checksum", "upload", "upload", "skip", "upload"]);

    // Through the CLI: a same-size file with other content is hashed, found different, refused.
    write_tree(&src, &[("same.txt", b"54321"), ("new.txt", b"new")]);
    let err = s.fails(&["datastore", "upload", "-w", "w", src.to_str().unwrap(), "--target-path", "d"]);
    assert!(err.contains("d/same.txt") && err.contains("nothing was uploaded"), "{err}");
    assert!(!err.contains("d/other.txt"), "{err}");
    let listed = json(&s.ok(&["datastore", "ls", "-w", "w", "d", "-o", "json"]));
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let done = json(&s.ok(&[
        "datastore",
        "upload",
        "-w",
        "w",
        src.to_str().unwrap(),
        "--target-path",
        "d",
        "--overwrite",
        "-o",
        "json",
    ]));
    assert_eq!(done["uploaded"], serde_json::json!(["d/new.txt", "d/same.txt"]), "{done}");
    assert_eq!(done["skipped"], serde_json::json!(["d/other.txt"]), "{done}");
}

async fn unknown_fields_and_wrong_types_are_400_naming_the_field(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    let http = reqwest::Client::new();
    // A method a path does not take: 405 in the API's error shape, with Allow.
    let resp = http.patch(format!("{}/api/v1/workspaces", s.url)).bearer_auth(&s.token).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(resp.headers()["allow"], "GET,HEAD,POST");
    let body = json(&resp.text().await.unwrap());
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("/api/v1/workspaces does not take PATCH"),
        "{body}"
    );
    // A name no workspace or datastore can have, in a URL: 400 naming the rule, not a 404.
    s.ok(&["workspace", "create", "nw"]);
    for path in [
        "workspaces/UP",
        "workspaces/..%2f..%2fetc",
        "workspaces/bad%20name/datastores",
        "workspaces/nw/datastores/..%2fx",
    ] {
        let (status, body) = s.call(reqwest::Method::GET, &format!("/api/v1/{path}"), None).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("invalid"), "{path}: {body}");
    }
    s.ok(&["workspace", "delete", "nw"]);
    // The scheme of an Authorization header is case-insensitive (RFC 7235).
    let resp = http
        .get(format!("{}/api/v1/workspaces", s.url))
        .header("authorization", format!("BEARER {}", s.token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let post = |body: &'static str| {
        http.post(format!("{}/api/v1/workspaces", s.url))
            .bearer_auth(&s.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for (body, field) in [
        (r#"{"name": "w", "colour": "blue"}"#, "colour"),
        (r#"{"name": 42}"#, "name"),
        (r#"{"description": "no name"}"#, "name"),
        (r#"{"name": "w""#, "JSON"),
    ] {
        let resp = post(body).await.unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_argument");
        assert!(v["error"]["message"].as_str().unwrap().contains(field), "{body}: {v}");
    }
    let (status, body) = s.get("/api/v1/workspaces?page_size=lots").await;
    assert_eq!(status, 400);
    assert!(body.to_string().contains("page_size"), "{body}");
    assert_eq!(
        json(&s.ok(&["workspace", "list", "-o", "json"])).as_array().unwrap().len(),
        0,
        "nothing was created"
    );
}

async fn symbolic_links_never_lead_out_of_a_datastore(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    s.ok(&["workspace", "create", "w"]);
    let dir = s.tmp().join("shared");
    let victim = s.tmp().join("victim");
    write_tree(&dir, &[("real/r.txt", b"inside"), ("keep.txt", b"k")]);
    write_tree(&victim, &[("inner/p.txt", b"outside")]);
    let link = |target: &std::path::Path, at: &str| std::os::unix::fs::symlink(target, dir.join(at)).unwrap();
    // Planted by whoever can write the folder (a job that mounts it, say): links out to the
    // server's secrets and to another folder, and one link that stays inside.
    link(&s.data_dir.join("admin-token"), "token");
    link(&s.data_dir, "datadir");
    link(&victim, "vlink");
    link(&dir.join("real"), "inside");
    s.ok(&[
        "datastore",
        "create",
        "shared",
        "--kind",
        "local",
        "--location",
        dir.to_str().unwrap(),
        "-w",
        "w",
    ]);
    let ds = format!("{WS}/datastores/shared");

    // Listings leave the links out; a link inside the datastore is followed.
    let ls = json(&s.ok(&["datastore", "ls", "-w", "w", "-d", "shared", "-o", "json"]));
    let paths: Vec<&str> = ls.as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["inside/r.txt", "keep.txt", "real/r.txt"], "{ls}");
    // Reads, writes and deletes through them are refused, naming the reason.
    for path in ["token", "datadir/admin-token", "vlink/inner/p.txt"] {
        let (status, body) = s.call(reqwest::Method::GET, &format!("{ds}/files/{path}"), None).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.to_string().contains("symbolic link"), "{path}: {body}");
    }
    let (status, body) = s
        .call(
            reqwest::Method::POST,
            &format!("{ds}/download-batch"),
            Some(serde_json::json!({"paths": ["keep.txt", "token"]})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let src = s.tmp().join("up");
    write_tree(&src, &[("pw.txt", b"planted")]);
    let err = s.fails(&[
        "datastore",
        "upload",
        "-w",
        "w",
        "-d",
        "shared",
        src.to_str().unwrap(),
        "--target-path",
        "datadir",
        "-q",
    ]);
    assert!(err.contains("symbolic link"), "{err}");
    assert!(!s.data_dir.join("pw.txt").exists());
    let err = s.fails(&["datastore", "rm", "-w", "w", "-d", "shared", "vlink/inner"]);
    assert!(err.contains("symbolic link") || err.contains("not found"), "{err}");
    assert_eq!(std::fs::read(victim.join("inner/p.txt")).unwrap(), b"outside");
    let token = std::fs::read_to_string(s.data_dir.join("admin-token")).unwrap();
    assert_eq!(token.trim(), s.token.trim());
    // Through the link that stays inside, everything works.
    s.ok(&[
        "datastore",
        "download",
        "-w",
        "w",
        "-d",
        "shared",
        "inside/r.txt",
        "--dest",
        s.tmp().join("dl").to_str().unwrap(),
        "-q",
    ]);
    assert_eq!(std::fs::read(s.tmp().join("dl/inside/r.txt")).unwrap(), b"inside");

    // On the upload side, links in the source are followed (files and folders alike); what is
    // not a regular file in the end is left out and said so.
    let src4 = s.tmp().join("s4");
    write_tree(&src4, &[("real/r.txt", b"r")]);
    std::os::unix::fs::symlink("real", src4.join("linkdir")).unwrap();
    std::os::unix::fs::symlink("real/r.txt", src4.join("linkfile")).unwrap();
    std::os::unix::fs::symlink("/nonexistent", src4.join("dangling")).unwrap();
    let out = s.cli(&[
        "datastore",
        "upload",
        "-w",
        "w",
        src4.to_str().unwrap(),
        "--target-path",
        "sym",
        "-q",
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let report = json(&String::from_utf8_lossy(&out.stdout));
    let mut uploaded: Vec<&str> =
        report["uploaded"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    uploaded.sort();
    assert_eq!(uploaded, ["sym/linkdir/r.txt", "sym/linkfile", "sym/real/r.txt"], "{report}");
    assert!(report["ignored"][0].as_str().unwrap().contains("dangling: a broken link"), "{report}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning: left out"), "{out:?}");
    s.ok(&["datastore", "rm", "-w", "w", "sym"]);

    // A single file is deleted by its path (it used to be looked for as a folder only: 404).
    s.ok(&["datastore", "rm", "-w", "w", "-d", "shared", "keep.txt"]);
    assert!(!dir.join("keep.txt").exists());
    let err = s.fails(&["datastore", "rm", "-w", "w", "-d", "shared", "keep.txt"]);
    assert!(err.contains("not found") && err.contains("404"), "{err}");
    s.ok(&["datastore", "upload", "-w", "w", src.to_str().unwrap(), "-q"]);
    s.ok(&["datastore", "rm", "-w", "w", "pw.txt"]);
    let ls = json(&s.ok(&["datastore", "ls", "-w", "w", "-o", "json"]));
    assert_eq!(ls, serde_json::json!([]), "{ls}");
}

async fn local_datastores_are_registered_checked_and_removed_without_touching_data(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    s.ok(&["workspace", "create", "w"]);
    let dir = s.tmp().join("shared-data");
    write_tree(&dir, &[("existing.csv", b"x,y\n")]);
    let dir_s = dir.to_str().unwrap();
    for (name, location, expect) in [
        ("rel", "relative/path", "absolute"),
        ("missing", "/no/such/dir/anywhere", "not usable"),
        ("default", dir_s, "reserved"),
        ("Bad", dir_s, "invalid datastore name"),
        ("secrets", s.data_dir.to_str().unwrap(), "data directory"),
    ] {
        let err =
            s.fails(&["datastore", "create", name, "--kind", "local", "--location", location, "-w", "w"]);
        assert!(err.contains(expect), "{name}: {err}");
    }
    s.ok(&["datastore", "create", "shared", "--kind", "local", "--location", dir_s, "-w", "w"]);
    let ls = json(&s.ok(&["datastore", "ls", "-w", "w", "-d", "shared", "-o", "json"]));
    assert_eq!(ls[0]["path"], "existing.csv");
    let src = s.tmp().join("up");
    write_tree(&src, &[("new.csv", b"1")]);
    let src_s = src.to_str().unwrap();
    let upload = ["datastore", "upload", "-w", "w", "-d", "shared", src_s, "--target-path", "in", "-q"];
    s.ok(&upload);
    assert!(dir.join("in/new.csv").is_file());
    // Changed outside Cairn to other bytes of the same size, its modification time set back (as
    // `cp -p` or `rsync -a` do): not "already there".
    std::fs::write(dir.join("in/new.csv"), b"2").unwrap();
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_577_836_800);
    std::fs::File::options().write(true).open(dir.join("in/new.csv")).unwrap().set_modified(old).unwrap();
    let err = s.fails(&upload);
    assert!(err.contains("in/new.csv") && err.contains("--overwrite"), "{err}");
    s.ok(&[&upload[..], &["--overwrite"]].concat());
    assert_eq!(std::fs::read(dir.join("in/new.csv")).unwrap(), b"1");
    let again = json(&s.ok(&[&upload[..], &["-o", "json"]].concat()));
    assert_eq!(again["skipped"], serde_json::json!(["in/new.csv"]), "{again}");
    let shown = json(&s.ok(&["datastore", "show", "shared", "-w", "w", "-o", "json"]));
    assert_eq!(shown["kind"], "local");
    s.ok(&["datastore", "delete", "shared", "-w", "w"]);
    assert!(
        dir.join("existing.csv").is_file() && dir.join("in/new.csv").is_file(),
        "removing never deletes data"
    );
    let err = s.fails(&["datastore", "delete", "default", "-w", "w"]);
    assert!(err.contains("removed only with it"), "{err}");

    // Datastores are cached by name: a removed one is gone at once, and a new one of the same
    // name (elsewhere) is the one served.
    let err = s.fails(&["datastore", "ls", "-w", "w", "-d", "shared"]);
    assert!(err.contains("not found"), "{err}");
    let elsewhere = s.tmp().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let elsewhere_s = elsewhere.to_str().unwrap();
    s.ok(&["datastore", "create", "shared", "--kind", "local", "--location", elsewhere_s, "-w", "w"]);
    let ls = json(&s.ok(&["datastore", "ls", "-w", "w", "-d", "shared", "-o", "json"]));
    assert_eq!(ls, serde_json::json!([]), "{ls}");
    s.ok(&["datastore", "upload", "-w", "w", "-d", "shared", src.to_str().unwrap(), "-q"]);
    assert!(elsewhere.join("new.csv").is_file() && !dir.join("new.csv").exists());
    // The same for a workspace deleted and created again: its default datastore is a new one.
    s.ok(&["datastore", "upload", "-w", "w", src.to_str().unwrap(), "-q"]);
    s.ok(&["datastore", "delete", "shared", "-w", "w"]);
    s.ok(&["workspace", "delete", "w", "--force"]);
    s.ok(&["workspace", "create", "w"]);
    let ls = json(&s.ok(&["datastore", "ls", "-w", "w", "-o", "json"]));
    assert_eq!(ls, serde_json::json!([]), "{ls}");
    s.ok(&["datastore", "upload", "-w", "w", src.to_str().unwrap(), "-q"]);
    let ls = json(&s.ok(&["datastore", "ls", "-w", "w", "-o", "json"]));
    assert_eq!(ls[0]["path"], "new.csv", "{ls}");
}

async fn a_runs_artifacts_download_in_batches_and_by_folder(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    s.ok(&["workspace", "create", "w"]);
    let http = reqwest::Client::new();
    let run = json(
        &http
            .post(format!("{}{RUNS}", s.url))
            .bearer_auth(&s.token)
            .json(&serde_json::json!({"experiment": "e"}))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    let id = run["id"].as_str().unwrap().to_string();
    // 250 small files (three batches), one too big for a batch, and a sibling folder whose name
    // starts like `outputs`.
    let mut files: Vec<(String, Vec<u8>)> = (0..250)
        .map(|i| (format!("outputs/d{}/f{i:03}.txt", i % 7), format!("file {i}\n").into_bytes()))
        .collect();
    files.push(("outputs/big.bin".into(), (0..400_000u32).map(|i| (i % 251) as u8).collect()));
    files.push(("outputs2/other.txt".into(), b"other".to_vec()));
    for (path, content) in &files {
        let resp = http
            .put(format!("{}{RUNS}/{id}/artifacts/{path}", s.url))
            .bearer_auth(&s.token)
            .body(content.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201, "{path}");
    }
    let dest = s.tmp().join("dl");
    let said = s.ok(&["job", "download", &id, "--dest", dest.to_str().unwrap(), "-w", "w", "-q"]);
    assert!(said.contains("downloaded 252 file(s)"), "{said}");
    for (path, content) in &files {
        assert_eq!(&std::fs::read(dest.join(&id).join(path)).unwrap(), content, "{path}");
    }
    // One folder only: `outputs`, not `outputs2`.
    let only = s.tmp().join("only");
    s.ok(&["job", "download", &id, "--path", "outputs", "--dest", only.to_str().unwrap(), "-w", "w", "-q"]);
    let got = files_under(&only.join(&id));
    assert_eq!(got.len(), 251, "{got:?}");
    assert!(got.iter().all(|p| p.starts_with("outputs/")), "{got:?}");
    let err =
        s.fails(&["job", "download", &id, "--path", "nope", "--dest", only.to_str().unwrap(), "-w", "w"]);
    assert!(err.contains("nope") && err.contains("404"), "{err}");

    // The batch route itself: parts in the order asked; what it refuses.
    let asked = vec!["outputs/d3/f010.txt".to_string(), "outputs2/other.txt".to_string()];
    let got = s.client().run_download_batch("w", &id, &asked).await.unwrap();
    assert_eq!(got, vec![bytes::Bytes::from("file 10\n"), bytes::Bytes::from("other")]);
    for (paths, status, says) in [
        (serde_json::json!(["outputs/d0/f000.txt", "outputs/missing.txt"]), 404, "outputs/missing.txt"),
        (serde_json::json!(["outputs/../../../etc/passwd"]), 400, "invalid path"),
        (serde_json::json!([]), 400, "names no file"),
    ] {
        let resp = http
            .post(format!("{}{RUNS}/{id}/download-batch", s.url))
            .bearer_auth(&s.token)
            .json(&serde_json::json!({ "paths": paths }))
            .send()
            .await
            .unwrap();
        let st = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        assert_eq!(st, status, "{paths}: {body}");
        assert!(body.contains(says), "{paths}: {body}");
    }
    let resp = http
        .post(format!("{}{RUNS}/no-such-run/download-batch", s.url))
        .bearer_auth(&s.token)
        .json(&serde_json::json!({"paths": ["outputs/big.bin"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
}

async fn files_are_downloaded_listed_and_deleted(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    s.ok(&["workspace", "create", "w"]);
    let src = s.tmp().join("src");
    write_tree(&src, &[("a.csv", b"1"), ("deep/er/b.csv", b"22"), ("c d é.txt", b"333")]);
    s.ok(&["datastore", "upload", "-w", "w", src.to_str().unwrap(), "--target-path", "data", "-q"]);
    let ls = json(&s.ok(&["datastore", "ls", "-w", "w", "data", "-o", "json"]));
    let listed: Vec<(String, u64)> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap().into(), f["size"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        listed,
        [("data/a.csv".into(), 1), ("data/c d é.txt".into(), 3), ("data/deep/er/b.csv".into(), 2)]
    );
    // The API's pages, one file each, add up to the same listing.
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let (status, page) = s
            .get(&format!(
                "{WS}/datastores/default/files?prefix=data&page_size=1&page_token={}",
                url_component(&token)
            ))
            .await;
        assert_eq!(status, 200, "{page}");
        paged.extend(
            page["items"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap().to_string()),
        );
        match page["next_page_token"].as_str() {
            Some(t) => token = t.to_string(),
            None => break,
        }
    }
    assert_eq!(paged, listed.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>());
    // `ls` of a file lists that file; of a path that is neither a file nor a folder, an error
    // naming it (a 404 from the API), however it is asked.
    let one = json(&s.ok(&["datastore", "ls", "-w", "w", "data/deep/er/b.csv", "-o", "json"]));
    assert_eq!(one.as_array().unwrap().len(), 1, "{one}");
    assert_eq!((one[0]["path"].as_str(), one[0]["size"].as_u64()), (Some("data/deep/er/b.csv"), Some(2)));
    for missing in ["data/nothing", "data/nothing/", "data/a.csv/x", "dat"] {
        for output in ["table", "json"] {
            let out = s.cli(&["datastore", "ls", "-w", "w", missing, "-o", output]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success() && out.stdout.is_empty(), "{missing}: {err}");
            let name = missing.trim_end_matches('/');
            assert!(
                err.contains(&format!("file or folder \"{name}\" in datastore \"default\" not found"))
                    && err.contains("404"),
                "{missing}: {err}"
            );
        }
    }
    let (status, body) = s.get(&format!("{WS}/datastores/default/files?prefix=data/nothing")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
    // A later page that finds nothing more is still a page (only a first page proves a path).
    let (status, body) = s.get(&format!("{WS}/datastores/default/files?prefix=data&page_token=zzz")).await;
    assert_eq!((status, body["items"].as_array().map(Vec::len)), (200, Some(0)), "{body}");
    // A missing path fails a download as clearly, and nothing is written.
    let err = s.fails(&[
        "datastore",
        "download",
        "-w",
        "w",
        "data/nothing",
        "--dest",
        s.tmp().join("none").to_str().unwrap(),
    ]);
    assert!(err.contains("\"data/nothing\"") && err.contains("not found"), "{err}");
    assert!(!s.tmp().join("none/data").exists());
    let out = s.tmp().join("out");
    s.ok(&["datastore", "download", "-w", "w", "data", "--dest", out.to_str().unwrap(), "-q"]);
    assert_eq!(std::fs::read(out.join("data/deep/er/b.csv")).unwrap(), b"22");
    assert_eq!(std::fs::read(out.join("data/c d é.txt")).unwrap(), b"333");
    let err = s.fails(&["datastore", "download", "-w", "w", "data", "--dest", out.to_str().unwrap(), "-q"]);
    assert!(err.contains("already exist") && err.contains("--overwrite"), "{err}");
    s.ok(&["datastore", "download", "-w", "w", "data", "--dest", out.to_str().unwrap(), "-q", "--overwrite"]);
    let err = s.fails(&["datastore", "download", "-w", "w", "nope.csv", "--dest", out.to_str().unwrap()]);
    assert!(err.contains("not found"), "{err}");
    // A path a URL would rewrite (`.`, `a/../b`, an empty one) is refused before it is sent.
    for bad in [".", "data/../data", "", "data//deep"] {
        let err = s.fails(&["datastore", "rm", "-w", "w", bad]);
        assert!(err.contains("invalid path") || err.contains("must not be empty"), "{bad}: {err}");
    }
    s.ok(&["datastore", "rm", "-w", "w", "data/deep"]);
    let ls = json(&s.ok(&["datastore", "ls", "-w", "w", "-o", "json"]));
    assert_eq!(ls.as_array().unwrap().len(), 2);
}

async fn small_files_download_in_batches_whole_and_in_order(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    s.ok(&["workspace", "create", "w"]);
    // Enough small files for several batches, names a header must carry safely, and files too
    // large for a batch, which come one by one.
    let mut files: Vec<(String, Vec<u8>)> = (0..260)
        .map(|i| (format!("many/f{i:03}.txt"), format!("content {i}\n").repeat(i % 7).into_bytes()))
        .collect();
    for odd in ["q\"uote.txt", "semi;colon=x.txt", "pct%41.txt", "spa ce é.txt", "日本.bin"] {
        files.push((format!("odd/{odd}"), odd.as_bytes().repeat(3)));
    }
    files.push(("large/quarter.bin".into(), (0..300_000u32).map(|i| (i % 251) as u8).collect()));
    files.push(("large/five.bin".into(), (0..5_000_000u32).map(|i| (i % 253) as u8).collect()));
    let src = s.tmp().join("src");
    let borrowed: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (p.as_str(), c.as_slice())).collect();
    write_tree(&src, &borrowed);
    s.ok(&["datastore", "upload", "-w", "w", src.to_str().unwrap(), "--target-path", "d", "-q"]);
    let out = s.tmp().join("out");
    let report = json(&s.ok(&[
        "datastore",
        "download",
        "-w",
        "w",
        "d",
        "--dest",
        out.to_str().unwrap(),
        "-o",
        "json",
    ]));
    assert_eq!(report["files"], files.len(), "{report}");
    for (path, content) in &files {
        let got = std::fs::read(out.join("d").join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(got == *content, "{path}: {} bytes, not the {} uploaded", got.len(), content.len());
    }
    let leftovers: Vec<_> = walkdir::WalkDir::new(&out)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".cairn-partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The API: the parts come in the order asked, each with its path and length.
    let client = s.client();
    let asked: Vec<String> =
        ["d/odd/日本.bin", "d/many/f003.txt", "d/odd/q\"uote.txt"].map(String::from).to_vec();
    let got = client.download_batch("w", "default", &asked).await.unwrap();
    let expect = |p: &str| files.iter().find(|(q, _)| format!("d/{q}") == p).unwrap().1.clone();
    let want: Vec<Vec<u8>> = asked.iter().map(|p| expect(p)).collect();
    assert_eq!(got.iter().map(|c| c.to_vec()).collect::<Vec<_>>(), want);
    let raw = reqwest::Client::new()
        .post(format!("{}{WS}/datastores/default/download-batch", s.url))
        .bearer_auth(&s.token)
        .json(&serde_json::json!({"paths": ["d/many/f001.txt", "d/odd/spa ce é.txt"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 200);
    let kind = raw.headers()["content-type"].to_str().unwrap().to_string();
    assert!(kind.starts_with("multipart/mixed; boundary="), "{kind}");
    let body = String::from_utf8(raw.bytes().await.unwrap().to_vec()).unwrap();
    let first =
        body.find("filename*=UTF-8''d%2Fmany%2Ff001.txt\r\nContent-Length: 10\r\n\r\ncontent 1\n\r\n");
    let second = body.find("filename*=UTF-8''d%2Fodd%2Fspa%20ce%20%C3%A9.txt\r\nContent-Length: 39\r\n");
    assert!(matches!((first, second), (Some(a), Some(b)) if a < b), "{body}");

    // What a batch refuses, and says why; nothing half-sent.
    let batch = |paths: Value| {
        let s = &s;
        async move {
            let resp = reqwest::Client::new()
                .post(format!("{}{WS}/datastores/default/download-batch", s.url))
                .bearer_auth(&s.token)
                .json(&paths)
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), json(&resp.text().await.unwrap()))
        }
    };
    let many: Vec<String> = (0..1001).map(|i| format!("d/many/f{:03}.txt", i % 260)).collect();
    let cases = [
        (serde_json::json!({"paths": ["d/many/f001.txt", "d/many/nope.txt"]}), 404, "d/many/nope.txt"),
        (serde_json::json!({"paths": ["d/many"]}), 404, "d/many"),
        (serde_json::json!({"paths": ["d/../../etc/passwd"]}), 400, "invalid path"),
        (serde_json::json!({"paths": ["/etc/passwd"]}), 400, "absolute"),
        (serde_json::json!({"paths": []}), 400, "names no file"),
        (serde_json::json!({"paths": many}), 413, "at most 1000 files"),
        (serde_json::json!({"paths": ["d/many/f001.txt"], "offset": 3}), 400, "offset"),
        (serde_json::json!({"paths": "d/many/f001.txt"}), 400, "paths"),
    ];
    for (req, status, says) in cases {
        let (got, body) = batch(req.clone()).await;
        assert_eq!(got, status, "{req}: {body}");
        assert!(body["error"]["message"].as_str().unwrap_or("").contains(says), "{req}: {says}: {body}");
    }
    // Past 16 MiB of content: a 413 that says what to do instead.
    let big = s.tmp().join("big");
    let nine: Vec<u8> = vec![1; 9 << 20];
    write_tree(&big, &[("a.bin", &nine), ("b.bin", &nine)]);
    s.ok(&["datastore", "upload", "-w", "w", big.to_str().unwrap(), "--target-path", "big", "-q"]);
    let (got, body) = batch(serde_json::json!({"paths": ["big/a.bin", "big/b.bin"]})).await;
    assert_eq!(got, 413, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("big/b.bin") && message.contains("one by one"), "{body}");
    // A reader may download; a bad token learns nothing.
    let reader = CreateToken { name: "reader".into(), role: Role::Reader, workspace: Some("w".into()) };
    let reader = s.client().create_token(&reader).await.unwrap();
    let got = s.client_with(&reader.token).download_batch("w", "default", &asked).await.unwrap();
    assert_eq!(got.len(), 3);
    let err =
        s.client_with("wrong-token-0123456789").download_batch("w", "default", &asked).await.unwrap_err();
    assert!(err.to_string().contains("401") || err.to_string().to_lowercase().contains("token"), "{err}");
}

/// `text` as one component of a URL's query.
fn url_component(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

async fn lists_are_paginated(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    for i in 0..5 {
        s.ok(&["workspace", "create", &format!("ws{i}")]);
    }
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut url = "/api/v1/workspaces?page_size=2".to_string();
        if let Some(t) = &token {
            url.push_str(&format!("&page_token={t}"));
        }
        let (_, page) = s.get(&url).await;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|w| w["name"].as_str().unwrap().to_string()));
        match page["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ["ws0", "ws1", "ws2", "ws3", "ws4"]);
    // Tokens page the same way (by name; the admin token is "admin"), and `token list` follows
    // every page: past the client's 1,000 a page, it needs two.
    let c = s.client();
    let names: Vec<String> = (0..1001).map(|i| format!("t{i:04}")).collect();
    futures::stream::iter(names.iter().map(|name| {
        let c = c.clone();
        async move {
            c.create_token(&CreateToken { name: name.clone(), role: Role::Reader, workspace: None }).await
        }
    }))
    .buffer_unordered(8)
    .try_collect::<Vec<_>>()
    .await
    .unwrap();
    let (status, page) = s.get("/api/v1/tokens?page_size=2").await;
    assert_eq!(status, 200, "{page}");
    let first: Vec<_> =
        page["items"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(first, ["admin", "t0000"]);
    let next = page["next_page_token"].as_str().unwrap();
    let (_, page) = s.get(&format!("/api/v1/tokens?page_size=2&page_token={next}")).await;
    let second: Vec<_> =
        page["items"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(second, ["t0001", "t0002"]);
    let listed = json(&s.ok(&["token", "list", "-o", "json"]));
    let listed: Vec<_> = listed.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(listed.len(), 1002, "every page is listed");
    assert_eq!((listed[0], listed[1001]), ("admin", "t1000"));
    // A page of nothing or less is refused, naming the parameter, on every list.
    for path in [
        "tokens?page_size=0",
        "workspaces?page_size=0",
        "workspaces/ws0/datastores?page_size=-1",
        "workspaces/ws0/models?page_size=0",
        "workspaces/ws0/datastores/default/files?page_size=0",
    ] {
        let (status, body) = s.get(&format!("/api/v1/{path}")).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("page_size"), "{path}: {body}");
    }
    let (status, body) =
        s.post("/api/v1/workspaces/ws0/runs/search", serde_json::json!({"page_size": 0})).await;
    assert_eq!(status, 400, "{body}");
}

async fn everything_acknowledged_survives_kill_9(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    s.ok(&["workspace", "create", "w"]);
    let src = s.tmp().join("src");
    write_tree(&src, &[("a.csv", b"1,2,3")]);
    s.ok(&["datastore", "upload", "-w", "w", src.to_str().unwrap(), "--target-path", "d", "-q"]);
    let created = s
        .client()
        .create_token(&CreateToken { name: "ci".into(), role: Role::Reader, workspace: None })
        .await
        .unwrap();
    let s = s.restart();
    assert_eq!(s.client_with(&created.token).whoami().await.unwrap().token_name, "ci");
    let ls = json(&s.ok(&["datastore", "ls", "-w", "w", "-o", "json"]));
    assert_eq!(ls[0]["path"], "d/a.csv");
    let again = json(&s.ok(&[
        "datastore",
        "upload",
        "-w",
        "w",
        src.to_str().unwrap(),
        "--target-path",
        "d",
        "-o",
        "json",
    ]));
    assert_eq!(again["skipped"].as_array().unwrap().len(), 1, "checksums survive too");
}

async fn runs_are_searched_by_metrics_params_tags_and_attributes(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    s.ok(&["workspace", "create", "w"]);
    let mut ids = Vec::new();
    for (i, (depth, rmse, model)) in [
        ("3", 0.9, "tree"),
        ("5", 0.7, "tree"),
        ("5", 0.6, "forest"),
        ("8", 0.65, "forest"),
        ("10", f64::NAN, "tree"),
    ]
    .into_iter()
    .enumerate()
    {
        let experiment = if i == 4 { "other" } else { "wine_expt" };
        let (_, run) =
            s.post(RUNS, serde_json::json!({"experiment": experiment, "tags": {"model": model}})).await;
        let id = run["id"].as_str().unwrap().to_string();
        let value = if rmse.is_nan() { serde_json::json!("NaN") } else { serde_json::json!(rmse) };
        let batch = serde_json::json!({
            "metrics": [{"key": "rmse", "value": value, "step": 0}, {"key": "max depth", "value": depth.parse::<f64>().unwrap()}],
            "params": [{"key": "max_depth", "value": depth}],
        });
        let (status, body) = s.post(&format!("{RUNS}/{id}/log-batch"), batch).await;
        assert_eq!(status, 200, "{body}");
        ids.push(id);
    }
    let srv = &s;
    let search = move |body: Value| async move { srv.post(&format!("{RUNS}/search"), body).await };
    let names = |v: &Value| -> Vec<String> {
        v["runs"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect()
    };
    let (st, v) = search(serde_json::json!({"experiment": "wine_expt", "filter": "metrics.rmse < 0.7 and params.max_depth = '5'"})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(names(&v), [ids[2].clone()]);
    let (_, v) =
        search(serde_json::json!({"experiment": "wine_expt", "order_by": ["metrics.rmse ASC"]})).await;
    assert_eq!(names(&v), [ids[2].clone(), ids[3].clone(), ids[1].clone(), ids[0].clone()]);
    let (_, v) =
        search(serde_json::json!({"filter": "tags.model = 'forest' and metrics.`max depth` >= 8"})).await;
    assert_eq!(names(&v), [ids[3].clone()]);
    let (_, v) = search(serde_json::json!({"filter": "tags.model LIKE 'tr%' and attributes.status = 'Running'", "order_by": ["params.max_depth DESC"]})).await;
    assert_eq!(names(&v).len(), 3);
    // Pages of 2 cover everything exactly once.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let (_, v) = search(
            serde_json::json!({"page_size": 2, "page_token": token, "order_by": ["metrics.rmse DESC"]}),
        )
        .await;
        seen.extend(names(&v));
        match v["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    seen.sort();
    let mut all = ids.clone();
    all.sort();
    assert_eq!(seen, all);
    let (st, v) = search(serde_json::json!({"filter": "metrics.rmse < 'low'"})).await;
    assert_eq!(st, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("as a number"), "{v}");
    // The CLI prints the same search as a table with a column per param and metric.
    let out = s.ok(&[
        "run",
        "search",
        "-w",
        "w",
        "-e",
        "wine_expt",
        "--filter",
        "metrics.rmse < 0.7",
        "--order-by",
        "metrics.rmse",
    ]);
    assert!(out.contains("metrics.rmse") && out.contains(&ids[2]), "{out}");
    let out = s.ok(&["run", "compare", &ids[0], &ids[1], "-w", "w"]);
    assert!(out.contains("* params.max_depth"), "{out}");
}

async fn run_properties_are_set_once_and_child_runs_are_listed_by_parent(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    s.ok(&["workspace", "create", "w"]);
    let srv = &s;
    let post = move |path: String, body: Value| async move { srv.post(&format!("{WS}/{path}"), body).await };
    let get = move |path: String| async move { srv.get(&format!("{WS}/{path}")).await };

    let (st, parent) = post("runs".into(), serde_json::json!({"experiment": "e"})).await;
    assert_eq!(st, 201, "{parent}");
    let parent = parent["id"].as_str().unwrap().to_string();
    let mut children = Vec::new();
    for _ in 0..2 {
        let (st, child) =
            post("runs".into(), serde_json::json!({"experiment": "e", "parent_run_id": parent})).await;
        assert_eq!(st, 201, "{child}");
        assert_eq!(child["parent_id"], parent.as_str());
        children.push(child["id"].as_str().unwrap().to_string());
    }
    post("runs".into(), serde_json::json!({"experiment": "e"})).await;
    let (st, listed) = get(format!("runs?parent={parent}")).await;
    assert_eq!(st, 200, "{listed}");
    let mut ids: Vec<String> =
        listed.as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    children.sort();
    assert_eq!(ids, children, "only the parent's children");
    let (st, err) = get("runs?parent=nosuchrun".into()).await;
    assert_eq!(st, 404, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("nosuchrun"), "{err}");

    let props = |p: Value| post(format!("runs/{parent}/properties"), serde_json::json!({"properties": p}));
    let (st, run) = props(serde_json::json!({"dataset": "wine", "folds": "5"})).await;
    assert_eq!(st, 200, "{run}");
    assert_eq!(run["properties"], serde_json::json!({"dataset": "wine", "folds": "5"}));
    let (st, run) = props(serde_json::json!({"folds": "5"})).await;
    assert_eq!(st, 200, "the same value again is accepted: {run}");
    let (st, err) = props(serde_json::json!({"new": "x", "dataset": "iris"})).await;
    assert_eq!(st, 409, "{err}");
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(msg.contains("property \"dataset\"") && msg.contains("\"wine\""), "{msg}");
    let (st, err) = props(serde_json::json!({"": "x"})).await;
    assert_eq!(st, 400, "{err}");
    let (st, err) = post(format!("runs/{parent}/properties"), serde_json::json!({"props": {}})).await;
    assert_eq!(st, 400, "{err}");
    let (st, _) =
        post("runs/nosuchrun/properties".into(), serde_json::json!({"properties": {"a": "b"}})).await;
    assert_eq!(st, 404);
    let shown = json(&s.ok(&["run", "show", "-w", "w", &parent, "-o", "json"]));
    assert_eq!(
        shown["properties"],
        serde_json::json!({"dataset": "wine", "folds": "5"}),
        "nothing of the refused call was written"
    );
    assert_eq!(shown["created_by"], "admin", "created with the admin token: {shown}");
    // The CLI's table output shows them, and `run list --parent` lists exactly the children.
    let table = s.ok(&["run", "show", "-w", "w", &parent]);
    let line = table.lines().find(|l| l.starts_with("properties")).unwrap_or_else(|| panic!("{table}"));
    assert!(line.contains("dataset=wine") && line.contains("folds=5"), "{table}");
    let listed = json(&s.ok(&["run", "list", "-w", "w", "--parent", &parent, "-o", "json"]));
    let mut ids: Vec<String> =
        listed.as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    assert_eq!(ids, children, "only the parent's children");
    let table = s.ok(&["run", "list", "-w", "w", "--parent", &parent]);
    assert!(children.iter().all(|c| table.contains(c.as_str())), "{table}");
    assert_eq!(table.lines().filter(|l| l.contains(parent.as_str())).count(), 2, "{table}");
    let all = json(&s.ok(&["run", "list", "-w", "w", "-o", "json"]));
    assert_eq!(all.as_array().unwrap().len(), 4, "{all}");
    let err = s.fails(&["run", "list", "-w", "w", "--parent", "nosuchrun"]);
    assert!(err.contains("nosuchrun"), "{err}");
    // Search results carry them too.
    let (_, page) = post("runs/search".into(), serde_json::json!({"filter": ""})).await;
    let found = page["runs"].as_array().unwrap().iter().find(|r| r["id"] == parent.as_str()).unwrap().clone();
    assert_eq!(found["properties"]["dataset"], "wine");
}

async fn workspace_compute_sizes_are_added_used_and_deleted_only_when_unused(b: Backend) {
    let (s, _db) = start_on(b, Opts::default()).await;
    s.ok(&["workspace", "create", "w"]);
    s.ok(&["workspace", "create", "v"]);
    let cores = std::thread::available_parallelism().unwrap().get();
    let added = json(&s.ok(&[
        "compute",
        "size",
        "add",
        "tiny",
        "--cores",
        "1",
        "--memory-gb",
        "0.5",
        "-w",
        "w",
        "-o",
        "json",
    ]));
    assert_eq!(added["name"], "tiny");
    assert_eq!(added["cores"], 1);
    assert_eq!(added["memory_gb"], 0.5);
    assert_eq!(added["shipped"], false);
    let all = cores.to_string();
    s.ok(&["compute", "size", "add", "whole", "--cores", &all, "--memory-gb", "3", "-w", "w"]);

    // Refused clearly, and nothing is written.
    let more = (cores + 1).to_string();
    let err = s.fails(&["compute", "size", "add", "huge", "--cores", &more, "--memory-gb", "1", "-w", "w"]);
    assert!(err.contains(&format!("more than this machine has ({cores})")), "{err}");
    let err = s.fails(&["compute", "size", "add", "none", "--cores", "0", "--memory-gb", "1", "-w", "w"]);
    assert!(err.contains("cores must be at least 1"), "{err}");
    let err = s.fails(&["compute", "size", "add", "nomem", "--cores", "1", "--memory-gb", "0", "-w", "w"]);
    assert!(err.contains("memory_gb must be more than 0"), "{err}");
    let err = s.fails(&["compute", "size", "add", "bad/name", "--cores", "1", "--memory-gb", "1", "-w", "w"]);
    assert!(err.contains("size name"), "{err}");
    let err = s.fails(&["compute", "size", "add", "small", "--cores", "1", "--memory-gb", "1", "-w", "w"]);
    assert!(err.contains("shipped with Cairn"), "{err}");
    let err = s.fails(&["compute", "size", "add", "tiny", "--cores", "1", "--memory-gb", "1", "-w", "w"]);
    assert!(err.contains("already exists"), "{err}");
    let http = reqwest::Client::new();
    let sizes = &format!("{WS}/sizes");
    let (status, _) =
        s.post(sizes, serde_json::json!({"name": "x", "cores": 1, "memory_gb": 1, "gpus": 1})).await;
    assert_eq!(status, 400);
    let (status, _) = s.post(sizes, serde_json::json!({"name": "x", "cores": -1, "memory_gb": 1})).await;
    assert_eq!(status, 400);

    let list = json(&s.ok(&["compute", "size", "list", "-w", "w", "-o", "json"]));
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"small") && names.contains(&"STANDARD_D2_V2"), "{names:?}");
    let own: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["shipped"] == false)
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(own, ["tiny", "whole"], "{list}");
    // Sizes belong to their workspace.
    let other = json(&s.ok(&["compute", "size", "list", "-w", "v", "-o", "json"]));
    assert!(other.as_array().unwrap().iter().all(|s| s["shipped"] == true), "{other}");

    // A compute target uses it, with its cores and memory.
    let spec = s.tmp().join("c.yml");
    std::fs::write(&spec, "name: cpu\ntype: amlcompute\nsize: tiny\nmax_instances: 1\n").unwrap();
    let c = json(&s.ok(&["compute", "create", "-f", spec.to_str().unwrap(), "-w", "w", "-o", "json"]));
    assert_eq!(c["size"], "tiny");
    assert_eq!(c["cores"], 1);
    assert_eq!(c["memory_gb"], 0.5);
    let shown = s.ok(&["compute", "show", "cpu", "-w", "w"]);
    assert!(shown.contains("tiny (1 cores, 0.5 GB)"), "{shown}");
    let err = s.fails(&["compute", "create", "-f", spec.to_str().unwrap(), "-w", "v"]);
    assert!(err.contains("unknown size \"tiny\""), "another workspace does not see it: {err}");

    let err = s.fails(&["compute", "size", "delete", "tiny", "-w", "w"]);
    assert!(err.contains("used by compute cpu"), "{err}");
    let (status, _) = s.call(reqwest::Method::DELETE, &format!("{WS}/sizes/tiny"), None).await;
    assert_eq!(status, 409);
    let err = s.fails(&["compute", "size", "delete", "small", "-w", "w"]);
    assert!(err.contains("shipped with Cairn"), "{err}");
    let err = s.fails(&["compute", "size", "delete", "nosuch", "-w", "w"]);
    assert!(err.contains("nosuch"), "{err}");
    s.ok(&["compute", "delete", "cpu", "-w", "w"]);
    s.ok(&["compute", "size", "delete", "tiny", "-w", "w"]);
    let list = json(&s.ok(&["compute", "size", "list", "-w", "w", "-o", "json"]));
    assert!(list.as_array().unwrap().iter().all(|s| s["name"] != "tiny"), "{list}");
    // A reader may list but not add.
    let reader = s
        .client()
        .create_token(&CreateToken { name: "r".into(), role: Role::Reader, workspace: None })
        .await
        .unwrap()
        .token;
    let resp =
        http.get(format!("{}/api/v1/workspaces/w/sizes", s.url)).bearer_auth(&reader).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let resp = http
        .post(format!("{}/api/v1/workspaces/w/sizes", s.url))
        .bearer_auth(&reader)
        .json(&serde_json::json!({"name": "y", "cores": 1, "memory_gb": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
}

/// Sends `head` then `body_len` bytes, all of them, before reading the answer, as Python's
/// `http.client` does; the status, or the I/O error that cut the exchange.
fn send_all_then_read(url: &str, head: &str, body_len: usize) -> Result<u16, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(authority(url)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    s.write_all(head.as_bytes()).map_err(|e| format!("writing the head: {e}"))?;
    let chunk = vec![b' '; 1 << 20];
    let mut left = body_len;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n]).map_err(|e| format!("writing the body, {left} bytes left: {e}"))?;
        left -= n;
    }
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| format!("reading the answer: {e}"))?;
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| format!("no status: {text}"))
}

/// An answer given before the body is read (a wrong token, a body past the limit) reaches a client
/// still writing that body, instead of a reset connection ("broken pipe", "connection reset").
#[tokio::test(flavor = "multi_thread")]
async fn early_answers_reach_a_client_still_sending_its_body() {
    let s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    let size = 40 << 20; // far more than the kernel's socket buffers hold
    let host = authority(&s.url).to_string();
    let head = move |token: &str, path: &str| {
        let kind = if path.ends_with("upload-batch") {
            "multipart/form-data; boundary=b"
        } else {
            "application/json"
        };
        format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: {kind}\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
        )
    };
    let url = s.url.clone();
    let token = s.token.clone();
    let results = tokio::task::spawn_blocking(move || {
        [
            send_all_then_read(&url, &head("wrong", "/api/v1/workspaces/w/runs/search"), size),
            send_all_then_read(&url, &head(&token, "/api/v1/workspaces/w/runs/search"), size),
            send_all_then_read(
                &url,
                &head(&token, "/api/v1/workspaces/w/datastores/default/upload-batch"),
                size,
            ),
            send_all_then_read(
                &url,
                &head("wrong", "/workspaces/w/mlflow/api/2.0/mlflow/runs/log-batch"),
                size,
            ),
            send_all_then_read(&url, &head("wrong", "/endpoints/nowhere/score"), size),
        ]
    })
    .await
    .unwrap();
    assert_eq!(results, [Ok(401), Ok(413), Ok(413), Ok(401), Ok(401)], "{results:?}");
    // The server is still there for the next client.
    assert!(s.ok(&["workspace", "list"]).contains('w'));
}
