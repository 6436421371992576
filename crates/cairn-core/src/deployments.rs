//! Online deployments: the API bodies (Azure ML v2's online-deployment shape) and the rules a
//! deployment must follow. A deployment is a model version, scoring code and an environment,
//! run as `instance_count` replicas behind an endpoint.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::models::VersionRef;
use crate::Error;

/// Where the scoring code is: `code` is a code snapshot id on the API (the CLI uploads the
/// folder the YAML names and puts the snapshot's id here); `scoring_script` is relative to it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeConfiguration {
    pub code: String,
    pub scoring_script: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestSettings {
    /// How long one scoring call may take (default 5000 ms); past it: 504 and the replica is recycled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout_ms: Option<i64>,
    /// Concurrent requests each replica takes (default 1); past it × instances: 429.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_requests_per_instance: Option<i64>,
}

impl RequestSettings {
    pub fn timeout_ms(&self) -> i64 {
        self.request_timeout_ms.unwrap_or(5000)
    }
    pub fn max_concurrent(&self) -> i64 {
        self.max_concurrent_requests_per_instance.unwrap_or(1)
    }
}

fn one() -> i64 {
    1
}

/// `POST …/endpoints/{endpoint}/deployments`: a deployment as in its YAML file.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDeployment {
    pub name: String,
    /// Optional; when given it must match the endpoint in the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_name: Option<String>,
    /// `NAME:VERSION`, `azureml:NAME:VERSION` or `azureml:NAME@ALIAS`.
    pub model: String,
    pub code_configuration: CodeConfiguration,
    /// `NAME`, `NAME:VERSION` or `NAME@VERSION` (an `azureml:` prefix is accepted).
    pub environment: String,
    #[serde(default = "one")]
    pub instance_count: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    #[serde(default)]
    pub request_settings: RequestSettings,
    #[serde(default)]
    pub environment_variables: BTreeMap<String, String>,
    #[serde(default)]
    pub description: String,
}

/// A deployment's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum DeploymentState {
    Creating,
    Healthy,
    Unhealthy,
    Failed,
    Deleting,
}

impl DeploymentState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentState::Creating => "Creating",
            DeploymentState::Healthy => "Healthy",
            DeploymentState::Unhealthy => "Unhealthy",
            DeploymentState::Failed => "Failed",
            DeploymentState::Deleting => "Deleting",
        }
    }
    pub fn parse(s: &str) -> Option<DeploymentState> {
        [Self::Creating, Self::Healthy, Self::Unhealthy, Self::Failed, Self::Deleting]
            .into_iter()
            .find(|d| d.as_str() == s)
    }
    /// Creating is the only state `--wait` keeps waiting in.
    pub fn is_final(self) -> bool {
        !matches!(self, DeploymentState::Creating)
    }
}

/// A deployment as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Deployment {
    pub id: String,
    pub name: String,
    pub endpoint_name: String,
    /// The resolved model version, `NAME:VERSION`.
    pub model: String,
    pub spec: CreateDeployment,
    pub state: DeploymentState,
    /// Why the deployment is not Healthy (with the log tail when a replica failed), else empty.
    pub reason: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The deployment name rule (Azure's: like an endpoint name).
pub fn validate_deployment_name(name: &str) -> Result<(), Error> {
    let b = name.as_bytes();
    let ok = (3..=32).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-';
    if ok {
        Ok(())
    } else {
        let shown: String = name.chars().take(40).collect();
        Err(Error::invalid(format!(
            "invalid deployment name {shown:?}: 3 to 32 characters: lower-case letters, digits and '-', \
             starting with a letter and ending with a letter or digit"
        )))
    }
}

/// `NAME:VERSION`, `azureml:NAME:VERSION`, `azureml:NAME@ALIAS` → the name and version reference.
pub fn parse_model_ref(model: &str) -> Result<(String, VersionRef), Error> {
    let m = model.strip_prefix("azureml:").unwrap_or(model);
    let bad = || {
        Error::invalid(format!(
            "model {model:?}: expected NAME:VERSION, azureml:NAME:VERSION or azureml:NAME@ALIAS"
        ))
    };
    if let Some((name, alias)) = m.split_once('@') {
        if name.is_empty() || alias.is_empty() {
            return Err(bad());
        }
        return Ok((name.to_string(), VersionRef::Alias(alias.to_string())));
    }
    let (name, version) = m.rsplit_once(':').ok_or_else(bad)?;
    if name.is_empty() || name.contains(':') {
        return Err(bad());
    }
    Ok((name.to_string(), VersionRef::parse(version)?))
}

/// `NAME`, `NAME:VERSION`, `NAME@VERSION` (optionally `azureml:`-prefixed) → name and version.
pub fn parse_environment_ref(env: &str) -> Result<(String, Option<i64>), Error> {
    let e = env.strip_prefix("azureml:").unwrap_or(env);
    let (name, version) = match e.split_once([':', '@']) {
        Some((n, v)) => {
            let v = v.parse::<i64>().map_err(|_| {
                Error::invalid(format!("environment {env:?}: the version must be a number (NAME:VERSION)"))
            })?;
            (n, Some(v))
        }
        None => (e, None),
    };
    if name.is_empty() {
        return Err(Error::invalid(format!("environment {env:?}: expected NAME[:VERSION]")));
    }
    Ok((name.to_string(), version))
}

/// Checks the fields that do not need the store.
pub fn validate_create(req: &CreateDeployment) -> Result<(), Error> {
    validate_deployment_name(&req.name)?;
    parse_model_ref(&req.model)?;
    parse_environment_ref(&req.environment)?;
    if !(1..=16).contains(&req.instance_count) {
        return Err(Error::invalid(format!("instance_count {}: must be 1 to 16", req.instance_count)));
    }
    let t = req.request_settings.timeout_ms();
    if !(1..=600_000).contains(&t) {
        return Err(Error::invalid(format!("request_settings.request_timeout_ms {t}: must be 1 to 600000")));
    }
    let c = req.request_settings.max_concurrent();
    if !(1..=1000).contains(&c) {
        return Err(Error::invalid(format!(
            "request_settings.max_concurrent_requests_per_instance {c}: must be 1 to 1000"
        )));
    }
    crate::RelPath::parse(&req.code_configuration.scoring_script)
        .map_err(|e| Error::invalid(format!("code_configuration.scoring_script: {e}")))?;
    for k in req.environment_variables.keys() {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(Error::invalid(format!("environment_variables: invalid name {k:?}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_references_in_azure_shapes() {
        let (n, v) = parse_model_ref("azureml:wine:3").unwrap();
        assert_eq!((n.as_str(), v), ("wine", VersionRef::Number(3)));
        let (n, v) = parse_model_ref("wine:2").unwrap();
        assert_eq!((n.as_str(), v), ("wine", VersionRef::Number(2)));
        let (n, v) = parse_model_ref("azureml:wine@prod").unwrap();
        assert_eq!((n.as_str(), v), ("wine", VersionRef::Alias("prod".into())));
        assert!(parse_model_ref("wine").is_err());
        assert!(parse_model_ref("wine:x").is_err());
        assert!(parse_model_ref(":1").is_err());
    }

    #[test]
    fn environment_references() {
        assert_eq!(parse_environment_ref("py").unwrap(), ("py".into(), None));
        assert_eq!(parse_environment_ref("azureml:py:2").unwrap(), ("py".into(), Some(2)));
        assert_eq!(parse_environment_ref("py@3").unwrap(), ("py".into(), Some(3)));
        assert!(parse_environment_ref("py:x").is_err());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let yaml = serde_json::json!({"name": "blue", "model": "m:1", "environment": "e",
            "code_configuration": {"code": "x", "scoring_script": "score.py"}, "instance_cnt": 2});
        let err = serde_json::from_value::<CreateDeployment>(yaml).unwrap_err().to_string();
        assert!(err.contains("instance_cnt"), "{err}");
    }
}
