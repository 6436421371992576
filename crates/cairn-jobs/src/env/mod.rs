//! Environments: the spec (`spec.rs`) and the builder (`builder.rs`).
