//! The in-job Python runtime (`python/cairn/`, standard library only) is compiled into the
//! binary and unpacked into the data directory at start, so every job finds it on PYTHONPATH
//! whatever its environment, with nothing to install.

use std::path::Path;

use anyhow::Context;

macro_rules! runtime_files {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../../python/cairn/", $name)))),*]
    };
}

/// `(file name, content)` of the `cairn` package.
const FILES: &[(&str, &str)] = runtime_files!(
    "__init__.py",
    "_batcher.py",
    "_client.py",
    "_config.py",
    "_mlflow_scoring.py",
    "_offline.py",
    "_online.py",
    "_records.py",
    "_retry.py",
    "_scoring.py",
    "_spill.py",
    "_upload.py",
    "_version.py",
    "replica.py",
    "run.py",
    "serving.py",
);

/// Writes the runtime under `dir/cairn/` (replacing what a previous version left).
pub fn unpack(dir: &Path) -> anyhow::Result<()> {
    let pkg = dir.join("cairn");
    std::fs::create_dir_all(&pkg).with_context(|| format!("cannot create {}", pkg.display()))?;
    for (name, content) in FILES {
        let path = pkg.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(*content) {
            std::fs::write(&path, content).with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(())
}
