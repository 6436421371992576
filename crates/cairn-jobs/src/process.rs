//! Processes of jobs: their process groups (signalled and stopped as a whole tree: SIGTERM, then
//! SIGKILL after a grace period), the group's resident memory, and the bounded log their output
//! goes to. A job's group is led by its shim (`shim.rs`), which starts the command and writes the
//! log.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

/// Largest log file kept before it is rotated (the tail is always kept: `std_log.txt` plus the
/// previous `std_log.1.txt`), so a job printing gigabytes never fills the disk or the memory.
pub const LOG_ROTATE_BYTES: u64 = 64 * 1024 * 1024;

/// Sends `signal` to the whole process group `pgid`.
pub fn signal_group(pgid: u32, signal: i32) -> bool {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is shared.
    unsafe { libc::kill(-(pgid as i32), signal) == 0 }
}

/// Resident memory of every process in group `pgid`, in bytes, read from `/proc` (Linux). A job's
/// processes all stay in its group unless one deliberately leaves it.
pub fn group_rss_bytes(pgid: u32) -> u64 {
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    let mut total = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else { continue };
        // Processes come and go while we read: a vanished one simply counts nothing.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // Fields after the command name (which may hold spaces and parentheses): state ppid pgrp …
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
        let pgrp = after.split_whitespace().nth(2).and_then(|f| f.parse::<u32>().ok());
        if pgrp != Some(pgid) {
            continue;
        }
        let Ok(statm) = std::fs::read_to_string(format!("/proc/{pid}/statm")) else { continue };
        let pages = statm.split_whitespace().nth(1).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        total += pages * page;
    }
    total
}

/// Resolves when the resident memory of group `pgid` exceeds `limit` bytes (sampled every 200 ms).
pub async fn exceeds_memory(pgid: u32, limit: u64) {
    loop {
        let rss = tokio::task::spawn_blocking(move || group_rss_bytes(pgid)).await.unwrap_or(0);
        if rss > limit {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stops process group `pgid`: SIGTERM, then SIGKILL if `exited` (the leader's end) has not
/// resolved after `grace`; then waits for it (at most `grace` again) and kills what is left.
pub async fn stop_group(pgid: u32, grace: Duration, exited: impl Future<Output = ()>) {
    tokio::pin!(exited);
    signal_group(pgid, libc::SIGTERM);
    if tokio::time::timeout(grace, &mut exited).await.is_err() {
        signal_group(pgid, libc::SIGKILL);
        let _ = tokio::time::timeout(grace, &mut exited).await;
    }
    // Grandchildren that outlived the leader are in the same group.
    signal_group(pgid, libc::SIGKILL);
}

/// A log file shared by a job's stdout and stderr, rotated past [`LOG_ROTATE_BYTES`].
pub struct JobLog {
    path: PathBuf,
    state: Mutex<(tokio::fs::File, u64)>,
}

impl JobLog {
    pub async fn create(path: PathBuf) -> std::io::Result<JobLog> {
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let file = tokio::fs::OpenOptions::new().create(true).append(true).open(&path).await?;
        let len = file.metadata().await?.len();
        Ok(JobLog { path, state: Mutex::new((file, len)) })
    }

    pub async fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut state = self.state.lock().await;
        if state.1 + bytes.len() as u64 > LOG_ROTATE_BYTES {
            state.0.flush().await?;
            tokio::fs::rename(&self.path, self.path.with_extension("1.txt")).await?;
            state.0 = tokio::fs::File::create(&self.path).await?;
            state.1 = 0;
        }
        state.0.write_all(bytes).await?;
        state.1 += bytes.len() as u64;
        Ok(())
    }

    /// Copies everything `reader` produces into the log until it ends.
    pub async fn pump<R: AsyncRead + Unpin>(&self, mut reader: R) -> std::io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            self.write(&buf[..n]).await?;
        }
    }

    pub async fn flush(&self) -> std::io::Result<()> {
        self.state.lock().await.0.flush().await
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The last `lines` lines of a text file (for failure messages).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = text.len().saturating_sub(64 * 1024);
    let text = String::from_utf8_lossy(&text[start..]);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stopping_a_group_kills_grandchildren_too() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let cmd = format!("sh -c 'echo $$ > {}; sleep 60' & wait", pidfile.display());
        let mut child = tokio::process::Command::new("/bin/sh")
            .args(["-c", &cmd])
            .current_dir(dir.path())
            .process_group(0)
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::fs::read_to_string(&pidfile).map(|s| !s.trim().is_empty()).unwrap_or(false) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let grandchild: u32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        assert!(crate::shim::ProcessIdentity::of(grandchild).is_some(), "the grandchild runs");
        let pgid = child.id().unwrap();
        stop_group(pgid, Duration::from_secs(2), async {
            let _ = child.wait().await;
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A zombie is not reaped by us (its parent is gone, init reaps it); kill(0) may still see it briefly.
        let status = std::fs::read_to_string(format!("/proc/{grandchild}/status")).unwrap_or_default();
        assert!(status.is_empty() || status.contains("State:\tZ"), "grandchild still running: {status}");
    }

    #[tokio::test]
    async fn logs_rotate_and_keep_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = JobLog::create(dir.path().join("std_log.txt")).await.unwrap();
        let chunk = vec![b'x'; 1024 * 1024];
        for _ in 0..(LOG_ROTATE_BYTES / (1024 * 1024) + 3) {
            log.write(&chunk).await.unwrap();
        }
        log.write(b"\nlast line\n").await.unwrap();
        log.flush().await.unwrap();
        let size = std::fs::metadata(log.path()).unwrap().len();
        assert!(size < LOG_ROTATE_BYTES);
        assert!(dir.path().join("std_log.1.txt").exists());
        assert_eq!(tail(log.path(), 1), "last line");
    }

    #[test]
    fn group_memory_counts_the_groups_processes_only() {
        let own = unsafe { libc::getpgrp() } as u32;
        // This test process is in its group and holds at least a megabyte.
        assert!(group_rss_bytes(own) > 1 << 20);
        // No process has a group id this large (pid_max is at most 2^22).
        assert_eq!(group_rss_bytes(u32::MAX - 1), 0);
    }
}
