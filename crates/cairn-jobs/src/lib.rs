//! Running training jobs: environments (`env`: specs, canonical hashes, venvs built with `uv`
//! into a cache), compute targets (node slots), the scheduler that hands queued runs to free
//! nodes, and the runner that starts, watches, cancels and finalises a job's process.
//!
//! This crate knows nothing of HTTP; it talks to the metadata store through the server.

pub mod env;
