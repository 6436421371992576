//! Transfer progress as an `indicatif` bar on stderr: bytes, files, rate, ETA. Hidden when
//! stderr is not a terminal or with `--quiet`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};

use cairn_client::transfer::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Bar {
    bar: ProgressBar,
    files_total: AtomicU64,
    files_done: AtomicU64,
}

impl Bar {
    pub fn new(quiet: bool) -> Bar {
        let target = if quiet || !std::io::stderr().is_terminal() {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(Some(0), target);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>11} [{bar:30}] {bytes}/{total_bytes} {msg} {binary_bytes_per_sec} ETA {eta}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        Bar { bar, files_total: AtomicU64::new(0), files_done: AtomicU64::new(0) }
    }

    fn files_msg(&self) {
        let done = self.files_done.load(Ordering::Relaxed);
        let total = self.files_total.load(Ordering::Relaxed);
        self.bar.set_message(format!("{done}/{total} files"));
    }
}

impl Progress for Bar {
    fn phase(&self, name: &str, files: u64, bytes: u64) {
        self.bar.set_prefix(name.to_string());
        self.bar.set_length(bytes);
        self.bar.set_position(0);
        self.bar.reset_eta();
        self.files_total.store(files, Ordering::Relaxed);
        self.files_done.store(0, Ordering::Relaxed);
        self.files_msg();
    }
    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
    fn file_done(&self) {
        self.files_done.fetch_add(1, Ordering::Relaxed);
        self.files_msg();
    }
    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
