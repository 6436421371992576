//! The environment YAML users write, and the canonical spec that Cairn stores, hashes and
//! builds.
//!
//! The YAML follows Azure ML v2's environment shape (`name`, `version`, `description`, `tags`,
//! `conda_file`) plus `pip`, `requirements`, `python`, `variables`, `user_managed` and
//! `interpreter`. [`EnvironmentFile::resolve`] reads every referenced file on the client, so the
//! server only ever sees an [`EnvironmentSpec`]: a Python request, a sorted list of normalised
//! PEP 508 requirements and variables. Two YAML files that mean the same thing give the same
//! [`EnvironmentSpec::hash`], which keys the venv cache.
//!
//! `azureml-*` packages (e.g. `azureml-defaults`, which Azure ML v1's
//! `CondaDependencies.serialize_to_string()` always adds) are dropped with a note: Cairn
//! provides its own compatibility layer for them, and the real packages would try to talk to
//! Azure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

use super::conda::{parse_dependencies, CondaFile, CondaParts};
use super::requirement::{normalize_requirement, read_requirements_file, Located};

/// Bumped when the build procedure changes so that old cached venvs are not reused.
/// 2: packages are compiled to bytecode at build time.
const BUILD_FORMAT: u32 = 2;

/// Why an environment YAML or spec is unusable; every variant names the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Not YAML, an unknown key, a mistyped value (serde_yaml's message names key and line).
    #[error("environment YAML: {0}")]
    Yaml(String),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error(
        "{field}: `{package}` is a conda-only package with no PyPI equivalent; Cairn builds \
         environments from PyPI with uv, so remove it (or use `user_managed: true` with an \
         interpreter that already has it)"
    )]
    CondaOnly { field: String, package: String },
    #[error("{field}: cannot read {}: {source}", path.display())]
    Read {
        field: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl SpecError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError::Invalid { field: field.into(), message: message.into() }
    }
}

impl From<SpecError> for cairn_core::Error {
    fn from(e: SpecError) -> Self {
        cairn_core::Error::Invalid(e.to_string())
    }
}

/// `conda_file:` is either a path (relative to the YAML's folder) or the conda YAML inline.
#[derive(Debug, Clone, PartialEq)]
pub enum CondaFileRef {
    Path(String),
    Inline(CondaFile),
}

impl<'de> Deserialize<'de> for CondaFileRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_yaml::Value::deserialize(d)? {
            serde_yaml::Value::String(path) => Ok(CondaFileRef::Path(path)),
            v @ serde_yaml::Value::Mapping(_) => serde_yaml::from_value(v)
                .map(CondaFileRef::Inline)
                .map_err(|e| D::Error::custom(format!("conda_file: {e}"))),
            _ => Err(D::Error::custom("conda_file must be a path or a conda environment mapping")),
        }
    }
}

/// The environment YAML as written. Unknown keys are errors, so a typo is never silently ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentFile {
    /// Accepted for compatibility with Azure ML YAML files; ignored.
    #[serde(rename = "$schema", default)]
    pub schema: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// None: the server assigns the next integer version.
    #[serde(default, deserialize_with = "version_string")]
    pub version: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "scalar_map")]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub conda_file: Option<CondaFileRef>,
    #[serde(default)]
    pub pip: Vec<String>,
    /// A `requirements.txt`, relative to the YAML's folder.
    #[serde(default)]
    pub requirements: Option<String>,
    /// A version request (`"3.11"`, `">=3.9"`) or an interpreter path for `uv venv --python`.
    #[serde(default, deserialize_with = "python_string")]
    pub python: Option<String>,
    #[serde(default, deserialize_with = "scalar_map")]
    pub variables: BTreeMap<String, String>,
    /// Use `interpreter` as it is: no venv, no installs.
    #[serde(default)]
    pub user_managed: bool,
    #[serde(default)]
    pub interpreter: Option<String>,
    /// Azure ML's Docker fields: an `image` beside `conda_file`/`pip`/`requirements` is noted and
    /// ignored; alone, or a `build`, it is refused with the reason.
    #[serde(default)]
    pub image: Option<serde_yaml::Value>,
    #[serde(default)]
    pub build: Option<serde_yaml::Value>,
}

/// The canonical, buildable environment: what the server stores (as JSON) and hashes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentSpec {
    /// uv's interpreter request; None means the `python3` on the builder's PATH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<String>,
    /// Normalised PEP 508 requirements, sorted and deduplicated.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Set in the job's process; not part of the hash, since they do not change the venv.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub user_managed: bool,
    /// The interpreter used as is when `user_managed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<String>,
}

/// A resolved spec plus what the resolver dropped or ignored, for the CLI to print.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub spec: EnvironmentSpec,
    pub notes: Vec<String>,
}

impl EnvironmentFile {
    pub fn from_yaml(text: &str) -> Result<Self, SpecError> {
        serde_yaml::from_str(text).map_err(|e| SpecError::Yaml(e.to_string()))
    }

    /// Reads and parses a YAML file; resolve it with the file's folder as `base_dir`.
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            field: "environment file".into(),
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&text).map_err(|e| match e {
            SpecError::Yaml(m) => SpecError::Yaml(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Reads referenced files (relative to `base_dir`) and produces the canonical spec.
    pub fn resolve(&self, base_dir: &Path) -> Result<EnvironmentSpec, SpecError> {
        self.resolve_with_notes(base_dir).map(|r| r.spec)
    }

    pub fn resolve_with_notes(&self, base_dir: &Path) -> Result<Resolved, SpecError> {
        if let Some(name) = &self.name {
            cairn_core::names::validate_asset_name("environment name", name)
                .map_err(|e| SpecError::invalid("name", e.to_string()))?;
        }
        if let Some(version) = &self.version {
            validate_version(version)?;
        }
        let mut notes = Vec::new();
        let has_dependencies =
            self.conda_file.is_some() || self.requirements.is_some() || !self.pip.is_empty();
        if self.build.is_some() || (self.image.is_some() && !has_dependencies) {
            let field = if self.build.is_some() { "build" } else { "image" };
            return Err(SpecError::invalid(
                field,
                "Docker images are not used: Cairn builds a venv; give `pip`, `requirements` or `conda_file`",
            ));
        }
        if let Some(image) = &self.image {
            // Azure ML's usual pair, a base image plus a conda file: the conda file says what the
            // code needs, the image only where Azure runs it.
            let image = image.as_str().map(str::to_string).unwrap_or_else(|| format!("{image:?}"));
            notes.push(format!("image: `{image}` is not used: Cairn builds a venv from the dependencies"));
        }
        let mut raw: Vec<Located> = Vec::new();
        let mut variables = BTreeMap::new();
        let mut conda_python = None;
        if let Some(conda) = &self.conda_file {
            let (file, field, dir) = match conda {
                CondaFileRef::Inline(c) => (c.clone(), "conda_file".to_string(), base_dir.to_path_buf()),
                CondaFileRef::Path(p) => {
                    let path = base_dir.join(p);
                    let field = format!("conda_file ({p})");
                    let text = std::fs::read_to_string(&path).map_err(|source| SpecError::Read {
                        field: "conda_file".into(),
                        path: path.clone(),
                        source,
                    })?;
                    let file: CondaFile =
                        serde_yaml::from_str(&text).map_err(|e| SpecError::invalid(&field, e.to_string()))?;
                    (file, field, path.parent().unwrap_or(base_dir).to_path_buf())
                }
            };
            let CondaParts { python, packages, notes: conda_notes } =
                parse_dependencies(&file, &field, &dir)?;
            conda_python = python;
            raw.extend(packages);
            notes.extend(conda_notes);
            variables.extend(scalars(&file.variables, &format!("{field}.variables"))?);
        }
        if let Some(req) = &self.requirements {
            raw.extend(read_requirements_file(&base_dir.join(req), "requirements")?);
        }
        raw.extend(
            self.pip.iter().enumerate().map(|(i, p)| Located { field: format!("pip[{i}]"), text: p.clone() }),
        );
        variables.extend(self.variables.clone());

        let mut packages = Vec::new();
        for item in &raw {
            let req = normalize_requirement(&item.text).map_err(|m| SpecError::invalid(&item.field, m))?;
            if req.name == "azureml" || req.name.starts_with("azureml-") {
                notes.push(format!(
                    "{}: dropped `{}`: Cairn provides the azureml compatibility layer",
                    item.field, req.text
                ));
            } else {
                packages.push(req.text);
            }
        }

        let python = match (self.python.as_deref(), conda_python) {
            (Some(p), Some((c, field))) if p != c => {
                return Err(SpecError::invalid(
                    "python",
                    format!("\"{p}\" conflicts with {field} (python {c})"),
                ))
            }
            (Some(p), _) => Some(absolute_if_relative(p, base_dir)),
            (None, conda) => conda.map(|(c, _)| c),
        };

        let spec = if self.user_managed {
            if !packages.is_empty() {
                return Err(SpecError::invalid(
                    "user_managed",
                    "a user-managed environment installs nothing: remove pip, requirements and conda_file",
                ));
            }
            let interpreter = match (&self.interpreter, &python) {
                (Some(i), _) => absolute_if_relative(i, base_dir),
                (None, Some(p)) if looks_like_interpreter(p) => p.clone(),
                _ => {
                    return Err(SpecError::invalid(
                        "interpreter",
                        "user_managed: true needs `interpreter:` (a path such as /usr/bin/python3, or a command on PATH)",
                    ))
                }
            };
            EnvironmentSpec {
                python: None,
                packages,
                variables,
                user_managed: true,
                interpreter: Some(interpreter),
            }
        } else {
            if self.interpreter.is_some() {
                return Err(SpecError::invalid(
                    "interpreter",
                    "only used with user_managed: true; to build a venv from a given interpreter, set `python: PATH`",
                ));
            }
            EnvironmentSpec { python, packages, variables, user_managed: false, interpreter: None }
        };
        Ok(Resolved { spec: spec.canonicalize()?, notes })
    }
}

impl EnvironmentSpec {
    /// Normalises every requirement, sorts and deduplicates, and validates the rest. Specs built
    /// by other code (the Azure ML v1 compatibility layer, the API) should pass through here.
    pub fn canonicalize(mut self) -> Result<Self, SpecError> {
        let mut packages = Vec::with_capacity(self.packages.len());
        for (i, p) in self.packages.iter().enumerate() {
            let req =
                normalize_requirement(p).map_err(|m| SpecError::invalid(format!("packages[{i}]"), m))?;
            packages.push(req.text);
        }
        packages.sort();
        packages.dedup();
        self.packages = packages;
        self.validate()?;
        Ok(self)
    }

    /// Checks that nothing in the spec can be mistaken for a command-line option or smuggle
    /// control characters into a file; the builder calls this before running uv, since a
    /// stored spec may come from anywhere.
    pub fn validate(&self) -> Result<(), SpecError> {
        for (i, p) in self.packages.iter().enumerate() {
            normalize_requirement(p).map_err(|m| SpecError::invalid(format!("packages[{i}]"), m))?;
        }
        for (field, value) in [("python", &self.python), ("interpreter", &self.interpreter)] {
            if let Some(v) = value {
                if v.is_empty() || v.starts_with('-') || v.chars().any(char::is_control) {
                    return Err(SpecError::invalid(field, format!("{v:?} is not a Python version or path")));
                }
            }
        }
        if self.user_managed && self.interpreter.is_none() {
            return Err(SpecError::invalid("interpreter", "user_managed: true needs an interpreter"));
        }
        for (k, v) in &self.variables {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return Err(SpecError::invalid(format!("variables.{k}"), "invalid environment variable"));
            }
        }
        Ok(())
    }

    /// SHA-256 (hex) of the canonical JSON of what changes the built venv: the Python request,
    /// the sorted, deduplicated packages, `user_managed` and the interpreter. Variables are
    /// excluded: they are applied when a job starts.
    pub fn hash(&self) -> String {
        #[derive(Serialize)]
        struct HashInput<'a> {
            format: u32,
            python: Option<&'a str>,
            packages: Vec<&'a str>,
            user_managed: bool,
            interpreter: Option<&'a str>,
        }
        let mut packages: Vec<&str> = self.packages.iter().map(String::as_str).collect();
        packages.sort_unstable();
        packages.dedup();
        let input = HashInput {
            format: BUILD_FORMAT,
            python: self.python.as_deref(),
            packages,
            user_managed: self.user_managed,
            interpreter: self.interpreter.as_deref(),
        };
        // Serialising plain strings, bools and integers cannot fail.
        let json = serde_json::to_vec(&input).unwrap_or_default();
        hex::encode(Sha256::digest(json))
    }
}

/// The version the server assigns when the YAML gives none: one more than the largest integer
/// version so far (non-integer versions such as `2024.1-rc` are not counted), starting at 1.
pub fn next_version<'a>(existing: impl IntoIterator<Item = &'a str>) -> String {
    let max = existing.into_iter().filter_map(|v| v.parse::<u64>().ok()).max().unwrap_or(0);
    (max + 1).to_string()
}

fn validate_version(v: &str) -> Result<(), SpecError> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && v.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(SpecError::invalid("version", format!("{v:?}: 1 to 63 letters, digits, '.', '_', '-'")))
    }
}

/// `./venv/bin/python` is relative to the YAML's folder; versions and bare commands are not paths.
fn absolute_if_relative(p: &str, base_dir: &Path) -> String {
    if p.starts_with("./") || p.starts_with("../") {
        base_dir.join(p).to_string_lossy().into_owned()
    } else {
        p.to_string()
    }
}

fn looks_like_interpreter(p: &str) -> bool {
    p.contains('/') || p.starts_with("python")
}

fn scalars(
    map: &BTreeMap<String, serde_yaml::Value>,
    field: &str,
) -> Result<BTreeMap<String, String>, SpecError> {
    map.iter()
        .map(|(k, v)| {
            scalar_to_string(v).map(|s| (k.clone(), s)).ok_or_else(|| {
                SpecError::invalid(format!("{field}.{k}"), "must be a string, number or boolean")
            })
        })
        .collect()
}

fn scalar_to_string(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `variables: {OMP_NUM_THREADS: 4}` is natural YAML; numbers and booleans become strings.
fn scalar_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let map = BTreeMap::<String, serde_yaml::Value>::deserialize(d)?;
    map.iter()
        .map(|(k, v)| match scalar_to_string(v) {
            Some(s) => Ok((k.clone(), s)),
            None => Err(serde::de::Error::custom(format!("{k}: must be a string, number or boolean"))),
        })
        .collect()
}

/// `version: 3` is an integer in YAML; accept it, but refuse floats (`1.10` would read as 1.1).
fn version_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<serde_yaml::Value>::deserialize(d)? {
        None => Ok(None),
        Some(serde_yaml::Value::String(s)) => Ok(Some(s)),
        Some(serde_yaml::Value::Number(n)) if n.is_u64() => Ok(Some(n.to_string())),
        Some(_) => {
            Err(serde::de::Error::custom("version must be a string or an integer; quote it, e.g. \"1.10\""))
        }
    }
}

/// YAML reads `python: 3.10` as the number 3.1, so numbers are refused with the fix.
fn python_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<serde_yaml::Value>::deserialize(d)? {
        None => Ok(None),
        Some(serde_yaml::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(serde::de::Error::custom(
            "python must be a quoted string such as \"3.10\" (YAML reads 3.10 as the number 3.1)",
        )),
    }
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
