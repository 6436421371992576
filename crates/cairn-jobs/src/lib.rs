//! Running training jobs: environments (`env`: specs, canonical hashes, venvs built with `uv`
//! into a cache), compute targets and their sizes (`compute`), the processes of jobs
//! (`process`: process groups, bounded logs, stopping a whole tree) and the shim that supervises
//! a job's command so that the job outlives a server restart (`shim`).
//!
//! This crate knows nothing of HTTP or of the metadata store: the server's scheduler and runner
//! (`cairn-server/src/jobs/`) use it.

pub mod compute;
pub mod env;
pub mod process;
pub mod shim;
