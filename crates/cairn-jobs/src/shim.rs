//! The job shim: a small supervisor between the server and a job's command, so that a job
//! outlives a server restart and is reattached by the next server.
//!
//! The server starts `cairn __job-shim --run-dir DIR -- COMMAND` (the server's own binary, see
//! [`spawn`]) as the leader of a new process group. The shim:
//!
//! 1. records who it is in `DIR/.cairn/shim.json` ([`ProcessIdentity`]: pid, start time and boot id, so
//!    that a pid reused by another process is never taken for the job);
//! 2. runs `/bin/sh -c COMMAND` in its own group (the job's group: cancel, timeout and the memory
//!    watchdog act on it as a whole), with the environment the server gave it;
//! 3. copies the command's stdout and stderr into the rotated `DIR/logs/std_log.txt` itself, so
//!    that the log does not depend on the server being alive;
//! 4. catches SIGHUP, SIGINT and SIGTERM without obeying them (the command, whose handlers are reset
//!    by `exec`, gets them normally; the shim stays to record how it ended); SIGPIPE is ignored by
//!    the Rust runtime and reset for the command by `std::process`;
//! 5. writes `DIR/.cairn/exit.json` ([`ExitRecord`]) atomically once the command has ended and its output
//!    is closed, then exits.
//!
//! The server waits for the shim (its child, or after a restart any process: [`ProcessIdentity::wait_gone`])
//! and reads `exit.json`; a shim that is gone without one was killed.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

use crate::process::JobLog;

/// The hidden subcommand of the `cairn` binary that runs a shim.
pub const SUBCOMMAND: &str = "__job-shim";
/// The shim's identity, in the run directory: under a folder of its own, so that a file of the
/// job's code snapshot (the run directory is the job's working directory) is never taken for it.
pub const IDENTITY_FILE: &str = ".cairn/shim.json";
/// How the command ended, in the run directory.
pub const EXIT_FILE: &str = ".cairn/exit.json";

/// The live log of a run, relative to its directory.
pub fn log_path(run_dir: &Path) -> PathBuf {
    run_dir.join("logs").join("std_log.txt")
}

/// Starts a shim for `command` in `dir`, the leader of a new process group (its pid is the
/// job's process group id), with `env` added to the server's environment. The shim is the
/// server's own executable (`/proc/self/exe`, which still works when the file was replaced by an
/// upgrade); its stdin, stdout and stderr are closed so that it holds nothing of the server.
pub fn spawn(dir: &Path, command: &str, env: &[(String, String)]) -> std::io::Result<Child> {
    match std::fs::remove_file(dir.join(EXIT_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("cairn")
        .arg(SUBCOMMAND)
        .arg("--run-dir")
        .arg(dir)
        .arg("--")
        .arg(command)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(false);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn()
}

/// Runs a shim to its end (`cairn __job-shim`); returns the shim's exit code (0 once `exit.json`
/// is written).
pub fn main(run_dir: &Path, command: &str) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(_) => return 70,
    };
    runtime.block_on(run(run_dir, command))
}

async fn run(dir: &Path, command: &str) -> i32 {
    use tokio::signal::unix::{signal, SignalKind};
    // Held for the shim's life: a caught signal is only recorded, never acted on.
    let _signals: Vec<_> = [SignalKind::hangup(), SignalKind::interrupt(), SignalKind::terminate()]
        .into_iter()
        .filter_map(|kind| signal(kind).ok())
        .collect();
    let log = match JobLog::create(log_path(dir)).await {
        Ok(log) => log,
        Err(e) => {
            let record = ExitRecord::error(format!("cannot open the run's log: {e}"));
            return if record.write(dir).is_ok() { 0 } else { 1 };
        }
    };
    let note = |msg: String| {
        let log = &log;
        async move {
            let _ = log.write(format!("[cairn] {msg}\n").as_bytes()).await;
        }
    };
    match ProcessIdentity::of(std::process::id()) {
        Some(me) => {
            if let Err(e) = me.save(dir) {
                note(format!("cannot record the job supervisor's identity (a restart cannot reattach): {e}"))
                    .await;
            }
        }
        None => note("cannot read the job supervisor's identity from /proc".into()).await,
    }
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    let record = match cmd.spawn() {
        Err(e) => {
            note(format!("cannot start the command: {e}")).await;
            ExitRecord::error(format!("cannot start the command: {e}"))
        }
        Ok(mut child) => {
            let stdout = child.stdout.take().expect("piped");
            let stderr = child.stderr.take().expect("piped");
            // The output ends when every process holding it is gone, as the job does.
            let (status, _, _) = tokio::join!(child.wait(), log.pump(stdout), log.pump(stderr));
            match status {
                Ok(status) => ExitRecord::of(status),
                Err(e) => ExitRecord::error(format!("cannot wait for the command: {e}")),
            }
        }
    };
    let _ = log.flush().await;
    match record.write(dir) {
        Ok(()) => 0,
        Err(e) => {
            note(format!("cannot record how the command ended: {e}")).await;
            let _ = log.flush().await;
            1
        }
    }
}

/// How a job's command ended, as the shim saw it (`exit.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The exit code, when the command exited.
    #[serde(default)]
    pub code: Option<i32>,
    /// The signal that killed the command.
    #[serde(default)]
    pub signal: Option<i32>,
    /// The command could not be started or waited for.
    #[serde(default)]
    pub error: Option<String>,
    /// Unix time in milliseconds.
    pub finished_at: i64,
}

impl ExitRecord {
    pub fn of(status: std::process::ExitStatus) -> ExitRecord {
        use std::os::unix::process::ExitStatusExt;
        ExitRecord { code: status.code(), signal: status.signal(), error: None, finished_at: now_ms() }
    }

    fn error(msg: String) -> ExitRecord {
        ExitRecord { code: None, signal: None, error: Some(msg), finished_at: now_ms() }
    }

    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// "exit code 3", "killed by signal 9", or the shim's error.
    pub fn describe(&self) -> String {
        match (self.code, self.signal, &self.error) {
            (_, _, Some(e)) => e.clone(),
            (Some(c), _, _) => format!("exit code {c}"),
            (None, Some(s), _) => format!("killed by signal {s}"),
            (None, None, None) => "ended in an unknown way".into(),
        }
    }

    /// Writes `exit.json` atomically (a temporary file, then renamed).
    pub fn write(&self, run_dir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        write_atomically(&run_dir.join(EXIT_FILE), &json)
    }

    /// `exit.json` of a run directory; None when absent or unreadable (a shim killed mid-write
    /// leaves only its temporary file).
    pub fn read(run_dir: &Path) -> Option<ExitRecord> {
        let bytes = std::fs::read(run_dir.join(EXIT_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// What identifies a process beyond its pid: the kernel's boot and the process's start time
/// (clock ticks after boot, `/proc/PID/stat` field 22). A pid reused by another process has
/// another start time, so it is never taken for the one recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    pub pid: u32,
    pub start_ticks: u64,
    pub boot_id: String,
}

impl ProcessIdentity {
    /// The identity of a live process; None when there is none with this pid (or it is a zombie:
    /// it has ended).
    pub fn of(pid: u32) -> Option<ProcessIdentity> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let fields = parse_stat(&stat)?;
        if matches!(fields.state, 'Z' | 'X') {
            return None;
        }
        Some(ProcessIdentity { pid, start_ticks: fields.start_ticks, boot_id: boot_id() })
    }

    /// True while this very process runs (not another one that got its pid).
    pub fn is_running(&self) -> bool {
        ProcessIdentity::of(self.pid).as_ref() == Some(self)
    }

    pub fn save(&self, run_dir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        write_atomically(&run_dir.join(IDENTITY_FILE), &json)
    }

    /// The shim identity recorded in a run directory, if any.
    pub fn load(run_dir: &Path) -> Option<ProcessIdentity> {
        let bytes = std::fs::read(run_dir.join(IDENTITY_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Resolves once this process has ended. Through a pidfd (readable when the process exits;
    /// it works for processes that are not our children, such as a shim started by the previous
    /// server), checked against the identity after it is opened so that a reused pid is not
    /// waited for; polled every 200 ms where pidfds are missing (Linux < 5.3).
    pub async fn wait_gone(&self) {
        if let Some(fd) = pidfd_open(self.pid) {
            if !self.is_running() {
                return;
            }
            // SAFETY: the OwnedFd is moved into the AsyncFd, which keeps it open until dropped.
            let registered = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
            };
            if let Ok(fd) = registered {
                let _ = fd.readable().await;
                return;
            }
        }
        while self.is_running() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Kills what is left of this shim's process group after the shim itself is gone
    /// (grandchildren of a job whose shim was killed). Nothing is signalled when the pid now
    /// belongs to another process: a group id is the pid of its leader.
    pub fn kill_leftovers(&self) {
        if ProcessIdentity::of(self.pid).is_some_and(|other| other != *self) {
            return;
        }
        crate::process::signal_group(self.pid, libc::SIGKILL);
    }
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the descriptor was just created and is owned by nobody else.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The fields of `/proc/PID/stat` the shim needs.
#[derive(Debug, PartialEq, Eq)]
pub struct StatFields {
    pub state: char,
    pub pgrp: u32,
    pub start_ticks: u64,
}

/// Parses `/proc/PID/stat`. The command name (field 2) may hold spaces and parentheses, so the
/// fields are counted after its last `)`: state is field 3, pgrp field 5, starttime field 22.
pub fn parse_stat(stat: &str) -> Option<StatFields> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    Some(StatFields {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// A temporary file renamed over `path`: a reader sees the old file or the whole new one, even if
/// the writer is killed. Not synced to disk: a machine that crashes takes its jobs along, and a
/// record lost with it reads as none (the run fails as killed), so the fsync would only slow
/// every job's end.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    drop(f);
    std::fs::rename(&tmp, path)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_lines_whose_command_name_holds_spaces_and_parentheses() {
        let line = "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(line), Some(StatFields { state: 'S', pgrp: 4242, start_ticks: 987654 }));
        assert_eq!(parse_stat("4242 (cut short) S 1 2"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn a_reused_pid_is_not_taken_for_the_recorded_process() {
        let me = ProcessIdentity::of(std::process::id()).expect("own identity");
        assert!(me.is_running());
        // The same pid started at another time (the pid was reused by a newer process), or in
        // another boot: not the recorded process, and its group is left alone.
        let reused = ProcessIdentity { start_ticks: me.start_ticks.wrapping_sub(1), ..me.clone() };
        assert!(!reused.is_running());
        reused.kill_leftovers(); // would kill this test's own group if it did not check
        let other_boot = ProcessIdentity { boot_id: "another-boot".into(), ..me.clone() };
        assert!(!other_boot.is_running());
        // A pid no process has.
        let gone = ProcessIdentity { pid: u32::MAX - 1, ..me };
        assert!(!gone.is_running());
    }

    #[tokio::test]
    async fn waits_for_a_process_that_is_not_our_child_to_end() {
        // `sh` starts `sleep` in the background and exits: the sleep is reparented, not ours.
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 0.5 >/dev/null 2>&1 & echo $!"])
            .output()
            .unwrap();
        let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let id = ProcessIdentity::of(pid).expect("sleep runs");
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(10), id.wait_gone()).await.expect("saw the exit");
        assert!(started.elapsed() >= Duration::from_millis(200), "returned before the process ended");
        assert!(!id.is_running());
        // Waiting again for a process already gone returns at once.
        tokio::time::timeout(Duration::from_secs(1), id.wait_gone()).await.unwrap();
    }

    #[test]
    fn exit_records_round_trip_and_describe_the_end() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ExitRecord::read(dir.path()), None);
        let rec = ExitRecord { code: Some(3), signal: None, error: None, finished_at: 5 };
        rec.write(dir.path()).unwrap();
        assert_eq!(ExitRecord::read(dir.path()), Some(rec.clone()));
        assert!(!dir.path().join(".cairn/exit.json.tmp").exists());
        assert_eq!(rec.describe(), "exit code 3");
        assert!(!rec.success());
        let killed = ExitRecord { code: None, signal: Some(9), error: None, finished_at: 5 };
        assert_eq!(killed.describe(), "killed by signal 9");
        // A half-written record (the shim killed while writing) is no record.
        std::fs::write(dir.path().join(EXIT_FILE), "{\"code\": ").unwrap();
        assert_eq!(ExitRecord::read(dir.path()), None);
    }
}
