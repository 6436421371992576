//! Fixtures of the suites that run jobs (`jobs.rs`, `cluster.rs`): a workspace with a compute and
//! an empty environment, job files, submitting, and waiting for a run or one of its processes.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{json, Server};

/// Workspace `w` with compute `cpu` of `max_nodes` nodes (size `small`) and environment `plain`
/// (no packages); their YAML files are written to `dir`.
pub fn setup_in(s: &Server, dir: &Path, max_nodes: u32) {
    s.ok(&["workspace", "create", "w"]);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("compute.yml"),
        format!("name: cpu\ntype: amlcompute\nsize: small\nmin_instances: 0\nmax_instances: {max_nodes}\n"),
    )
    .unwrap();
    std::fs::write(dir.join("env.yml"), "name: plain\npip: []\n").unwrap();
    s.ok(&["compute", "create", "-f", dir.join("compute.yml").to_str().unwrap(), "-w", "w"]);
    s.ok(&["env", "create", "-f", dir.join("env.yml").to_str().unwrap(), "-w", "w"]);
}

/// A job file `dir/name` for experiment `tests` on `plain` and `cpu`, with `body` (its command and
/// anything else) appended.
pub fn job_file(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, format!("experiment_name: tests\nenvironment: plain\ncompute: cpu\n{body}")).unwrap();
    p.display().to_string()
}

/// Writes `dir/code/name`, a file of the folder job files name as `code: ./code`.
pub fn code_file(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir.join("code")).unwrap();
    std::fs::write(dir.join("code").join(name), text).unwrap();
}

/// Submits a job file to workspace `w`; returns the run id.
pub fn submit(s: &Server, file: &str) -> String {
    json(&s.ok(&["job", "submit", "-f", file, "-w", "w", "-o", "json"]))["id"].as_str().unwrap().to_string()
}

pub fn show(s: &Server, run: &str) -> Value {
    json(&s.ok(&["job", "show", run, "-w", "w", "-o", "json"]))
}

/// Polls `job show` until `done` holds (the run then), failing the test after `secs`.
pub fn wait_for(s: &Server, run: &str, done: impl Fn(&Value) -> bool, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let r = show(s, run);
        if done(&r) {
            return r;
        }
        assert!(Instant::now() < deadline, "run {run} did not get there in {secs}s: {r}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn ended(r: &Value) -> bool {
    matches!(r["status"].as_str(), Some("Completed" | "Failed" | "Canceled"))
}

/// True while a process exists and is not a zombie.
pub fn running(pid: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    !status.is_empty() && !status.contains("State:\tZ")
}

/// Waits (up to `secs`) until `path` exists.
pub fn wait_for_file(path: &Path, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} did not appear in {secs}s", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pid a job writes to `path`, waiting up to 30 s for the file and its whole line.
pub fn read_pid(path: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(pid) = std::fs::read_to_string(path).unwrap_or_default().trim().parse() {
            return pid;
        }
        assert!(Instant::now() < deadline, "no pid in {}", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}
