//! The in-job Python packages are compiled into the binary and unpacked into the data directory
//! at start, so every job finds them on PYTHONPATH whatever its environment, with nothing to
//! install: `cairn` (`python/cairn/`: the runtime, `from cairn import Run`, and the SDK, which
//! shares its HTTP client and is imported lazily) and the Azure ML v1 compatibility layer
//! `azureml` (`python/azureml_compat/azureml/`), whose `from azureml.core import Run` is what
//! v1 training scripts write. Both are standard library only.

use std::path::Path;

use anyhow::Context;

macro_rules! python_files {
    ($($source:literal => $dest:literal),* $(,)?) => {
        &[$(($dest, include_str!(concat!("../../../python/", $source)))),*]
    };
}

/// `(path under the runtime directory, content)` of every embedded file.
const FILES: &[(&str, &str)] = python_files!(
    "cairn/__init__.py" => "cairn/__init__.py",
    "cairn/_batcher.py" => "cairn/_batcher.py",
    "cairn/_client.py" => "cairn/_client.py",
    "cairn/_conda.py" => "cairn/_conda.py",
    "cairn/_config.py" => "cairn/_config.py",
    "cairn/_offline.py" => "cairn/_offline.py",
    "cairn/_online.py" => "cairn/_online.py",
    "cairn/_records.py" => "cairn/_records.py",
    "cairn/_retry.py" => "cairn/_retry.py",
    "cairn/_spill.py" => "cairn/_spill.py",
    "cairn/_upload.py" => "cairn/_upload.py",
    "cairn/_version.py" => "cairn/_version.py",
    "cairn/compute.py" => "cairn/compute.py",
    "cairn/datastore.py" => "cairn/datastore.py",
    "cairn/environment.py" => "cairn/environment.py",
    "cairn/errors.py" => "cairn/errors.py",
    "cairn/experiment.py" => "cairn/experiment.py",
    "cairn/model.py" => "cairn/model.py",
    "cairn/webservice.py" => "cairn/webservice.py",
    "cairn/run.py" => "cairn/run.py",
    "cairn/workspace.py" => "cairn/workspace.py",
    "cairn/_mlflow_scoring.py" => "cairn/_mlflow_scoring.py",
    "cairn/_scoring.py" => "cairn/_scoring.py",
    "cairn/replica.py" => "cairn/replica.py",
    "cairn/serving.py" => "cairn/serving.py",
    "azureml_compat/azureml/__init__.py" => "azureml/__init__.py",
    "azureml_compat/azureml/_compat.py" => "azureml/_compat.py",
    "azureml_compat/azureml/contrib/__init__.py" => "azureml/contrib/__init__.py",
    "azureml_compat/azureml/contrib/services/__init__.py" => "azureml/contrib/services/__init__.py",
    "azureml_compat/azureml/contrib/services/aml_request.py" => "azureml/contrib/services/aml_request.py",
    "azureml_compat/azureml/contrib/services/aml_response.py" => "azureml/contrib/services/aml_response.py",
    "azureml_compat/azureml/core/__init__.py" => "azureml/core/__init__.py",
    "azureml_compat/azureml/core/authentication.py" => "azureml/core/authentication.py",
    "azureml_compat/azureml/core/compute.py" => "azureml/core/compute.py",
    "azureml_compat/azureml/core/conda_dependencies.py" => "azureml/core/conda_dependencies.py",
    "azureml_compat/azureml/core/datastore.py" => "azureml/core/datastore.py",
    "azureml_compat/azureml/core/environment.py" => "azureml/core/environment.py",
    "azureml_compat/azureml/core/experiment.py" => "azureml/core/experiment.py",
    "azureml_compat/azureml/core/webservice.py" => "azureml/core/webservice.py",
    "azureml_compat/azureml/core/model.py" => "azureml/core/model.py",
    "azureml_compat/azureml/core/run.py" => "azureml/core/run.py",
    "azureml_compat/azureml/core/script_run_config.py" => "azureml/core/script_run_config.py",
    "azureml_compat/azureml/core/workspace.py" => "azureml/core/workspace.py",
    "azureml_compat/azureml/train/__init__.py" => "azureml/train/__init__.py",
    "azureml_compat/azureml/train/estimator.py" => "azureml/train/estimator.py",
);

/// Writes the packages under `dir/` (`dir/cairn/`, `dir/azureml/`), replacing what a previous
/// version left.
pub fn unpack(dir: &Path) -> anyhow::Result<()> {
    for (name, content) in FILES {
        let path = dir.join(name);
        let parent = path.parent().expect("embedded files live in a package folder");
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        if std::fs::read_to_string(&path).ok().as_deref() != Some(*content) {
            std::fs::write(&path, content).with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `.py` file of the two packages is embedded: a module added to `python/` but not
    /// here would be missing inside jobs only, where it is hardest to notice.
    #[test]
    fn every_package_file_is_embedded() {
        let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../python");
        let mut on_disk = Vec::new();
        for (root, dest) in [("cairn", "cairn"), ("azureml_compat/azureml", "azureml")] {
            let mut stack = vec![python.join(root)];
            while let Some(folder) = stack.pop() {
                for entry in std::fs::read_dir(&folder).unwrap() {
                    let path = entry.unwrap().path();
                    if path.is_dir() {
                        stack.push(path);
                    } else if path.extension().is_some_and(|e| e == "py") {
                        let rel = path.strip_prefix(python.join(root)).unwrap().to_str().unwrap().to_string();
                        on_disk.push(format!("{dest}/{rel}"));
                    }
                }
            }
        }
        on_disk.sort();
        let mut embedded: Vec<String> = FILES.iter().map(|(name, _)| name.to_string()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk);
    }

    #[test]
    fn unpack_writes_both_packages() {
        let dir = tempfile::tempdir().unwrap();
        unpack(dir.path()).unwrap();
        assert!(dir.path().join("cairn/run.py").is_file());
        assert!(dir.path().join("azureml/core/__init__.py").is_file());
        unpack(dir.path()).unwrap();
    }
}
