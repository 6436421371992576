//! The model registry's vocabulary: registered models, their numbered versions, file manifests,
//! aliases, and the request bodies of the registry API. A model version's id is `name:version`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Error;

/// A registered model: a name with auto-incremented integer versions.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Model {
    pub name: String,
    pub workspace: String,
    pub description: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// The highest existing version; absent when every version was deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_version: Option<i64>,
    /// Alias → version.
    #[serde(default)]
    pub aliases: BTreeMap<String, i64>,
}

/// One version of a registered model.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelVersion {
    /// `name:version`
    pub id: String,
    pub name: String,
    pub version: i64,
    pub workspace: String,
    pub description: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Always `READY` for a version that is visible (files are stored before the row is written).
    pub status: String,
    /// MLflow's legacy stage (`None`, `Staging`, `Production`, `Archived`).
    pub stage: String,
    /// Where the files came from (e.g. `runs:/RUN/PATH`, or the local upload).
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment_id: Option<String>,
    /// MLflow 3's logged model id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logged_model_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework_version: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// Total size of the files, in bytes.
    pub size: i64,
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// One file of a model version, relative to the version's root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    pub path: String,
    pub sha256: String,
    pub size: i64,
}

/// What a new version records besides its files. `name` is the model, created on first
/// registration.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct NewModelVersion {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default)]
    pub framework: Option<String>,
    #[serde(default)]
    pub framework_version: Option<String>,
    #[serde(default)]
    pub run_id: Option<String>,
    #[serde(default)]
    pub experiment_id: Option<String>,
    #[serde(default)]
    pub logged_model_id: Option<String>,
    /// Where the files came from; `models:/NAME/VERSION` when absent.
    #[serde(default)]
    pub source: Option<String>,
}

/// Filters of a model listing.
#[derive(Clone, Debug, Default)]
pub struct ModelFilter {
    /// Models whose name contains this.
    pub name_contains: Option<String>,
    /// Models carrying this tag, on the model or on one of its versions.
    pub tag: Option<(String, String)>,
    /// Models with a version of this framework.
    pub framework: Option<String>,
}

/// How a request names a version: `3`, `latest` or `@alias`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VersionRef {
    Number(i64),
    Latest,
    Alias(String),
}

impl VersionRef {
    pub fn parse(s: &str) -> Result<VersionRef, Error> {
        if s == "latest" {
            return Ok(VersionRef::Latest);
        }
        if let Some(alias) = s.strip_prefix('@') {
            if alias.is_empty() {
                return Err(Error::invalid("empty alias after '@'"));
            }
            // Azure's `NAME@latest` label; no alias may be called that (as in MLflow).
            if alias.eq_ignore_ascii_case("latest") {
                return Ok(VersionRef::Latest);
            }
            return Ok(VersionRef::Alias(alias.to_string()));
        }
        match s.parse::<i64>() {
            Ok(v) if v >= 1 => Ok(VersionRef::Number(v)),
            _ => Err(Error::invalid(format!(
                "invalid model version {s:?}: use a number from 1, \"latest\" or \"@ALIAS\""
            ))),
        }
    }
}

impl std::fmt::Display for VersionRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VersionRef::Number(v) => write!(f, "{v}"),
            VersionRef::Latest => f.write_str("latest"),
            VersionRef::Alias(a) => write!(f, "@{a}"),
        }
    }
}

/// Body of `POST …/models/{name}/versions`: files from a run's artifacts (`run_id` + `path`) or
/// a manifest of blobs the client has uploaded (`files`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterModelVersion {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// An artifact path of the run (a file or a folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<ModelFile>>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework_version: Option<String>,
}

/// Body of `POST …/blobs/missing`: which of these contents does the workspace lack?
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlobsQuery {
    pub sha256: Vec<String>,
}

/// Answer of `POST …/blobs/missing`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct MissingBlobs {
    pub missing: Vec<String>,
}

/// Body of `PATCH …/models/{name}`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateModel {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Tags to set (added or replaced).
    #[serde(default)]
    pub set_tags: BTreeMap<String, String>,
    /// Tag keys to remove.
    #[serde(default)]
    pub remove_tags: Vec<String>,
}

/// Body of `PATCH …/models/{name}/versions/{v}`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateModelVersion {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub set_tags: BTreeMap<String, String>,
    #[serde(default)]
    pub remove_tags: Vec<String>,
}

/// Body of `PUT …/models/{name}/aliases/{alias}`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAlias {
    pub version: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_refs_parse_numbers_latest_and_aliases() {
        assert_eq!(VersionRef::parse("3").unwrap(), VersionRef::Number(3));
        assert_eq!(VersionRef::parse("latest").unwrap(), VersionRef::Latest);
        assert_eq!(VersionRef::parse("@prod").unwrap(), VersionRef::Alias("prod".into()));
        assert_eq!(VersionRef::parse("@latest").unwrap(), VersionRef::Latest, "Azure's NAME@latest");
        for bad in ["0", "-1", "x", "@", "", "1.5"] {
            assert!(matches!(VersionRef::parse(bad), Err(Error::Invalid(_))), "{bad}");
        }
    }
}
