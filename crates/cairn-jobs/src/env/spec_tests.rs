//! Unit tests for `spec.rs`: YAML shapes, conda translation, errors that name fields, hashing.

use super::*;

fn resolve_in(dir: &Path, yaml: &str) -> Result<Resolved, SpecError> {
    EnvironmentFile::from_yaml(yaml)?.resolve_with_notes(dir)
}

fn resolve(yaml: &str) -> Resolved {
    let dir = tempfile::tempdir().unwrap();
    resolve_in(dir.path(), yaml).unwrap_or_else(|e| panic!("{e}"))
}

fn error(yaml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    match resolve_in(dir.path(), yaml) {
        Ok(r) => panic!("expected an error, got {r:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn pip_list_with_metadata_and_variables() {
    let yaml = "$schema: https://azuremlschemas.azureedge.net/latest/environment.schema.json\n\
                name: sklearn-env\nversion: 3\ndescription: d\ntags: {team: ml, tier: 2}\n\
                python: \"3.11\"\npip: [\"Pandas >= 2\", numpy, six==1.16.0, numpy]\n\
                variables: {OMP_NUM_THREADS: 4, DEBUG: true, MODE: fast}\n";
    let file = EnvironmentFile::from_yaml(yaml).unwrap();
    assert_eq!(file.name.as_deref(), Some("sklearn-env"));
    assert_eq!(file.version.as_deref(), Some("3"));
    assert_eq!(file.tags["tier"], "2");
    let r = resolve(yaml);
    assert_eq!(r.spec.python.as_deref(), Some("3.11"));
    assert_eq!(r.spec.packages, ["numpy", "pandas>=2", "six==1.16.0"]);
    assert_eq!(r.spec.variables["OMP_NUM_THREADS"], "4");
    assert_eq!(r.spec.variables["DEBUG"], "true");
    assert!(!r.spec.user_managed);
    // The server stores the spec as JSON.
    let json = serde_json::to_string(&r.spec).unwrap();
    assert_eq!(serde_json::from_str::<EnvironmentSpec>(&json).unwrap(), r.spec);
}

#[test]
fn requirements_file_is_read_relative_to_the_yaml() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("requirements.txt"), "# deps\nsix==1.16.0\nrequests[socks]>=2\n").unwrap();
    let r = resolve_in(dir.path(), "name: r\nrequirements: requirements.txt\npip: [tqdm]\n").unwrap();
    assert_eq!(r.spec.packages, ["requests[socks]>=2", "six==1.16.0", "tqdm"]);

    let err = resolve_in(dir.path(), "requirements: missing.txt\n").unwrap_err().to_string();
    assert!(err.contains("requirements") && err.contains("missing.txt"), "{err}");
}

#[test]
fn conda_file_inline() {
    let r = resolve(
        "name: c\nconda_file:\n  channels: [conda-forge]\n  dependencies:\n    - python=3.10\n    - pip\n    \
         - conda-forge::numpy=1.26\n    - scikit-learn>=1.3\n    - pytorch::pytorch=2.1\n    \
         - pip:\n      - six==1.16.0\n",
    );
    assert_eq!(r.spec.python.as_deref(), Some("3.10"));
    assert_eq!(r.spec.packages, ["numpy==1.26.*", "scikit-learn>=1.3", "six==1.16.0", "torch==2.1.*"]);
}

#[test]
fn conda_file_by_path_with_pip_includes_relative_to_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("env")).unwrap();
    std::fs::write(
        dir.path().join("env/conda.yml"),
        "name: x\ndependencies:\n  - python>=3.9\n  - py-xgboost\n  - pip:\n    - -r file:extra.txt\n\
         variables: {A: from-conda, B: from-conda}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("env/extra.txt"), "six\n").unwrap();
    let r = resolve_in(dir.path(), "conda_file: env/conda.yml\nvariables: {B: from-yaml}\n").unwrap();
    assert_eq!(r.spec.python.as_deref(), Some(">=3.9"));
    assert_eq!(r.spec.packages, ["six", "xgboost"]);
    assert_eq!(r.spec.variables["A"], "from-conda");
    assert_eq!(r.spec.variables["B"], "from-yaml");

    let err = resolve_in(dir.path(), "conda_file: env/nope.yml\n").unwrap_err().to_string();
    assert!(err.contains("conda_file") && err.contains("nope.yml"), "{err}");
}

/// The exact shape of Azure ML v1's `CondaDependencies.serialize_to_string()`.
#[test]
fn azure_ml_v1_conda_dependencies_output() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("conda_dependencies.yml"),
        "# Conda environment specification. The dependencies defined in this file will\n\
         # be automatically provisioned for runs with userManagedDependencies=False.\n\n\
         # Details about the Conda environment file format:\n\
         # https://conda.io/docs/user-guide/tasks/manage-environments.html#create-env-file-manually\n\n\
         name: project_environment\n\
         dependencies:\n  \
           # The python interpreter version.\n  \
           # Currently Azure ML only supports 3.5.2 and later.\n\
         - python=3.8.13\n\n\
         - pip:\n    \
             # Required packages for AzureML execution, history, and data preparation.\n  \
           - azureml-defaults\n  \
           - azureml-core==1.55.0\n\n\
         - scikit-learn\n\
         - pandas=1.3\n\
         channels:\n- anaconda\n- conda-forge\n",
    )
    .unwrap();
    let r = resolve_in(dir.path(), "name: v1env\nconda_file: conda_dependencies.yml\n").unwrap();
    assert_eq!(r.spec.python.as_deref(), Some("3.8.13"));
    assert_eq!(r.spec.packages, ["pandas==1.3.*", "scikit-learn"]);
    assert_eq!(r.notes.len(), 2, "{:?}", r.notes);
    assert!(r.notes[0].contains("azureml-defaults") && r.notes[0].contains("compatibility"), "{:?}", r.notes);
}

#[test]
fn unknown_keys_are_named() {
    let err = error("name: e\npipp: [six]\n");
    assert!(err.contains("pipp"), "{err}");
    let err = error("conda_file:\n  dependancies: [numpy]\n");
    assert!(err.contains("conda_file") && err.contains("dependancies"), "{err}");
    let err = error("image: mcr.microsoft.com/azureml/base\n");
    assert!(err.contains("image") && err.contains("venv"), "{err}");
    let err = error("build: {path: docker}\npip: [six]\n");
    assert!(err.contains("build") && err.contains("venv"), "{err}");
}

/// Azure ML's samples pair a base image with a conda file: the dependencies are built, the image
/// is named in a note.
#[test]
fn an_image_beside_dependencies_is_noted_not_refused() {
    let r = resolve(
        "image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest\n\
         conda_file:\n  dependencies:\n    - python=3.11\n    - pip:\n      - six\n",
    );
    assert_eq!(r.spec.packages, ["six"]);
    assert!(r.notes.iter().any(|n| n.contains("openmpi4.1.0") && n.contains("not used")), "{:?}", r.notes);
}

#[test]
fn conda_only_packages_and_bad_entries_name_the_field() {
    let err = error("conda_file:\n  dependencies:\n    - python=3.11\n    - numpy\n    - cudatoolkit=11.8\n");
    assert!(err.contains("conda_file.dependencies[2]"), "{err}");
    assert!(err.contains("cudatoolkit") && err.contains("conda-only"), "{err}");

    let err = error("conda_file:\n  dependencies:\n    - pip:\n      - six\n      - --index-url=http://x\n");
    assert!(err.contains("conda_file.dependencies[0].pip[1]") && err.contains("pip option"), "{err}");

    let err = error("pip: [six, \"numpy 1.2\"]\n");
    assert!(err.contains("pip[1]"), "{err}");

    let err = error("conda_file:\n  dependencies:\n    - {conda: x}\n");
    assert!(err.contains("conda_file.dependencies[0]") && err.contains("pip"), "{err}");
}

#[test]
fn python_quirks_and_conflicts() {
    let err = error("python: 3.10\n");
    assert!(err.contains("quoted") && err.contains("3.1"), "{err}");
    let err = error("python: \"3.11\"\nconda_file:\n  dependencies: [python=3.10]\n");
    assert!(err.contains("python") && err.contains("conflicts"), "{err}");
    let r = resolve("python: \"3.10\"\nconda_file:\n  dependencies: [python=3.10]\n");
    assert_eq!(r.spec.python.as_deref(), Some("3.10"));
    let err = error("version: 1.10\n");
    assert!(err.contains("quote"), "{err}");
    let err = error("name: Bad Name\n");
    assert!(err.contains("name") && err.contains("starting with a letter or digit"), "{err}");
    // Azure's names (curated environments are spelled like this one) are fine.
    resolve("name: AzureML-sklearn-1.0-ubuntu20.04-py38-cpu\n");
}

#[test]
fn user_managed_uses_the_interpreter_as_is() {
    let r = resolve("name: sys\nuser_managed: true\ninterpreter: /usr/bin/python3\nvariables: {A: b}\n");
    assert!(r.spec.user_managed);
    assert_eq!(r.spec.interpreter.as_deref(), Some("/usr/bin/python3"));
    assert!(r.spec.packages.is_empty() && r.spec.python.is_none());

    let dir = tempfile::tempdir().unwrap();
    let r = resolve_in(dir.path(), "user_managed: true\npython: ./venv/bin/python\n").unwrap();
    assert_eq!(r.spec.interpreter, Some(dir.path().join("./venv/bin/python").to_string_lossy().into_owned()));

    let err = error("user_managed: true\npip: [six]\ninterpreter: python3\n");
    assert!(err.contains("user_managed") && err.contains("installs nothing"), "{err}");
    let err = error("user_managed: true\npython: \"3.11\"\n");
    assert!(err.contains("interpreter"), "{err}");
    let err = error("interpreter: /usr/bin/python3\n");
    assert!(err.contains("interpreter") && err.contains("user_managed"), "{err}");
}

#[test]
fn hash_is_canonical() {
    let a = resolve("pip: [six==1.16.0, NumPy, pandas>=2]\n").spec;
    let b = resolve("pip: [\"pandas >= 2\", numpy, six==1.16.0, numpy]\nvariables: {X: y}\n").spec;
    assert_eq!(a.packages, b.packages);
    assert_eq!(a.hash(), b.hash(), "reordering, duplicates, spelling and variables must not change the hash");
    assert_eq!(a.hash().len(), 64);

    let c = resolve("pip: [six==1.16.0, numpy, pandas>=2.1]\n").spec;
    assert_ne!(a.hash(), c.hash());
    let d = resolve("python: \"3.11\"\npip: [six==1.16.0, numpy, pandas>=2]\n").spec;
    assert_ne!(a.hash(), d.hash());

    // A hand-built spec hashes like its canonical form, whatever its order.
    let raw = EnvironmentSpec {
        packages: vec!["six==1.16.0".into(), "pandas>=2".into(), "numpy".into()],
        ..a.clone()
    };
    assert_eq!(raw.hash(), a.hash());
    assert_eq!(raw.canonicalize().unwrap(), a);
}

#[test]
fn validate_refuses_option_smuggling() {
    let spec = EnvironmentSpec { packages: vec!["--index-url=http://evil".into()], ..Default::default() };
    assert!(spec.validate().unwrap_err().to_string().contains("packages[0]"));
    let spec = EnvironmentSpec { python: Some("--system".into()), ..Default::default() };
    assert!(spec.validate().is_err());
}

#[test]
fn next_version_counts_integers() {
    assert_eq!(next_version([]), "1");
    assert_eq!(next_version(["1", "2", "10", "2024.1-rc"]), "11");
    assert_eq!(next_version(["beta"]), "1");
}
