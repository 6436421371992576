//! Real environment builds with uv from PyPI: build, reuse, single flight, failure and retry.
//!
//! uv comes from `scripts/setup.sh` (`.venv-tools/bin/uv`); without it these tests fail rather
//! than skip, since a skipped build test proves nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn_jobs::env::{find_uv, BuildError, EnvBuilder, EnvironmentFile, EnvironmentSpec};

fn uv() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    find_uv(Some(&repo)).expect("uv not found (CAIRN_UV, PATH, .venv-tools/bin/uv): run scripts/setup.sh")
}

fn spec(yaml: &str) -> EnvironmentSpec {
    let dir = tempfile::tempdir().unwrap();
    EnvironmentFile::from_yaml(yaml).unwrap().resolve(dir.path()).unwrap()
}

/// What `python -c code` prints; it writes no bytecode, so that whatever .pyc files exist are the
/// build's.
fn python_says(python: &Path, code: &str) -> String {
    let out = std::process::Command::new(python)
        .args(["-c", code])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_once_then_reuses_without_running_uv() {
    let cache = tempfile::tempdir().unwrap();
    let builder = EnvBuilder::new(cache.path().to_path_buf(), uv());
    let spec = spec("name: six\npip: [\"six==1.16.0\"]\nvariables: {CAIRN_TEST: yes}\n");

    let first = builder.ensure(&spec).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!first.reused);
    assert_eq!(first.hash, spec.hash());
    assert_eq!(python_says(&first.python, "import six; print(six.__version__)"), "1.16.0");
    let venv = first.venv.clone().unwrap();
    assert!(venv.starts_with(cache.path().join(&first.hash)));
    assert!(cache.path().join(&first.hash).join("READY").is_file());
    let log = builder.build_log(&first.hash).unwrap();
    assert!(log.contains("six"), "{log}");
    // Compiled at build time: a job run with PYTHONDONTWRITEBYTECODE must not compile it again.
    let cached = python_says(
        &first.python,
        "import importlib.util, os, six; print(os.path.isfile(importlib.util.cache_from_source(six.__file__)))",
    );
    assert_eq!(cached, "True", "six has no .pyc next to it after the build");

    let started = Instant::now();
    let second = builder.ensure(&spec).await.unwrap();
    assert!(second.reused);
    assert_eq!(second.python, first.python);
    assert!(started.elapsed() < Duration::from_secs(2), "reuse took {:?}", started.elapsed());
    assert_eq!(builder.builds_started(), 1);
    assert_eq!(builder.build_log(&first.hash).unwrap(), log, "a reuse must not touch the build log");

    // Proof that reuse runs nothing: a builder whose uv does not exist still succeeds.
    let no_uv = EnvBuilder::new(cache.path().to_path_buf(), PathBuf::from("/nonexistent/uv"));
    let third = no_uv.ensure(&spec).await.unwrap();
    assert!(third.reused && no_uv.builds_started() == 0);

    let vars = first.env_vars(&spec);
    assert!(vars.iter().any(|(k, v)| k == "VIRTUAL_ENV" && Path::new(v) == venv));
    assert!(vars.iter().any(|(k, v)| k == "CAIRN_TEST" && v == "yes"));
    assert!(builder.build_log("../../etc/passwd").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ensures_build_once() {
    let cache = tempfile::tempdir().unwrap();
    // Two builders on one cache stand in for two processes: they share only the file lock.
    let a = EnvBuilder::new(cache.path().to_path_buf(), uv());
    let b = EnvBuilder::new(cache.path().to_path_buf(), uv());
    let spec = spec("pip: [\"six==1.16.0\"]\n");

    let (x, y, z) = tokio::join!(a.ensure(&spec), a.ensure(&spec), b.ensure(&spec));
    let results = [x.unwrap(), y.unwrap(), z.unwrap()];
    assert_eq!(a.builds_started() + b.builds_started(), 1);
    assert_eq!(results.iter().filter(|r| !r.reused).count(), 1, "{results:?}");
    assert!(results.iter().all(|r| r.python == results[0].python));
    assert_eq!(python_says(&results[0].python, "import six; print(six.__version__)"), "1.16.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_build_is_clear_leaves_nothing_ready_and_is_retried() {
    let cache = tempfile::tempdir().unwrap();
    let builder = EnvBuilder::new(cache.path().to_path_buf(), uv());
    let spec = spec("pip: [\"this-package-does-not-exist-cairn==0.0.1\"]\n");
    let dir = cache.path().join(spec.hash());

    let err = builder.ensure(&spec).await.unwrap_err();
    eprintln!("the error users see:\n{err}");
    let BuildError::Failed { ref log_tail, ref reason, .. } = err else { panic!("{err}") };
    assert!(reason.contains("uv pip install"), "{reason}");
    assert!(log_tail.contains("this-package-does-not-exist-cairn"), "{log_tail}");
    let message = err.to_string();
    assert!(message.contains("failed to build") && message.contains("build.log"), "{message}");
    assert!(!dir.join("READY").exists());
    assert!(!dir.join("venv").exists(), "the partial venv is removed");
    assert!(builder.build_log(&spec.hash()).unwrap().contains("FAILED"));

    let again = builder.ensure(&spec).await.unwrap_err();
    assert!(matches!(again, BuildError::Failed { .. }), "{again}");
    assert_eq!(builder.builds_started(), 2, "the next use tries again");
    assert!(!dir.join("READY").exists());
}

#[tokio::test]
async fn user_managed_uses_the_named_interpreter() {
    let cache = tempfile::tempdir().unwrap();
    let builder = EnvBuilder::new(cache.path().to_path_buf(), PathBuf::from("/nonexistent/uv"));
    let env = builder.ensure(&spec("user_managed: true\ninterpreter: python3\n")).await.unwrap();
    assert!(env.reused && env.venv.is_none() && env.python.is_absolute());
    assert_eq!(builder.builds_started(), 0);

    let err =
        builder.ensure(&spec("user_managed: true\ninterpreter: /nonexistent/python\n")).await.unwrap_err();
    assert!(matches!(err, BuildError::Interpreter { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/python"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_a_crashed_build_are_rebuilt_not_used() {
    let cache = tempfile::tempdir().unwrap();
    let builder = EnvBuilder::new(cache.path().to_path_buf(), uv());
    let spec = spec("pip: [\"six==1.16.0\"]\n");
    // What a build killed half-way leaves: a venv folder and a log, but no READY.
    let venv = cache.path().join(spec.hash()).join("venv");
    std::fs::create_dir_all(venv.join("bin")).unwrap();
    std::fs::write(venv.join("bin/python"), "#!/bin/sh\nexit 1\n").unwrap();

    let env = builder.ensure(&spec).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!env.reused);
    assert_eq!(python_says(&env.python, "import six; print(six.__version__)"), "1.16.0");
}
