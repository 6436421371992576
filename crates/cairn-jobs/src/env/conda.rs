//! Conda environment files, translated to a Python version plus PyPI requirements.
//!
//! Cairn builds every environment with `uv` from PyPI; it never runs conda. A conda file is
//! therefore read for what pip can honour: `python=X.Y` becomes the interpreter request, each
//! conda package becomes its PyPI name (the table below, for the names that differ), and the
//! `pip:` section is taken as is. Packages that exist only on conda (compilers, CUDA toolkits,
//! system libraries) cannot be installed this way, and saying so up front is kinder than a build
//! that fails minutes later with "no matching distribution".

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::requirement::{include_target, normalize_specifier, read_requirements_file, split_name, Located};
use super::spec::SpecError;

/// A conda environment file (`conda env export` / Azure ML v1 `CondaDependencies`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CondaFile {
    /// Ignored: the environment's name comes from the Cairn YAML.
    #[serde(default)]
    pub name: Option<String>,
    /// Ignored: packages come from PyPI.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Package match specs (`numpy=1.26`) and one `{pip: [...]}` mapping.
    #[serde(default)]
    pub dependencies: Vec<serde_yaml::Value>,
    /// Ignored: Cairn chooses where environments live.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Environment variables, merged under the Cairn YAML's own `variables`.
    #[serde(default)]
    pub variables: BTreeMap<String, serde_yaml::Value>,
}

/// What a conda file contributes to an environment.
#[derive(Debug, Default)]
pub(crate) struct CondaParts {
    /// The uv interpreter request (`3.11`, `>=3.8`) and the field it came from.
    pub python: Option<(String, String)>,
    /// Raw pip requirements, each with its field for error messages.
    pub packages: Vec<Located>,
    pub notes: Vec<String>,
}

/// Conda names whose PyPI distribution is named differently (or, for documentation, the same).
const CONDA_TO_PYPI: &[(&str, &str)] = &[
    ("pytorch", "torch"),
    ("pytorch-cpu", "torch"),
    ("pytorch-gpu", "torch"),
    ("py-xgboost", "xgboost"),
    ("py-xgboost-cpu", "xgboost"),
    ("py-xgboost-gpu", "xgboost"),
    ("opencv", "opencv-python"),
    ("py-opencv", "opencv-python"),
    ("tensorflow-gpu", "tensorflow"),
    ("matplotlib-base", "matplotlib"),
    ("msgpack-python", "msgpack"),
    ("pytables", "tables"),
    ("python-graphviz", "graphviz"),
    ("py-lightgbm", "lightgbm"),
    ("scikit-learn", "scikit-learn"),
    ("numpy", "numpy"),
    ("pandas", "pandas"),
    ("scipy", "scipy"),
    ("matplotlib", "matplotlib"),
    ("seaborn", "seaborn"),
    ("joblib", "joblib"),
    ("statsmodels", "statsmodels"),
    ("lightgbm", "lightgbm"),
    ("xgboost", "xgboost"),
    ("prophet", "prophet"),
    ("pmdarima", "pmdarima"),
    ("pillow", "pillow"),
    ("torchvision", "torchvision"),
    ("torchaudio", "torchaudio"),
    ("tensorflow", "tensorflow"),
];

/// Conda packages with no PyPI equivalent: system libraries, compilers, CUDA, R.
const CONDA_ONLY: &[&str] = &[
    "cudatoolkit",
    "cudatoolkit-dev",
    "cudnn",
    "cuda",
    "cuda-toolkit",
    "cuda-nvcc",
    "cuda-runtime",
    "pytorch-cuda",
    "nccl",
    "magma-cuda",
    "mkl",
    "mkl-include",
    "mkl_fft",
    "mkl_random",
    "intel-openmp",
    "libgcc",
    "libgcc-ng",
    "libstdcxx-ng",
    "libgfortran",
    "libgfortran-ng",
    "libgomp",
    "_libgcc_mutex",
    "_openmp_mutex",
    "ld_impl_linux-64",
    "libblas",
    "libcblas",
    "liblapack",
    "openblas",
    "libopenblas",
    "gcc",
    "gxx",
    "gcc_linux-64",
    "gxx_linux-64",
    "gfortran",
    "make",
    "openssl",
    "ca-certificates",
    "zlib",
    "libzlib",
    "xz",
    "bzip2",
    "sqlite",
    "tk",
    "readline",
    "ncurses",
    "libffi",
    "libuuid",
    "libiconv",
    "libxml2",
    "libpng",
    "jpeg",
    "libjpeg-turbo",
    "freetype",
    "hdf5",
    "libprotobuf",
    "libopencv",
    "ffmpeg",
    "graphviz",
    "nodejs",
    "r-base",
    "git",
    "icu",
    "yaml",
    "libyaml",
];

/// Conda meta-packages that only select a build variant; pip wheels have no such choice.
const CONDA_VARIANT_SELECTORS: &[&str] = &["cpuonly", "nomkl", "blas", "pytorch-mutex"];

/// What a conda package name becomes on PyPI.
pub(crate) enum Mapped {
    Pypi(String),
    CondaOnly,
    Dropped,
}

/// Maps one conda package name (already lower-case) to PyPI.
pub(crate) fn map_conda_name(name: &str) -> Mapped {
    if let Some((_, pypi)) = CONDA_TO_PYPI.iter().find(|(conda, _)| *conda == name) {
        Mapped::Pypi((*pypi).to_string())
    } else if CONDA_ONLY.contains(&name) || name.starts_with("r-") {
        Mapped::CondaOnly
    } else if CONDA_VARIANT_SELECTORS.contains(&name) {
        Mapped::Dropped
    } else {
        Mapped::Pypi(name.to_string())
    }
}

/// Reads `dependencies`; `field` is the YAML path of the conda file (`conda_file`), `base_dir`
/// the folder that `-r` includes in the `pip:` section are relative to.
pub(crate) fn parse_dependencies(
    conda: &CondaFile,
    field: &str,
    base_dir: &Path,
) -> Result<CondaParts, SpecError> {
    let mut parts = CondaParts::default();
    for (i, dep) in conda.dependencies.iter().enumerate() {
        let here = format!("{field}.dependencies[{i}]");
        match dep {
            serde_yaml::Value::String(s) => conda_package(s, &here, &mut parts)?,
            serde_yaml::Value::Mapping(m) => {
                let mut pip = None;
                for (k, v) in m {
                    match k.as_str() {
                        Some("pip") => pip = Some(v),
                        _ => {
                            return Err(SpecError::invalid(
                                here,
                                format!("unexpected key {}: only `pip: [...]` may appear here", yaml_repr(k)),
                            ))
                        }
                    }
                }
                let Some(serde_yaml::Value::Sequence(items)) = pip else {
                    return Err(SpecError::invalid(format!("{here}.pip"), "must be a list of requirements"));
                };
                for (j, item) in items.iter().enumerate() {
                    let at = format!("{here}.pip[{j}]");
                    let Some(text) = item.as_str() else {
                        return Err(SpecError::invalid(
                            at,
                            format!("expected a requirement string, got {}", yaml_repr(item)),
                        ));
                    };
                    match include_target(text.trim()) {
                        Some(file) => {
                            parts.packages.extend(read_requirements_file(&base_dir.join(file), &at)?)
                        }
                        None => parts.packages.push(Located { field: at, text: text.to_string() }),
                    }
                }
            }
            other => {
                return Err(SpecError::invalid(
                    here,
                    format!(
                        "expected a package such as `numpy=1.26` or `pip: [...]`, got {}",
                        yaml_repr(other)
                    ),
                ))
            }
        }
    }
    Ok(parts)
}

/// One conda match spec: `[channel::]name[ version[ build]]` or `name[=version[=build]]` or
/// `name>=1,<2`.
fn conda_package(spec: &str, field: &str, parts: &mut CondaParts) -> Result<(), SpecError> {
    let spec = spec.trim();
    let spec = spec.rsplit_once("::").map_or(spec, |(_, s)| s);
    if spec.contains('[') || spec.contains('|') {
        return Err(SpecError::invalid(
            field,
            format!("conda match spec `{spec}` is not supported: write `name=1.2` or `name>=1.2,<2`"),
        ));
    }
    let (name, rest) = split_name(spec);
    if name.is_empty() {
        return Err(SpecError::invalid(field, format!("`{spec}` does not start with a package name")));
    }
    let name = name.to_ascii_lowercase();
    let version = conda_version(rest).map_err(|e| SpecError::invalid(field, format!("`{spec}`: {e}")))?;
    match name.as_str() {
        "pip" => {}
        "python" => {
            let request = version.trim_start_matches("==").trim_end_matches(".*").to_string();
            if request.is_empty() {
                return Ok(());
            }
            if let Some((first, _)) = &parts.python {
                if *first != request {
                    return Err(SpecError::invalid(
                        field,
                        format!("python is given twice ({first} and {request})"),
                    ));
                }
            }
            parts.python = Some((request, field.to_string()));
        }
        _ => match map_conda_name(&name) {
            Mapped::Pypi(pypi) => {
                parts.packages.push(Located { field: field.to_string(), text: format!("{pypi}{version}") })
            }
            Mapped::CondaOnly => {
                return Err(SpecError::CondaOnly { field: field.to_string(), package: name })
            }
            Mapped::Dropped => parts.notes.push(format!(
                "{field}: dropped `{name}`: a conda build-variant selector, meaningless for pip"
            )),
        },
    }
    Ok(())
}

/// Conda version syntax → a pip specifier: `=1.26` → `==1.26.*`, `=1.26=py311_0` → `==1.26.*`
/// (the build string is conda's), ` 1.26` → `==1.26`, `>=1.2,<2` unchanged, `==1.26.4` exact.
fn conda_version(rest: &str) -> Result<String, String> {
    let space_form = rest.starts_with(char::is_whitespace);
    let rest = rest.trim();
    if rest.is_empty() {
        return Ok(String::new());
    }
    let fuzzy = |v: &str| {
        let v = v.trim_end_matches('*').trim_end_matches('.');
        if v.is_empty() {
            String::new()
        } else {
            format!("=={v}.*")
        }
    };
    let pip = if space_form {
        let version = rest.split_whitespace().next().unwrap_or_default();
        if version.starts_with(['<', '>', '=', '!', '~']) {
            version.to_string()
        } else if version.ends_with('*') {
            fuzzy(version)
        } else {
            format!("=={version}")
        }
    } else if rest.starts_with("==") || !rest.starts_with('=') {
        rest.to_string()
    } else {
        let version = rest[1..].split('=').next().unwrap_or_default();
        fuzzy(version)
    };
    normalize_specifier(&pip)
}

fn yaml_repr(v: &serde_yaml::Value) -> String {
    serde_yaml::to_string(v).map(|s| s.trim().to_string()).unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conda_versions_become_pip_specifiers() {
        for (conda, pip) in [
            ("", ""),
            ("=1.26", "==1.26.*"),
            ("=1.26.*", "==1.26.*"),
            ("=1.26.4=py311h64a7726_0", "==1.26.4.*"),
            ("==1.26.4", "==1.26.4"),
            (">=1.2", ">=1.2"),
            (">=1.2,<2", "<2,>=1.2"),
            (" 1.26", "==1.26"),
            (" 1.26* py311_0", "==1.26.*"),
            ("=*=mkl", ""),
        ] {
            assert_eq!(conda_version(conda).unwrap(), pip, "{conda:?}");
        }
    }

    #[test]
    fn names_map_to_pypi() {
        assert!(matches!(map_conda_name("pytorch"), Mapped::Pypi(n) if n == "torch"));
        assert!(matches!(map_conda_name("py-xgboost"), Mapped::Pypi(n) if n == "xgboost"));
        assert!(matches!(map_conda_name("requests"), Mapped::Pypi(n) if n == "requests"));
        assert!(matches!(map_conda_name("cudatoolkit"), Mapped::CondaOnly));
        assert!(matches!(map_conda_name("r-ggplot2"), Mapped::CondaOnly));
        assert!(matches!(map_conda_name("cpuonly"), Mapped::Dropped));
    }
}
