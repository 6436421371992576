//! What a deployment without scoring code (an MLflow model served as is) needs from its model:
//! proof that the model is in MLflow format, the environment derived from the model's own
//! requirements when the deployment names none, and what the Open Inference Protocol routes show
//! and check (platform, tensor signature; see `cairn_core::inference`).
//!
//! The `MLmodel` file is found as the replica finds it (`python/cairn/_mlflow_scoring.py`): at the
//! model version's root, or in its only top-level folder that has one.

use std::path::{Path, PathBuf};

use cairn_core::api::Workspace;
use cairn_core::deployments::ScoringMode;
use cairn_core::inference::Signature;
use cairn_core::models::{ModelFile, ModelVersion};
use cairn_core::Error;
use cairn_jobs::env::{CondaFileRef, EnvironmentFile, EnvironmentSpec};

use crate::state::AppState;

/// How many of a model's paths an error lists.
const LISTED: usize = 10;

/// The folder of `files` (a version's manifest) holding `MLmodel`: `""` for the root.
pub fn mlmodel_folder(files: &[ModelFile]) -> Option<&str> {
    if files.iter().any(|f| f.path == "MLmodel") {
        return Some("");
    }
    let mut found = files.iter().filter_map(|f| {
        let (dir, file) = f.path.split_once('/')?;
        (file == "MLmodel").then_some(dir)
    });
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// Refuses a deployment without code whose model version is not in MLflow format (400 naming
/// what is missing and what the version holds).
pub async fn require_mlflow_model(state: &AppState, ws: &Workspace, mv: &ModelVersion) -> Result<(), Error> {
    let files = state.store.model_version_files(ws, &mv.name, mv.version).await?;
    if mlmodel_folder(&files).is_some() {
        return Ok(());
    }
    let mut listed: Vec<&str> = files.iter().take(LISTED).map(|f| f.path.as_str()).collect();
    let more = format!("and {} more", files.len().saturating_sub(LISTED));
    if files.len() > LISTED {
        listed.push(&more);
    }
    Err(Error::invalid(format!(
        "the deployment has no code_configuration, so model {}:{} must be in MLflow format, but it has no \
         MLmodel file (at its root or in its only top-level folder; it holds: {}). Give the deployment \
         code_configuration {{code, scoring_script}} and an environment, or deploy a model logged with \
         mlflow.<flavor>.log_model",
        mv.name,
        mv.version,
        listed.join(", ")
    )))
}

/// The folder under `root` (a materialised model version) that holds `MLmodel`.
pub fn model_folder(root: &Path) -> Result<PathBuf, Error> {
    if root.join("MLmodel").is_file() {
        return Ok(root.to_path_buf());
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(root).map_err(|e| Error::internal(format!("model folder: {e}")))? {
        let path = entry.map_err(|e| Error::internal(format!("model folder: {e}")))?.path();
        if path.join("MLmodel").is_file() {
            found.push(path);
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::invalid("the model has no MLmodel file: it is not in MLflow format")),
        _ => Err(Error::invalid("the model holds several MLmodel folders: deploy one model")),
    }
}

/// The environment an MLflow model asks for: its `requirements.txt` (MLflow writes it beside
/// `MLmodel`) with the Python of its `python_env.yaml`, else its `conda.yaml`. Only the major and
/// minor Python version are asked for: uv takes an installed interpreter, and a patch release is
/// not worth a failed deployment. Returns the spec and which file it came from.
pub fn derived_environment(folder: &Path) -> Result<(EnvironmentSpec, &'static str), Error> {
    let python = std::fs::read_to_string(folder.join("python_env.yaml"))
        .ok()
        .and_then(|t| serde_yaml::from_str::<serde_yaml::Value>(&t).ok())
        .and_then(|v| match v.get("python")? {
            serde_yaml::Value::String(s) => Some(s.clone()),
            serde_yaml::Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .map(|p| major_minor(&p));
    let (file, from) = if folder.join("requirements.txt").is_file() {
        let file =
            EnvironmentFile { requirements: Some("requirements.txt".into()), python, ..Default::default() };
        (file, "requirements.txt")
    } else if folder.join("conda.yaml").is_file() {
        let file = EnvironmentFile {
            conda_file: Some(CondaFileRef::Path("conda.yaml".into())),
            ..Default::default()
        };
        (file, "conda.yaml")
    } else {
        return Err(Error::invalid(
            "the MLflow model has neither requirements.txt nor conda.yaml beside its MLmodel: give the \
             deployment an environment",
        ));
    };
    let mut spec = file
        .resolve(folder)
        .map_err(|e| Error::invalid(format!("the model's {from} cannot be used as an environment: {e}")))?;
    spec.python = spec.python.map(|p| major_minor(&p));
    Ok((spec, from))
}

/// `3.11.7` → `3.11`; anything else as it is.
fn major_minor(version: &str) -> String {
    let parts: Vec<&str> = version.trim().split('.').collect();
    if parts.len() > 2 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) {
        parts[..2].join(".")
    } else {
        version.trim().to_string()
    }
}

/// What the inference-protocol routes know of a running deployment.
#[derive(Debug)]
pub struct Served {
    pub mode: ScoringMode,
    /// The model's flavor as a platform name (`mlflow_sklearn`), or `cairn_score_py`.
    pub platform: String,
    /// The tensor signature, or why there is none. An MLflow model's is read from its `MLmodel`
    /// when the generation starts; a scoring script's is known only to its replicas, and is asked
    /// of one (its swagger document, see `cairn_core::inference::script`) when first needed.
    pub signature: tokio::sync::OnceCell<Result<Signature, String>>,
}

impl Served {
    pub fn script() -> Served {
        Served {
            mode: ScoringMode::Script,
            platform: "cairn_score_py".into(),
            signature: tokio::sync::OnceCell::new(),
        }
    }

    /// From the `MLmodel` file in `folder`.
    pub fn mlflow(folder: &Path) -> Served {
        let text = std::fs::read_to_string(folder.join("MLmodel")).unwrap_or_default();
        let platform = crate::models::framework_of_mlmodel(&text)
            .map(|(f, _)| format!("mlflow_{f}"))
            .unwrap_or_else(|| "mlflow".into());
        let signature = tokio::sync::OnceCell::new_with(Some(signature_of_mlmodel(&text)));
        Served { mode: ScoringMode::Mlflow, platform, signature }
    }
}

fn signature_of_mlmodel(text: &str) -> Result<Signature, String> {
    let none = "the MLflow model declares no signature: log it with signature= or input_example= to serve \
                the inference protocol (its /invocations route works without one)";
    let doc: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| format!("MLmodel is not YAML: {e}"))?;
    let sig = doc.get("signature").filter(|s| !s.is_null()).ok_or(none)?;
    let inputs = sig.get("inputs").and_then(|v| v.as_str()).ok_or(none)?;
    Signature::from_mlflow(inputs, sig.get("outputs").and_then(|v| v.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str) -> ModelFile {
        ModelFile { path: path.into(), sha256: String::new(), size: 0 }
    }

    #[test]
    fn the_mlmodel_is_at_the_root_or_in_the_only_folder_with_one() {
        assert_eq!(mlmodel_folder(&[f("MLmodel"), f("model.pkl")]), Some(""));
        assert_eq!(mlmodel_folder(&[f("model/MLmodel"), f("model/model.pkl")]), Some("model"));
        assert_eq!(mlmodel_folder(&[f("a/MLmodel"), f("b/MLmodel")]), None);
        assert_eq!(mlmodel_folder(&[f("a/b/MLmodel"), f("coef.json")]), None);
        assert_eq!(mlmodel_folder(&[]), None);
    }

    #[test]
    fn the_environment_comes_from_requirements_or_conda() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(derived_environment(d)
            .unwrap_err()
            .to_string()
            .contains("neither requirements.txt nor conda.yaml"));
        std::fs::write(
            d.join("conda.yaml"),
            "dependencies:\n- python=3.11.7\n- pip\n- pip:\n  - scikit-learn==1.7.2\n",
        )
        .unwrap();
        let (spec, from) = derived_environment(d).unwrap();
        assert_eq!((spec.python.as_deref(), from), (Some("3.11"), "conda.yaml"));
        assert_eq!(spec.packages, ["scikit-learn==1.7.2"]);
        std::fs::write(d.join("requirements.txt"), "mlflow==3.1.0\npandas==2.3.3\n").unwrap();
        std::fs::write(d.join("python_env.yaml"), "python: 3.11.7\nbuild_dependencies:\n- pip\n").unwrap();
        let (spec, from) = derived_environment(d).unwrap();
        assert_eq!((spec.python.as_deref(), from), (Some("3.11"), "requirements.txt"));
        assert_eq!(spec.packages, ["mlflow==3.1.0", "pandas==2.3.3"]);
    }

    #[test]
    fn platform_and_signature_from_the_mlmodel() {
        let dir = tempfile::tempdir().unwrap();
        let mlmodel = "flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n  sklearn:\n    sklearn_version: 1.7.2\n\
                       signature:\n  inputs: '[{\"type\": \"double\", \"name\": \"alcohol\", \"required\": true}]'\n  \
                       outputs: '[{\"type\": \"double\", \"required\": true}]'\n  params: null\n";
        std::fs::write(dir.path().join("MLmodel"), mlmodel).unwrap();
        let s = Served::mlflow(dir.path());
        assert_eq!(s.platform, "mlflow_sklearn");
        let sig = s.signature.get().unwrap().clone().unwrap();
        assert_eq!(sig.inputs[0].name, "alcohol");
        assert_eq!(sig.outputs[0].name, "output-0");
        std::fs::write(dir.path().join("MLmodel"), "flavors:\n  python_function: {}\nsignature: null\n")
            .unwrap();
        let served = Served::mlflow(dir.path());
        assert!(served.signature.get().unwrap().as_ref().unwrap_err().contains("declares no signature"));
    }
}
