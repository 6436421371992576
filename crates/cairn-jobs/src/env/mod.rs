//! Environments: what a job's Python looks like.
//!
//! - [`spec`]: the environment YAML users write ([`EnvironmentFile`]) and the canonical,
//!   hashable [`EnvironmentSpec`] that the server stores. Pure logic apart from reading the
//!   files a YAML references.
//! - [`builder`]: [`EnvBuilder`] turns a spec into a venv built with `uv`, cached by the spec's
//!   hash, built once even when many jobs ask at the same moment.
//!
//! Conda files are translated to PyPI requirements (`conda.rs`); requirement strings and
//! `requirements.txt` files are parsed and normalised in `requirement.rs`.

pub mod builder;
mod conda;
mod requirement;
pub mod spec;

pub use builder::{find_uv, BuildError, BuildStatus, BuiltEnv, EnvBuilder};
pub use conda::CondaFile;
pub use spec::{next_version, CondaFileRef, EnvironmentFile, EnvironmentSpec, Resolved, SpecError};
