//! One module per command group; each turns arguments into client calls and prints the result.

pub mod admin;
pub mod datastores;
pub mod demo;
pub mod deployments;
pub mod endpoints;
pub mod jobs;
pub mod login;
pub mod models;
pub mod tokens;
pub mod workspaces;
pub mod yaml;
