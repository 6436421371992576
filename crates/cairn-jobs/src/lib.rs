//! Running training jobs: environments (`env`: specs, canonical hashes, venvs built with `uv`
//! into a cache), compute targets and their sizes (`compute`), and the processes of jobs
//! (`process`: process groups, bounded logs, stopping a whole tree).
//!
//! This crate knows nothing of HTTP or of the metadata store: the server's scheduler and runner
//! (`cairn-server/src/jobs/`) use it.

pub mod compute;
pub mod env;
pub mod process;
