//! API bodies for experiments, runs and their tracking data, environments, compute targets and
//! job submission.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The life of a run. Jobs go `Queued → Preparing → Starting → Running → Finalizing` and end
/// `Completed`, `Failed` or `Canceled`; runs logged from outside a job start `Running`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum RunStatus {
    NotStarted,
    Queued,
    Preparing,
    Starting,
    Running,
    Finalizing,
    Completed,
    Failed,
    Canceled,
}

impl RunStatus {
    pub const ALL: [RunStatus; 9] = [
        RunStatus::NotStarted,
        RunStatus::Queued,
        RunStatus::Preparing,
        RunStatus::Starting,
        RunStatus::Running,
        RunStatus::Finalizing,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Canceled,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::NotStarted => "NotStarted",
            RunStatus::Queued => "Queued",
            RunStatus::Preparing => "Preparing",
            RunStatus::Starting => "Starting",
            RunStatus::Running => "Running",
            RunStatus::Finalizing => "Finalizing",
            RunStatus::Completed => "Completed",
            RunStatus::Failed => "Failed",
            RunStatus::Canceled => "Canceled",
        }
    }
    pub fn parse(s: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|r| r.as_str() == s)
    }
    pub fn is_terminal(self) -> bool {
        matches!(self, RunStatus::Completed | RunStatus::Failed | RunStatus::Canceled)
    }
    /// A job holding a node: it counts against the compute's `max_nodes`.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            RunStatus::Preparing | RunStatus::Starting | RunStatus::Running | RunStatus::Finalizing
        )
    }
}

/// Floats in JSON: NaN and infinities have no JSON literal, so they travel as the strings
/// `"NaN"`, `"Infinity"` and `"-Infinity"` (as MLflow and JavaScript's conventions do).
pub mod float_json {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_nan() {
            s.serialize_str("NaN")
        } else if v.is_infinite() {
            s.serialize_str(if *v > 0.0 { "Infinity" } else { "-Infinity" })
        } else {
            s.serialize_f64(*v)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Num {
            F(f64),
            S(String),
        }
        match Num::deserialize(d)? {
            Num::F(f) => Ok(f),
            Num::S(s) => match s.as_str() {
                "NaN" | "nan" => Ok(f64::NAN),
                "Infinity" | "inf" | "+Infinity" => Ok(f64::INFINITY),
                "-Infinity" | "-inf" => Ok(f64::NEG_INFINITY),
                other => Err(serde::de::Error::custom(format!(
                    "metric value {other:?} is not a number (use a number, \"NaN\", \"Infinity\" or \"-Infinity\")"
                ))),
            },
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Experiment {
    pub name: String,
    pub workspace: String,
    pub created_at: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateExperiment {
    pub name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Transition {
    pub status: RunStatus,
    pub at: i64,
}

/// One point of a metric series.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct MetricPoint {
    #[serde(with = "float_json")]
    #[schema(value_type = f64)]
    pub value: f64,
    pub step: i64,
    pub timestamp: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Run {
    pub id: String,
    pub workspace: String,
    pub experiment: String,
    pub display_name: String,
    pub status: RunStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// Who created it: the name of the caller's token, or the `user_id` an MLflow client gave.
    /// Absent for runs created before Cairn kept it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Why the run failed, with the last lines of its log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<i64>,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Facts about the run set once (`add_properties`); unlike tags they never change.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// The latest value of every metric.
    #[serde(default)]
    pub metrics: BTreeMap<String, MetricPoint>,
    #[serde(default)]
    pub transitions: Vec<Transition>,
    /// The submitted job, for runs that are jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub job: Option<serde_json::Value>,
    /// The `cairn server` that claimed the job (its processes and folder are on that server's
    /// machine; only it supervises them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<RunServer>,
}

/// A server as a run names it: who runs the job, and whether that server still answers.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RunServer {
    pub id: String,
    pub host: String,
    pub url: String,
    /// False when the server stopped, or its heartbeat is older than its stale limit: its jobs
    /// are left as they are (no other server touches them) until it comes back.
    pub alive: bool,
    /// Unix milliseconds of its last heartbeat.
    pub last_seen: i64,
}

/// Starts a run from outside a job (a notebook, the MLflow client).
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRun {
    pub experiment: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub parent_run_id: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRun {
    #[serde(default)]
    pub status: Option<RunStatus>,
    #[serde(default)]
    pub display_name: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogMetric {
    pub key: String,
    #[serde(with = "float_json")]
    #[schema(value_type = f64)]
    pub value: f64,
    #[serde(default)]
    pub step: Option<i64>,
    #[serde(default)]
    pub timestamp: Option<i64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// Metrics, params and tags logged in one call.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogBatch {
    #[serde(default)]
    pub metrics: Vec<LogMetric>,
    #[serde(default)]
    pub params: Vec<KeyValue>,
    #[serde(default)]
    pub tags: Vec<KeyValue>,
}

/// Properties to add to a run: new keys are stored, a key already set must keep its value.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddProperties {
    pub properties: BTreeMap<String, String>,
}

/// Most properties one call may add.
pub const MAX_PROPERTIES: usize = 100;

/// Limits of one [`LogBatch`] (MLflow's, so its clients never hit a surprise).
pub const MAX_BATCH_METRICS: usize = 1000;
pub const MAX_BATCH_PARAMS: usize = 100;
pub const MAX_BATCH_TAGS: usize = 100;
pub const MAX_KEY_LEN: usize = 250;
pub const MAX_PARAM_VALUE_LEN: usize = 6000;

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RunMetrics {
    pub metrics: BTreeMap<String, Vec<MetricPoint>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Environment {
    pub name: String,
    pub version: i64,
    pub description: String,
    /// The resolved, canonical spec (python, packages, variables, user_managed).
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    /// Hash of what the build depends on: two versions with the same hash share one venv.
    pub hash: String,
    pub created_at: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnvironment {
    pub name: String,
    #[serde(default)]
    pub version: Option<i64>,
    #[serde(default)]
    pub description: String,
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
}

/// The state of an environment's cached build.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct EnvironmentBuild {
    pub hash: String,
    pub ready: bool,
    pub reused: bool,
    pub log: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Compute {
    pub name: String,
    pub kind: String,
    pub size: String,
    pub cores: u32,
    pub memory_gb: f64,
    pub min_nodes: i64,
    pub max_nodes: i64,
    pub idle_seconds: i64,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ComputeState>,
}

/// What a compute target is doing now.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ComputeState {
    /// Nodes allocated now: `min_nodes`, plus those running or preparing jobs, plus those idle for
    /// less than the idle time before scale-down.
    pub current_nodes: i64,
    pub busy_nodes: i64,
    pub idle_nodes: i64,
    pub starting_nodes: i64,
    /// Each allocated node, by id.
    pub nodes: Vec<ComputeNode>,
    pub queued_runs: Vec<String>,
    pub running_runs: Vec<String>,
    /// How limits are applied on this target.
    pub limits: String,
}

/// One node of a compute target.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ComputeNode {
    pub id: u32,
    /// `starting` (preparing a job), `busy` (running one) or `idle`.
    pub state: String,
    /// Since when (ms since the epoch) the node has been in this state.
    pub since: i64,
}

/// A machine size a compute target can use: shipped with Cairn, or defined in the workspace.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ComputeSize {
    pub name: String,
    pub cores: u32,
    pub memory_gb: f64,
    /// Shipped with Cairn (read-only) rather than defined in the workspace.
    pub shipped: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
}

/// Defines a workspace compute size (`cairn compute size add`).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateComputeSize {
    pub name: String,
    /// Cores per node: 1 up to the machine's core count.
    pub cores: u32,
    /// Memory per node in GiB, more than 0.
    pub memory_gb: f64,
}

/// A compute target in Azure ML v2's YAML shape (`amlcompute` is accepted for `local`).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCompute {
    pub name: String,
    #[serde(default = "default_kind", rename = "type")]
    pub kind: String,
    #[serde(default = "default_size")]
    pub size: String,
    #[serde(default)]
    pub min_instances: i64,
    #[serde(default = "one")]
    pub max_instances: i64,
    /// Seconds an idle node is kept before it is released.
    #[serde(default = "default_idle")]
    pub idle_time_before_scale_down: i64,
    #[serde(default)]
    pub description: Option<String>,
}

fn default_kind() -> String {
    "local".into()
}
fn default_size() -> String {
    "STANDARD_D2_V2".into()
}
fn one() -> i64 {
    1
}
fn default_idle() -> i64 {
    120
}

/// A job input, as in Azure ML v2's command jobs: data (an object: a datastore path, mounted
/// read-only or downloaded into the run's folder) or a literal (a number, string or boolean:
/// a hyper-parameter), which `${{inputs.NAME}}` in the command stands for as text.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum JobInput {
    Data(DataInput),
    Literal(Literal),
}

/// A data input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DataInput {
    /// `datastore://NAME/path`, or Azure's `azureml://datastores/NAME/paths/path`.
    pub path: String,
    #[serde(default)]
    pub mode: InputMode,
}

/// A literal input's value.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Literal {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl Literal {
    /// What `${{inputs.NAME}}` becomes in the command.
    pub fn text(&self) -> String {
        match self {
            Literal::Bool(b) => b.to_string(),
            Literal::Int(i) => i.to_string(),
            Literal::Float(f) => f.to_string(),
            Literal::Text(t) => t.clone(),
        }
    }
}

impl<'de> Deserialize<'de> for JobInput {
    // By hand, so that a wrong field of a data input is named (an untagged enum's error says
    // only that nothing matched).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let value = serde_json::Value::deserialize(d)?;
        Ok(match value {
            serde_json::Value::Object(_) => {
                JobInput::Data(serde_json::from_value(value).map_err(D::Error::custom)?)
            }
            serde_json::Value::Bool(b) => JobInput::Literal(Literal::Bool(b)),
            serde_json::Value::Number(n) => JobInput::Literal(match n.as_i64() {
                Some(i) => Literal::Int(i),
                None => Literal::Float(
                    n.as_f64().ok_or_else(|| D::Error::custom(format!("number {n} is out of range")))?,
                ),
            }),
            serde_json::Value::String(t) => JobInput::Literal(Literal::Text(t)),
            other => {
                return Err(D::Error::custom(format!(
                    "expected a data input {{path, mode}} or a literal (number, string, boolean), not {other}"
                )))
            }
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InputMode {
    /// A read-only copy (files are copied in and made read-only before the job starts).
    #[default]
    Mount,
    Download,
}

/// What `job submit` sends: an Azure ML v2 command job with its code already uploaded.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    pub experiment: String,
    #[serde(default)]
    pub display_name: Option<String>,
    /// The code snapshot id returned by `POST …/snapshots`.
    #[serde(default)]
    pub snapshot: Option<String>,
    pub command: String,
    /// `name@version` or `name` (latest version).
    pub environment: String,
    pub compute: String,
    #[serde(default)]
    pub inputs: BTreeMap<String, JobInput>,
    #[serde(default)]
    pub environment_variables: BTreeMap<String, String>,
    /// Seconds before the job is stopped and marked failed.
    #[serde(default)]
    pub timeout: Option<u64>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// A file of a code snapshot.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SnapshotFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshot {
    pub files: Vec<SnapshotFile>,
}

/// The snapshot's id and the contents the server does not have yet (to be PUT to `…/blobs/SHA`).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SnapshotCreated {
    pub id: String,
    pub missing: Vec<String>,
}

/// A search over runs: MLflow's filter grammar (`metrics.rmse < 0.7 and params.max_depth = '5'`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRuns {
    /// Only runs of this experiment (all of the workspace's otherwise).
    #[serde(default)]
    pub experiment: Option<String>,
    #[serde(default)]
    pub filter: String,
    /// e.g. `["metrics.rmse ASC", "attributes.start_time DESC"]`.
    #[serde(default)]
    pub order_by: Vec<String>,
    #[serde(default)]
    pub page_size: Option<i64>,
    #[serde(default)]
    pub page_token: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RunsPage {
    pub runs: Vec<Run>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}
