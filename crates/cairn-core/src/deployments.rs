//! Online deployments: the API bodies (Azure ML v2's online-deployment shape) and the rules a
//! deployment must follow. A deployment is one or more model versions, scoring code and an
//! environment, run as `instance_count` replicas behind an endpoint.

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
    /// Longest a request may wait in the queue for a free worker (Azure ML's
    /// `max_queue_wait_ms`; 1 to request_timeout_ms); past it: 503 with Retry-After. Unset: it
    /// may wait its whole request_timeout_ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue_wait_ms: Option<i64>,
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

/// A liveness or readiness probe (Azure ML v2's `ProbeSettings`; times in seconds). The gateway
/// sends the replica protocol's `ping` every `period` once `initial_delay` has passed since the
/// replica started; `failure_threshold` failures in a row restart the replica (liveness) or take it
/// out of rotation (readiness) until `success_threshold` pings in a row succeed again.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProbeSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i64>,
}

impl ProbeSettings {
    /// Azure ML v2's defaults: 10 s, 10 s, 2 s, 1, 30.
    pub fn initial_delay_s(&self) -> i64 {
        self.initial_delay.unwrap_or(10)
    }
    pub fn period_s(&self) -> i64 {
        self.period.unwrap_or(10)
    }
    pub fn timeout_s(&self) -> i64 {
        self.timeout.unwrap_or(2)
    }
    pub fn success(&self) -> i64 {
        self.success_threshold.unwrap_or(1)
    }
    pub fn failures(&self) -> i64 {
        self.failure_threshold.unwrap_or(30)
    }

    fn validate(&self, which: &str) -> Result<(), Error> {
        let checks = [
            ("initial_delay", self.initial_delay_s(), 0, 3600),
            ("period", self.period_s(), 1, 3600),
            ("timeout", self.timeout_s(), 1, 3600),
            ("success_threshold", self.success(), 1, 1000),
            ("failure_threshold", self.failures(), 1, 1000),
        ];
        for (field, v, lo, hi) in checks {
            if !(lo..=hi).contains(&v) {
                return Err(Error::invalid(format!("{which}.{field} {v}: must be {lo} to {hi}")));
            }
        }
        if which == "liveness_probe" && self.success() != 1 {
            return Err(Error::invalid(format!(
                "liveness_probe.success_threshold {}: must be 1 (one answered ping proves a replica alive)",
                self.success()
            )));
        }
        Ok(())
    }
}

/// `POST …/endpoints/{endpoint}/deployments`: a deployment as in its YAML file.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDeployment {
    pub name: String,
    /// Optional; when given it must match the endpoint in the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_name: Option<String>,
    /// The model: `NAME:VERSION`, `azureml:NAME:VERSION` or `azureml:NAME@ALIAS` (Azure ML v2's
    /// field). Exactly one of `model` and `models` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Several models, each referenced as `model` is (a Cairn extension, as Azure ML v1 deploys a
    /// list; the SDK always sends this). At most one version of each model, at most
    /// [`MAX_MODELS`]. The scoring script finds them with `Model.get_model_path(NAME)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// The scoring script. Absent: a no-code deployment, which needs a model in MLflow format
    /// (an `MLmodel` file) and serves it with MLflow's own scoring (`/invocations`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_configuration: Option<CodeConfiguration>,
    /// `NAME`, `NAME:VERSION` or `NAME@VERSION` (an `azureml:` prefix is accepted). Required with
    /// `code_configuration`; a no-code deployment without one gets an environment built from the
    /// model's own `requirements.txt` (or `conda.yaml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default = "one")]
    pub instance_count: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// Cores and memory per replica in Azure ML v2's Kubernetes shape (what the SDK's
    /// `cpu_cores`/`memory_gb` become); instead of `instance_type`, not with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default)]
    pub request_settings: RequestSettings,
    #[serde(default)]
    pub environment_variables: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<ProbeSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<ProbeSettings>,
    #[serde(default)]
    pub description: String,
    /// Labels to find and sort deployments by (Azure's limits: see [`crate::endpoints::validate_tags`]);
    /// changing them restarts nothing.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Facts about the deployment, recorded as given (same limits as tags); changing them restarts
    /// nothing.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

/// Most models one deployment may hold.
pub const MAX_MODELS: usize = 32;

impl CreateDeployment {
    /// The model references (`model`'s one, or `models`' list in its order), parsed; 400 when
    /// both or neither field is given, the list is empty or too long, or names a model twice.
    pub fn model_refs(&self) -> Result<Vec<(String, VersionRef)>, Error> {
        let texts: &[String] = match (&self.model, &self.models) {
            (Some(one), Some(list)) => {
                return Err(Error::invalid(format!(
                    "give either model (one model) or models (a list), not both: model is {one:?}, \
                     models is {list:?}"
                )))
            }
            (Some(one), None) => std::slice::from_ref(one),
            (None, Some(list)) => list,
            (None, None) => {
                return Err(Error::invalid(
                    "model is required: NAME:VERSION, azureml:NAME:VERSION or azureml:NAME@ALIAS \
                     (or models: a list of them)",
                ))
            }
        };
        if texts.is_empty() {
            return Err(Error::invalid("models is empty: list at least one model (NAME:VERSION)"));
        }
        if texts.len() > MAX_MODELS {
            return Err(Error::invalid(format!(
                "models lists {} models: a deployment holds at most {MAX_MODELS}",
                texts.len()
            )));
        }
        let mut refs: Vec<(String, VersionRef)> = Vec::with_capacity(texts.len());
        for text in texts {
            let (name, version) = parse_model_ref(text)?;
            if let Some(j) = refs.iter().position(|(n, _)| *n == name) {
                return Err(Error::invalid(format!(
                    "models names model \"{name}\" twice ({:?} and {text:?}): a deployment holds one \
                     version of each model",
                    texts[j]
                )));
            }
            refs.push((name, version));
        }
        Ok(refs)
    }

    pub fn liveness(&self) -> ProbeSettings {
        self.liveness_probe.clone().unwrap_or_default()
    }
    pub fn readiness(&self) -> ProbeSettings {
        self.readiness_probe.clone().unwrap_or_default()
    }
    /// Whether replicas run a scoring script (`code_configuration`) or serve an MLflow model as is.
    pub fn mode(&self) -> ScoringMode {
        if self.code_configuration.is_some() {
            ScoringMode::Script
        } else {
            ScoringMode::Mlflow
        }
    }
    /// Worker processes per instance, each serving one request at a time: the
    /// `WORKER_COUNT` environment variable, Azure ML's knob for its inference server (default 1).
    pub fn worker_count(&self) -> Result<usize, Error> {
        let Some(raw) = self.environment_variables.get(WORKER_COUNT) else { return Ok(1) };
        match raw.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_WORKERS).contains(&n) => Ok(n),
            _ => Err(Error::invalid(format!(
                "environment_variables.{WORKER_COUNT} {raw:?}: must be a whole number from 1 to {MAX_WORKERS}"
            ))),
        }
    }

    /// The browser origins that may call the endpoint through this deployment: the
    /// `AML_CORS_ORIGINS` environment variable, as Azure ML's inference server reads it (a comma
    /// list of origins such as `https://app.example.com`, or `*` for any); none when unset.
    pub fn cors_origins(&self) -> Result<Vec<String>, Error> {
        let Some(raw) = self.environment_variables.get(CORS_ORIGINS) else { return Ok(Vec::new()) };
        let mut origins = Vec::new();
        for item in raw.split(',').map(|i| i.trim().trim_end_matches('/')).filter(|i| !i.is_empty()) {
            let host = item.strip_prefix("https://").or_else(|| item.strip_prefix("http://"));
            let valid =
                item == "*" || host.is_some_and(|h| !h.is_empty() && !h.contains(['/', '?', '#', ' ', '*']));
            if !valid {
                return Err(Error::invalid(format!(
                    "environment_variables.{CORS_ORIGINS}: {item:?} is not an origin: give \
                     scheme://host[:port] (no path), several separated by commas, or *"
                )));
            }
            origins.push(item.to_ascii_lowercase());
        }
        Ok(origins)
    }
}

/// The environment variable that lists the origins browsers may call an endpoint from.
pub const CORS_ORIGINS: &str = "AML_CORS_ORIGINS";

/// The environment variable that sets worker processes per instance.
pub const WORKER_COUNT: &str = "WORKER_COUNT";
/// Most worker processes per instance.
pub const MAX_WORKERS: usize = 16;

/// How a deployment's replicas score (the replica's `CAIRN_SCORING_MODE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScoringMode {
    /// `score.py`'s `init()` and `run()`, as azureml-inference-server-http calls them.
    Script,
    /// No code: MLflow's scoring of the model's pyfunc flavor (`/invocations`).
    Mlflow,
}

impl ScoringMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ScoringMode::Script => "script",
            ScoringMode::Mlflow => "mlflow",
        }
    }
}

/// A deployment's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum DeploymentState {
    Creating,
    Healthy,
    Unhealthy,
    Failed,
    Deleting,
    /// A new generation (code, model, environment, settings) is starting beside the one serving,
    /// or replicas are being added or removed.
    Updating,
}

impl DeploymentState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentState::Creating => "Creating",
            DeploymentState::Healthy => "Healthy",
            DeploymentState::Unhealthy => "Unhealthy",
            DeploymentState::Failed => "Failed",
            DeploymentState::Deleting => "Deleting",
            DeploymentState::Updating => "Updating",
        }
    }
    pub fn parse(s: &str) -> Option<DeploymentState> {
        [Self::Creating, Self::Healthy, Self::Unhealthy, Self::Failed, Self::Deleting, Self::Updating]
            .into_iter()
            .find(|d| d.as_str() == s)
    }
    /// Creating and Updating are the states `--wait` keeps waiting in.
    pub fn is_final(self) -> bool {
        !matches!(self, DeploymentState::Creating | DeploymentState::Updating)
    }
}

/// A deployment as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Deployment {
    pub id: String,
    pub name: String,
    pub endpoint_name: String,
    /// The resolved model version, `NAME:VERSION`, when the deployment holds one model; null
    /// with several (see `models`).
    pub model: Option<String>,
    /// Every resolved model version, `NAME:VERSION`, in the spec's order (one or more).
    #[serde(default)]
    pub models: Vec<String>,
    pub spec: CreateDeployment,
    pub state: DeploymentState,
    /// Why the deployment is not Healthy (with the log tail when a replica failed), else empty.
    pub reason: String,
    /// Which generation serves: 0 at creation, one more after each update that replaced the
    /// replicas (code, model, environment or settings changed).
    #[serde(default)]
    pub generation: i64,
    /// Why the last update failed (the previous generation kept serving), with the new
    /// generation's log tail; empty when the last update succeeded or there was none.
    #[serde(default)]
    pub update_error: String,
    /// While an update runs (state Updating): the spec it asked for. `spec` stays what serves
    /// until the update is done; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_update: Option<CreateDeployment>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A model version a deployment holds, as its reference resolved to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeployedModel {
    pub name: String,
    pub version: i64,
}

impl std::fmt::Display for DeployedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.name, self.version)
    }
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

/// `resources` of a deployment: Azure ML v2's Kubernetes online-deployment shape,
/// `{requests: {cpu, memory}, limits: {cpu, memory}}`. A replica is held to the limit, or to the
/// request where no limit is given (one machine has nothing to schedule requests against).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default)]
    pub requests: ResourceAmounts,
    #[serde(default)]
    pub limits: ResourceAmounts,
}

/// Kubernetes quantities: `cpu` in cores (`1`, `0.5`, `"500m"`), `memory` in bytes with an
/// optional suffix (`"1Gi"`, `"512Mi"`, `"2G"`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceAmounts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub cpu: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub memory: Option<serde_json::Value>,
}

/// What each replica is held to: cores (thread variables) and resident memory in bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReplicaLimits {
    pub cores: f64,
    pub memory_bytes: u64,
}

impl Resources {
    /// The per-replica limits, or a 400 naming the field that is wrong.
    pub fn limits(&self) -> Result<ReplicaLimits, Error> {
        let pick = |l: &Option<serde_json::Value>, r: &Option<serde_json::Value>, what: &str| match (l, r) {
            (Some(v), _) => Ok((format!("resources.limits.{what}"), v.clone())),
            (None, Some(v)) => Ok((format!("resources.requests.{what}"), v.clone())),
            (None, None) => Err(Error::invalid(format!(
                "resources: give {what} in limits or requests (e.g. cpu: \"1\", memory: \"2Gi\")"
            ))),
        };
        let (field, cpu) = pick(&self.limits.cpu, &self.requests.cpu, "cpu")?;
        let cores = parse_cpu(&cpu).map_err(|e| Error::invalid(format!("{field} {cpu}: {e}")))?;
        let (field, memory) = pick(&self.limits.memory, &self.requests.memory, "memory")?;
        let memory_bytes =
            parse_memory(&memory).map_err(|e| Error::invalid(format!("{field} {memory}: {e}")))?;
        for (what, l, r) in [
            ("cpu", &self.limits.cpu, &self.requests.cpu),
            ("memory", &self.limits.memory, &self.requests.memory),
        ] {
            if let (Some(l), Some(r)) = (l, r) {
                let below = if what == "cpu" {
                    parse_cpu(l).ok().zip(parse_cpu(r).ok()).is_some_and(|(l, r)| l < r)
                } else {
                    parse_memory(l).ok().zip(parse_memory(r).ok()).is_some_and(|(l, r)| l < r)
                };
                if below {
                    return Err(Error::invalid(format!(
                        "resources: the {what} limit {l} is below the request {r}"
                    )));
                }
            }
        }
        Ok(ReplicaLimits { cores, memory_bytes })
    }
}

/// A Kubernetes CPU quantity in cores: a positive number, or millicores (`"500m"`).
fn parse_cpu(v: &serde_json::Value) -> Result<f64, String> {
    let cores = match v {
        serde_json::Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        serde_json::Value::String(s) => match s.trim().strip_suffix('m') {
            Some(milli) => milli.parse::<f64>().map(|m| m / 1000.0).unwrap_or(f64::NAN),
            None => s.trim().parse::<f64>().unwrap_or(f64::NAN),
        },
        _ => f64::NAN,
    };
    if cores.is_finite() && cores > 0.0 && cores <= 1024.0 {
        Ok(cores)
    } else {
        Err("expected a number of cores above 0 and at most 1024, such as 1, 0.5 or \"500m\"".into())
    }
}

/// A Kubernetes memory quantity in bytes: a number, or one with a suffix (Ki Mi Gi Ti, k M G T).
fn parse_memory(v: &serde_json::Value) -> Result<u64, String> {
    const UNITS: [(&str, f64); 8] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    let bytes = match v {
        serde_json::Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        serde_json::Value::String(s) => {
            let s = s.trim();
            let (digits, factor) =
                UNITS.iter().find_map(|(u, f)| s.strip_suffix(u).map(|d| (d, *f))).unwrap_or((s, 1.0));
            digits.trim().parse::<f64>().map(|d| d * factor).unwrap_or(f64::NAN)
        }
        _ => f64::NAN,
    };
    // 16 MiB: less cannot hold a Python interpreter with a model.
    if (16.0 * 1048576.0..=1099511627776.0 * 64.0).contains(&bytes) {
        Ok(bytes as u64)
    } else {
        Err("expected at least 16Mi and at most 64Ti, such as \"512Mi\" or \"2Gi\"".into())
    }
}

/// Checks the fields that do not need the store.
pub fn validate_create(req: &CreateDeployment) -> Result<(), Error> {
    validate_deployment_name(&req.name)?;
    let models = req.model_refs()?;
    if req.code_configuration.is_none() && models.len() > 1 {
        return Err(Error::invalid(format!(
            "a deployment without code_configuration serves one MLflow model as it is (MLflow's own \
             scoring), but models lists {}: give code_configuration {{code, scoring_script}} and an \
             environment, whose scoring script loads each with Model.get_model_path(NAME)",
            models.len()
        )));
    }
    if let Some(env) = &req.environment {
        crate::names::parse_environment_ref(env)?;
    }
    if !(1..=16).contains(&req.instance_count) {
        return Err(Error::invalid(format!("instance_count {}: must be 1 to 16", req.instance_count)));
    }
    let t = req.request_settings.timeout_ms();
    if !(1..=600_000).contains(&t) {
        return Err(Error::invalid(format!("request_settings.request_timeout_ms {t}: must be 1 to 600000")));
    }
    if let Some(w) = req.request_settings.max_queue_wait_ms {
        if !(1..=t).contains(&w) {
            return Err(Error::invalid(format!(
                "request_settings.max_queue_wait_ms {w}: must be 1 to request_timeout_ms ({t})"
            )));
        }
    }
    let c = req.request_settings.max_concurrent();
    if !(1..=1000).contains(&c) {
        return Err(Error::invalid(format!(
            "request_settings.max_concurrent_requests_per_instance {c}: must be 1 to 1000"
        )));
    }
    if let Some(code) = &req.code_configuration {
        crate::RelPath::parse(&code.scoring_script)
            .map_err(|e| Error::invalid(format!("code_configuration.scoring_script: {e}")))?;
        if req.environment.is_none() {
            return Err(Error::invalid(
                "environment is required with code_configuration: the scoring script runs in it \
                 (only a deployment without code, of an MLflow model, can derive one from the model)",
            ));
        }
    }
    for k in req.environment_variables.keys() {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(Error::invalid(format!("environment_variables: invalid name {k:?}")));
        }
    }
    if let Some(resources) = &req.resources {
        if let Some(t) = &req.instance_type {
            return Err(Error::invalid(format!(
                "instance_type {t:?} and resources both size the replicas: give one of them"
            )));
        }
        resources.limits()?;
    }
    crate::endpoints::validate_tags(&req.tags)?;
    crate::endpoints::validate_tags(&req.properties)
        .map_err(|e| Error::invalid(format!("properties: {e}")))?;
    req.worker_count()?;
    req.cors_origins()?;
    req.liveness().validate("liveness_probe")?;
    req.readiness().validate("readiness_probe")?;
    Ok(())
}

/// What an update changes, and so how it is carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateKind {
    /// Only the description, tags or properties: stored, nothing restarts.
    Nothing,
    /// Only `instance_count`: replicas are added or removed, the others keep running.
    Scale,
    /// Anything a replica is started with: a new generation replaces the old one (rolling).
    Roll,
}

/// Checks that `new` may replace `old` (same name, same endpoint, valid) and says how.
pub fn classify_update(old: &CreateDeployment, new: &CreateDeployment) -> Result<UpdateKind, Error> {
    if new.name != old.name {
        return Err(Error::invalid(format!(
            "an update cannot rename deployment \"{}\" to \"{}\": create a new deployment instead",
            old.name, new.name
        )));
    }
    if let (Some(a), Some(b)) = (&old.endpoint_name, &new.endpoint_name) {
        if a != b {
            return Err(Error::invalid(format!(
                "an update cannot move deployment \"{}\" from endpoint \"{a}\" to \"{b}\"",
                old.name
            )));
        }
    }
    validate_create(new)?;
    // Everything a replica is started with, i.e. the spec without the count and what only
    // describes it; `model: X` and `models: [X]` start the same replicas.
    let start_with = |d: &CreateDeployment| {
        let mut n = d.clone();
        n.instance_count = 0;
        n.description = String::new();
        n.tags.clear();
        n.properties.clear();
        n.endpoint_name = None;
        n.models = Some(n.model.take().into_iter().chain(n.models.take().unwrap_or_default()).collect());
        serde_json::to_value(n).expect("a deployment spec serialises")
    };
    Ok(if start_with(old) != start_with(new) {
        UpdateKind::Roll
    } else if old.instance_count != new.instance_count {
        UpdateKind::Scale
    } else {
        UpdateKind::Nothing
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources(v: serde_json::Value) -> Result<ReplicaLimits, Error> {
        serde_json::from_value::<Resources>(v).unwrap().limits()
    }

    #[test]
    fn resources_take_kubernetes_quantities_and_prefer_limits() {
        let r = resources(serde_json::json!({"requests": {"cpu": "500m", "memory": "512Mi"}})).unwrap();
        assert_eq!(r, ReplicaLimits { cores: 0.5, memory_bytes: 512 << 20 });
        let r = resources(serde_json::json!({"requests": {"cpu": 1, "memory": "1Gi"},
                                             "limits": {"cpu": 2.5, "memory": "2G"}}))
        .unwrap();
        assert_eq!(r, ReplicaLimits { cores: 2.5, memory_bytes: 2_000_000_000 });
        let r = resources(serde_json::json!({"limits": {"cpu": "1", "memory": 67108864}})).unwrap();
        assert_eq!(r, ReplicaLimits { cores: 1.0, memory_bytes: 64 << 20 });
    }

    #[test]
    fn bad_resources_name_the_field() {
        for (v, needle) in [
            (serde_json::json!({"requests": {"memory": "1Gi"}}), "give cpu"),
            (serde_json::json!({"requests": {"cpu": 1}}), "give memory"),
            (serde_json::json!({"requests": {"cpu": "lots", "memory": "1Gi"}}), "resources.requests.cpu"),
            (serde_json::json!({"requests": {"cpu": 0, "memory": "1Gi"}}), "resources.requests.cpu"),
            (serde_json::json!({"limits": {"cpu": -1, "memory": "1Gi"}}), "resources.limits.cpu"),
            (serde_json::json!({"requests": {"cpu": 1, "memory": "1Pi"}}), "resources.requests.memory"),
            (serde_json::json!({"requests": {"cpu": 1, "memory": "1Ki"}}), "at least 16Mi"),
            (
                serde_json::json!({"requests": {"cpu": 2, "memory": "1Gi"}, "limits": {"cpu": 1}}),
                "below the request",
            ),
        ] {
            let e = resources(v.clone()).unwrap_err().to_string();
            assert!(e.contains(needle), "{v}: {e}");
        }
        assert!(serde_json::from_value::<Resources>(serde_json::json!({"requests": {"gpu": 1}})).is_err());
    }

    #[test]
    fn instance_type_and_resources_exclude_each_other() {
        let req: CreateDeployment = serde_json::from_value(serde_json::json!({
            "name": "blue", "model": "m:1", "environment": "e",
            "code_configuration": {"code": "c", "scoring_script": "score.py"},
            "instance_type": "small", "resources": {"requests": {"cpu": 1, "memory": "1Gi"}},
        }))
        .unwrap();
        let e = validate_create(&req).unwrap_err().to_string();
        assert!(e.contains("give one of them"), "{e}");
    }

    #[test]
    fn cors_origins_are_a_comma_list_of_origins_or_a_star() {
        let with = |value: &str| -> Result<Vec<String>, Error> {
            let req: CreateDeployment = serde_json::from_value(serde_json::json!({
                "name": "blue", "model": "m:1", "environment_variables": {"AML_CORS_ORIGINS": value},
            }))
            .unwrap();
            req.cors_origins()
        };
        assert_eq!(
            with(" https://App.example.com/ , http://localhost:3000").unwrap(),
            ["https://app.example.com", "http://localhost:3000"]
        );
        assert_eq!(with("*").unwrap(), ["*"]);
        for bad in ["example.com", "https://a.com/path", "ftp://a.com", "https://", "https://*.a.com"] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.contains("AML_CORS_ORIGINS") && e.contains("is not an origin"), "{bad}: {e}");
        }
        let none: CreateDeployment =
            serde_json::from_value(serde_json::json!({"name": "blue", "model": "m:1"})).unwrap();
        assert!(none.cors_origins().unwrap().is_empty());
    }

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

    fn spec() -> CreateDeployment {
        serde_json::from_value(serde_json::json!({"name": "blue", "model": "m:1", "environment": "e",
            "code_configuration": {"code": "x", "scoring_script": "score.py"}, "instance_count": 2}))
        .unwrap()
    }

    #[test]
    fn updates_are_classified_by_what_a_replica_starts_with() {
        let old = spec();
        let mut new = old.clone();
        new.description = "now described".into();
        new.tags.insert("stage".into(), "canary".into());
        new.properties.insert("owner".into(), "ml-team".into());
        assert_eq!(classify_update(&old, &new).unwrap(), UpdateKind::Nothing);
        new.instance_count = 3;
        assert_eq!(classify_update(&old, &new).unwrap(), UpdateKind::Scale);
        new.environment_variables.insert("V".into(), "2".into());
        assert_eq!(classify_update(&old, &new).unwrap(), UpdateKind::Roll);
        let mut probe = old.clone();
        probe.liveness_probe = Some(ProbeSettings { period: Some(1), ..Default::default() });
        assert_eq!(classify_update(&old, &probe).unwrap(), UpdateKind::Roll);

        let mut renamed = old.clone();
        renamed.name = "green".into();
        assert!(classify_update(&old, &renamed).unwrap_err().to_string().contains("cannot rename"));
        let (mut a, mut b) = (old.clone(), old.clone());
        a.endpoint_name = Some("one".into());
        b.endpoint_name = Some("two".into());
        assert!(classify_update(&a, &b).unwrap_err().to_string().contains("cannot move"));
        let mut zero = old.clone();
        zero.instance_count = 0;
        assert!(classify_update(&old, &zero).is_err());
    }

    #[test]
    fn probes_follow_azure_defaults_and_bounds() {
        let p = ProbeSettings::default();
        assert_eq!(
            (p.initial_delay_s(), p.period_s(), p.timeout_s(), p.success(), p.failures()),
            (10, 10, 2, 1, 30)
        );
        let mut d = spec();
        d.readiness_probe = Some(ProbeSettings { period: Some(0), ..Default::default() });
        assert!(validate_create(&d).unwrap_err().to_string().contains("readiness_probe.period 0"));
        d.readiness_probe = Some(ProbeSettings { success_threshold: Some(3), ..Default::default() });
        validate_create(&d).unwrap();
        d.liveness_probe = Some(ProbeSettings { success_threshold: Some(3), ..Default::default() });
        assert!(validate_create(&d).unwrap_err().to_string().contains("liveness_probe.success_threshold"));
        let err =
            serde_json::from_value::<ProbeSettings>(serde_json::json!({"periodSeconds": 3})).unwrap_err();
        assert!(err.to_string().contains("periodSeconds"), "{err}");
    }

    #[test]
    fn a_deployment_without_code_serves_mlflow_and_may_omit_the_environment() {
        let d: CreateDeployment =
            serde_json::from_value(serde_json::json!({"name": "blue", "model": "m:1"})).unwrap();
        validate_create(&d).unwrap();
        assert_eq!(d.mode(), ScoringMode::Mlflow);
        assert_eq!(spec().mode(), ScoringMode::Script);
        let mut no_env = spec();
        no_env.environment = None;
        let err = validate_create(&no_env).unwrap_err().to_string();
        assert!(err.contains("environment is required with code_configuration"), "{err}");
        // Stored specs of script deployments still read back the same.
        let back: CreateDeployment = serde_json::from_value(serde_json::to_value(spec()).unwrap()).unwrap();
        assert_eq!(back.environment.as_deref(), Some("e"));
        assert!(serde_json::to_value(&d).unwrap().get("code_configuration").is_none());
    }

    fn with_models(models: serde_json::Value) -> CreateDeployment {
        serde_json::from_value(serde_json::json!({"name": "blue", "models": models, "environment": "e",
            "code_configuration": {"code": "x", "scoring_script": "score.py"}}))
        .unwrap()
    }

    #[test]
    fn one_model_or_a_list_of_distinct_models() {
        let d = with_models(serde_json::json!(["azureml:a:1", "b@prod"]));
        let refs = d.model_refs().unwrap();
        assert_eq!(
            refs,
            [("a".into(), VersionRef::Number(1)), ("b".into(), VersionRef::Alias("prod".into()))]
        );
        assert_eq!(spec().model_refs().unwrap(), [("m".into(), VersionRef::Number(1))]);

        let both = CreateDeployment { model: Some("c:1".into()), ..d.clone() };
        let err = validate_create(&both).unwrap_err().to_string();
        assert!(err.contains("either model") && err.contains("not both"), "{err}");
        let neither = CreateDeployment { models: None, ..d.clone() };
        assert!(validate_create(&neither).unwrap_err().to_string().contains("model is required"));
        let empty = with_models(serde_json::json!([]));
        assert!(validate_create(&empty).unwrap_err().to_string().contains("models is empty"));
        let twice = with_models(serde_json::json!(["a:1", "b:1", "azureml:a:2"]));
        let err = validate_create(&twice).unwrap_err().to_string();
        assert!(err.contains("model \"a\" twice"), "{err}");
        let many: Vec<String> = (0..=MAX_MODELS).map(|i| format!("m{i}:1")).collect();
        let err = validate_create(&with_models(serde_json::json!(many))).unwrap_err().to_string();
        assert!(err.contains("lists 33 models") && err.contains("at most 32"), "{err}");
        let bad = with_models(serde_json::json!(["a:1", "b"]));
        assert!(validate_create(&bad).unwrap_err().to_string().contains("model \"b\": expected"));

        // MLflow scoring serves one model as it is: a list of one is fine, several are not.
        let no_code = |m: serde_json::Value| CreateDeployment { code_configuration: None, ..with_models(m) };
        validate_create(&no_code(serde_json::json!(["a:1"]))).unwrap();
        let err = validate_create(&no_code(serde_json::json!(["a:1", "b:1"]))).unwrap_err().to_string();
        assert!(err.contains("without code_configuration") && err.contains("models lists 2"), "{err}");
    }

    #[test]
    fn a_list_of_one_starts_what_model_starts_and_a_new_list_rolls() {
        let old = spec();
        let mut new = old.clone();
        (new.model, new.models) = (None, Some(vec!["m:1".into()]));
        assert_eq!(classify_update(&old, &new).unwrap(), UpdateKind::Nothing);
        new.models = Some(vec!["m:1".into(), "n:1".into()]);
        assert_eq!(classify_update(&old, &new).unwrap(), UpdateKind::Roll);
        // Stored specs of one model read back unchanged (no `models` written).
        let back = serde_json::to_value(&old).unwrap();
        assert_eq!(back["model"], "m:1");
        assert!(back.get("models").is_none(), "{back}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let yaml = serde_json::json!({"name": "blue", "model": "m:1", "environment": "e",
            "code_configuration": {"code": "x", "scoring_script": "score.py"}, "instance_cnt": 2});
        let err = serde_json::from_value::<CreateDeployment>(yaml).unwrap_err().to_string();
        assert!(err.contains("instance_cnt"), "{err}");
    }
}
