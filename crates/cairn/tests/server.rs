//! The server process itself: start-up, the first admin token, configuration precedence,
//! graceful shutdown, the data-directory lock, a locked database, and the client's config.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn first_start_logs_the_address_first_and_creates_a_private_admin_token() {
    let s = Server::start();
    let first = s.log().lines().next().unwrap_or_default().to_string();
    assert!(first.contains(&format!("listening on {}", s.url)), "first log line: {first}");
    let path = s.data_dir.join("admin-token");
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(s.token.starts_with("cairn_") && s.token.len() >= 64);
    assert!(s.wait_for_log(path.to_str().unwrap()), "the log says where the token is");
    assert!(!s.log().contains(&s.token), "the log never shows the token");
    for probe in ["healthz", "readyz"] {
        let resp = reqwest::get(format!("{}/{probe}", s.url)).await.unwrap();
        assert_eq!(resp.status(), 200, "{probe}");
    }
    // The same token keeps working after a restart; no second token is created.
    let token = s.token.clone();
    let s = s.restart();
    assert_eq!(s.token, token);
    assert_eq!(s.client().list_tokens().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_token_can_be_fixed_at_first_start_for_automation() {
    let fixed = "automation-token-0123456789";
    let s = Server::start_with(Opts {
        env: vec![("CAIRN_ADMIN_TOKEN".into(), fixed.into())],
        ..Default::default()
    });
    assert_eq!(s.token, fixed);
    assert_eq!(s.client_with(fixed).whoami().await.unwrap().token_name, "admin");
    let short = Opts { env: vec![("CAIRN_ADMIN_TOKEN".into(), "short".into())], ..Default::default() };
    let out = std::process::Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(s.tmp().join("other"))
        .envs(short.env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16 characters"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_server_cannot_share_a_data_directory() {
    let s = Server::start();
    let out = std::process::Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&s.data_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already using the data directory"), "{err}");
    s.ok(&["whoami"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn configuration_precedence_is_flag_then_environment_then_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("cairn.toml");
    std::fs::write(&file, "max_upload_bytes = 10\nlog_format = \"json\"\n").unwrap();
    let config = ["--config".to_string(), file.display().to_string()];
    let upload = |s: &Server, n: usize| raw_put(s, "w", "f.bin", &vec![b'x'; n]).0;

    let s = Server::start_with(Opts { args: config.to_vec(), ..Default::default() });
    assert!(s.log().lines().next().unwrap().starts_with('{'), "log_format from the file");
    s.ok(&["workspace", "create", "w"]);
    assert_eq!(upload(&s, 11), 413, "max_upload_bytes from the file");
    drop(s);

    let env = vec![("CAIRN_MAX_UPLOAD_BYTES".to_string(), "100".to_string())];
    let s = Server::start_with(Opts { args: config.to_vec(), env: env.clone(), ..Default::default() });
    s.ok(&["workspace", "create", "w"]);
    assert_eq!(upload(&s, 50), 201, "the environment overrides the file");
    assert_eq!(upload(&s, 101), 413);
    drop(s);

    let mut args = config.to_vec();
    args.extend(["--max-upload-bytes".to_string(), "1000".to_string()]);
    let s = Server::start_with(Opts { args, env, ..Default::default() });
    s.ok(&["workspace", "create", "w"]);
    assert_eq!(upload(&s, 500), 201, "the flag overrides the environment");
    let (status, body) = raw_put(&s, "w", "g.bin", &vec![b'x'; 1001]);
    assert_eq!(status, 413);
    assert!(body.contains("too_large"), "{body}");

    std::fs::write(&file, "max_upload_bytez = 10\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--config"])
        .arg(&file)
        .arg("--data-dir")
        .arg(tmp.path().join("d"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_upload_bytez"), "unknown keys are named");
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_threads_come_from_the_settings_and_zero_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("cairn.toml");
    std::fs::write(&file, "runtime_threads = 1\n").unwrap();
    let s = Server::start_with(Opts {
        args: vec!["--config".to_string(), file.display().to_string()],
        ..Default::default()
    });
    s.ok(&["workspace", "create", "w"]);
    assert_eq!(raw_put(&s, "w", "f.bin", b"one runtime thread").0, 201);
    drop(s);

    let refused = |args: &[&str], env: &[(&str, &str)]| {
        let out = std::process::Command::new(BIN)
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(tmp.path().join("d"))
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} {env:?} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refused(&["--runtime-threads", "0"], &[]);
    assert!(err.contains("runtime_threads must be at least 1"), "{err}");
    let err = refused(&[], &[("CAIRN_RUNTIME_THREADS", "0")]);
    assert!(err.contains("runtime_threads must be at least 1"), "{err}");
    std::fs::write(&file, "runtime_threads = 0\n").unwrap();
    let err = refused(&["--config", &file.display().to_string()], &[]);
    assert!(err.contains("runtime_threads must be at least 1"), "{err}");
    std::fs::write(&file, "runtime_threads = \"many\"\n").unwrap();
    let err = refused(&["--config", &file.display().to_string()], &[]);
    assert!(err.contains("runtime_threads"), "the key with the wrong type is named: {err}");
    assert!(!tmp.path().join("d").join("cairn.db").exists(), "nothing was started");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_an_in_flight_upload_finish_then_exits_cleanly() {
    let mut s = Server::start();
    s.ok(&["workspace", "create", "w"]);
    let data = vec![7u8; 4 * 1024 * 1024];
    let mut sock = std::net::TcpStream::connect(authority(&s.url)).unwrap();
    write!(
        sock,
        "PUT /api/v1/workspaces/w/datastores/default/files/slow.bin HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {}\r\nContent-Length: {}\r\nx-cairn-sha256: {}\r\nConnection: close\r\n\r\n",
        s.token,
        data.len(),
        sha256_hex(&data)
    )
    .unwrap();
    sock.write_all(&data[..data.len() / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    unsafe { libc::kill(s.pid() as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(300));
    sock.write_all(&data[data.len() / 2..]).unwrap();
    let mut response = String::new();
    sock.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert!(s.terminate(), "exit status 0 after SIGTERM");
    let log = s.log();
    assert!(log.contains("shutting down") && log.contains("stopped"), "{log}");
    assert!(!s.data_dir.join("server.json").exists(), "server.json is removed on a clean stop");
    let s = s.restart();
    let ls: Value = serde_json::from_str(&s.ok(&["datastore", "ls", "-w", "w", "-o", "json"])).unwrap();
    assert_eq!(ls[0]["size"], data.len() as u64);
}

/// A full disk is a clear 507; the partial file is neither visible nor left taking space, and the
/// server goes on serving. The disk is a 1 MiB tmpfs that only the server sees.
#[test]
fn a_full_disk_is_a_clear_507_and_leaves_nothing_behind() {
    let probe = tempfile::tempdir().unwrap();
    let dir = probe.path().join("small");
    let s = Server::start_with(Opts { small_disk: Some((dir.clone(), 1024)), ..Opts::default() });
    let location = dir.to_str().unwrap();
    s.ok(&["workspace", "create", "w"]);
    s.ok(&["datastore", "create", "small", "--kind", "local", "--location", location, "-w", "w"]);
    let src = s.tmp().join("src");
    // big.bin is buffered and written at once; huge.bin (over one 8 MiB part) streams to a staging file.
    write_tree(
        &src,
        &[
            ("big.bin", &vec![7u8; 3 << 20]),
            ("huge.bin", &vec![8u8; 9 << 20]),
            ("small.bin", &vec![1u8; 300 << 10]),
        ],
    );

    for name in ["big.bin", "huge.bin"] {
        let err = s.fails(&[
            "datastore",
            "upload",
            "-w",
            "w",
            "-d",
            "small",
            "-q",
            src.join(name).to_str().unwrap(),
        ]);
        assert!(
            err.contains("507") && err.contains(&format!("storage is full while writing {name}")),
            "{err}"
        );
    }
    let listed = s.ok(&["datastore", "ls", "-w", "w", "-d", "small", "-o", "json"]);
    assert_eq!(serde_json::from_str::<Value>(&listed).unwrap(), serde_json::json!([]), "{listed}");

    // The space the failed upload took is free again: a 300 KiB file still fits, three times over.
    for name in ["a", "b", "c"] {
        s.ok(&[
            "datastore",
            "upload",
            "-w",
            "w",
            "-d",
            "small",
            "-q",
            "--target-path",
            name,
            src.join("small.bin").to_str().unwrap(),
        ]);
    }
    let listed: Value =
        serde_json::from_str(&s.ok(&["datastore", "ls", "-w", "w", "-d", "small", "-o", "json"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    s.ok(&["workspace", "show", "w"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_locked_database_is_a_clear_503_and_nothing_is_lost() {
    use sqlx::Connection;
    let s = Server::start();
    s.ok(&["workspace", "create", "before"]);
    let url = format!("sqlite://{}", s.data_dir.join("cairn.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE").execute(&mut conn).await.unwrap();
    let err = s.fails(&["workspace", "create", "during"]);
    assert!(err.contains("locked") && err.contains("503"), "{err}");
    sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
    drop(conn);
    s.ok(&["workspace", "create", "after"]);
    let list: Value = serde_json::from_str(&s.ok(&["workspace", "list", "-o", "json"])).unwrap();
    let names: Vec<_> = list.as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["after", "before"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn login_saves_a_private_config_and_local_clients_find_the_local_server() {
    let s = Server::start();
    // `cairn login` with URL and token, then commands with neither.
    let out = s.cmd().args(["login", "--workspace", "ignored-if-missing"]).output().unwrap();
    assert!(!out.status.success(), "login checks the workspace exists");
    s.ok(&["workspace", "create", "w"]);
    s.ok(&["login", "--url", &s.url, "--token", &s.token, "--workspace", "w"]);
    let config = s.home.join(".config/cairn/config.toml");
    assert_eq!(std::fs::metadata(&config).unwrap().permissions().mode() & 0o777, 0o600);
    let bare = |args: &[&str]| {
        std::process::Command::new(BIN).env_clear().env("HOME", &s.home).args(args).output().unwrap()
    };
    let out = bare(&["datastore", "list", "-o", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A client on the same machine as a server on the default data dir needs no login at all.
    let home = s.tmp().join("home2");
    let local = Server::start_with(Opts {
        data_dir: Some(home.join(".cairn")),
        env: vec![("HOME".into(), home.display().to_string())],
        ..Default::default()
    });
    let out = std::process::Command::new(BIN)
        .env_clear()
        .env("HOME", &home)
        .args(["whoami", "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"admin\""));
    drop(local);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_describes_every_route() {
    let s = Server::start();
    let doc: Value =
        reqwest::get(format!("{}/api/v1/openapi.json", s.url)).await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/workspaces",
        "/api/v1/workspaces/{ws}",
        "/api/v1/workspaces/{ws}/datastores",
        "/api/v1/workspaces/{ws}/datastores/{ds}/upload-plan",
        "/api/v1/workspaces/{ws}/datastores/{ds}/files/{path}",
        "/api/v1/tokens",
        "/api/v1/workspaces/{ws}/endpoints",
        "/api/v1/workspaces/{ws}/endpoints/{name}",
        "/api/v1/workspaces/{ws}/endpoints/{name}/keys",
        "/api/v1/workspaces/{ws}/endpoints/{name}/regenerate-keys",
        "/api/v1/workspaces/{ws}/endpoints/{name}/token",
        "/api/v1/workspaces/{ws}/models",
        "/api/v1/workspaces/{ws}/models/{name}/versions/{v}",
        "/api/v1/workspaces/{ws}/models/{name}/versions/{v}/files/{path}",
        "/api/v1/workspaces/{ws}/models/{name}/aliases/{alias}",
        "/api/v1/workspaces/{ws}/blobs/missing",
        "/api/v1/workspaces/{ws}/sizes",
        "/api/v1/workspaces/{ws}/sizes/{name}",
    ] {
        assert!(paths.contains_key(p), "missing {p}");
    }
    // The log is JSON chunks, or with follow=true a text stream.
    let logs = &paths["/api/v1/workspaces/{ws}/runs/{run}/logs"]["get"]["responses"]["200"]["content"];
    assert!(logs["application/json"].is_object() && logs["text/plain"].is_object(), "{logs}");
    let resp = reqwest::Client::new()
        .get(format!("{}/api/v1/nope", s.url))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "not_found");
}
