//! Registering model versions: the logic that spans the blob store and the metadata store.
//! A version's files are copied into the workspace's content-addressed blobs (the same area as
//! code snapshots, `routes::jobs::blobs_of`), so bytes already held are never copied again; the
//! store keeps the manifest. Both the native API and the MLflow API register through here.

use cairn_blob::{BlobStore, PutOpts};
use cairn_core::api::Workspace;
use cairn_core::models::{ModelFile, ModelVersion, NewModelVersion};
use cairn_core::{Error, RelPath};

use crate::routes::jobs::blobs_of;
use crate::state::AppState;

/// How many paths a "not found" message lists.
const LISTED: usize = 10;

/// Copies the file or folder at `path` of `src` into the workspace's blobs, builds the manifest,
/// detects the framework from an `MLmodel` file at the folder's root unless `req` gives one, and
/// records the next version of `req.name`. Fails with 404 naming `path` and listing some of what
/// `src` holds when `path` is neither a file nor a non-empty folder.
pub async fn register_from_blobs(
    state: &AppState,
    caller_name: &str,
    workspace: &Workspace,
    src: &BlobStore,
    path: &RelPath,
    mut req: NewModelVersion,
) -> Result<ModelVersion, Error> {
    let entries = files_under(src, path).await?;
    let blobs = blobs_of(state, &workspace.id);
    // Blobs found here must not be collected before the version naming them is recorded.
    let _refs = state.blob_refs.read().await;
    let mut files = Vec::with_capacity(entries.len());
    for (full, rel) in entries {
        let written = src.sha256_of(&full).await?;
        let blob = RelPath::parse(&written.sha256)?;
        if blobs.head(&blob).await?.is_none() {
            let (_, body) = src.get_stream(&full).await?;
            let opts = PutOpts {
                expected_sha256: Some(&written.sha256),
                expected_crc32: None,
                max_bytes: None,
                overwrite: true,
                ..Default::default()
            };
            blobs.put_stream(&blob, body, opts).await?;
        }
        files.push(ModelFile { path: rel, sha256: written.sha256, size: written.size as i64 });
    }
    detect_framework(&blobs, &files, &mut req).await?;
    state.store.create_model_version(workspace, &req, caller_name, &files).await
}

/// Registers from a manifest of blobs the client has already uploaded; every blob must exist.
pub async fn register_from_manifest(
    state: &AppState,
    caller_name: &str,
    workspace: &Workspace,
    mut files: Vec<ModelFile>,
    req: NewModelVersion,
) -> Result<ModelVersion, Error> {
    if files.is_empty() {
        return Err(Error::invalid("files must list at least one file"));
    }
    let blobs = blobs_of(state, &workspace.id);
    let _refs = state.blob_refs.read().await;
    let mut missing = Vec::new();
    for f in &mut files {
        f.path = RelPath::parse(&f.path)?.to_string();
        if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::invalid(format!("sha256 of {} must be 64 hexadecimal digits", f.path)));
        }
        f.sha256 = f.sha256.to_lowercase();
        match blobs.head(&RelPath::parse(&f.sha256)?).await? {
            None => missing.push(f.path.clone()),
            Some(found) if found.size as i64 != f.size => {
                return Err(Error::invalid(format!(
                    "size of {} is {} in the manifest but its blob holds {} bytes",
                    f.path, f.size, found.size
                )))
            }
            Some(_) => {}
        }
    }
    if !missing.is_empty() {
        return Err(Error::invalid(format!(
            "upload these files' blobs first (PUT …/blobs/SHA256): {}",
            missing.join(", ")
        )));
    }
    let mut req = req;
    detect_framework(&blobs, &files, &mut req).await?;
    state.store.create_model_version(workspace, &req, caller_name, &files).await
}

/// Fills in the framework from an `MLmodel` file at the root, unless the request names one.
async fn detect_framework(
    blobs: &BlobStore,
    files: &[ModelFile],
    req: &mut NewModelVersion,
) -> Result<(), Error> {
    if req.framework.is_some() {
        return Ok(());
    }
    if let Some(mlmodel) = files.iter().find(|f| f.path == "MLmodel") {
        let text = read_small(blobs, &RelPath::parse(&mlmodel.sha256)?).await?;
        if let Some((framework, version)) = framework_of_mlmodel(&text) {
            req.framework = Some(framework);
            req.framework_version = req.framework_version.take().or(version);
        }
    }
    Ok(())
}

/// The files to register as (path in `src`, path in the version): the file itself (named by its
/// last segment) or everything under the folder.
async fn files_under(src: &BlobStore, path: &RelPath) -> Result<Vec<(RelPath, String)>, Error> {
    if !path.is_root() {
        if let Some(file) = src.head(path).await? {
            let name = file.path.rsplit('/').next().unwrap_or(&file.path).to_string();
            return Ok(vec![(path.clone(), name)]);
        }
    }
    let mut found = Vec::new();
    for entry in src.list(path).await? {
        let full = RelPath::parse(&entry.path)?;
        let rel = full.strip_prefix(path).map(|r| r.to_string()).unwrap_or_else(|| entry.path.clone());
        found.push((full, rel));
    }
    if found.is_empty() {
        let all = src.list(&RelPath::parse_dir("")?).await?;
        let mut listed: Vec<String> = all.iter().take(LISTED).map(|f| f.path.clone()).collect();
        if all.len() > LISTED {
            listed.push(format!("and {} more", all.len() - LISTED));
        }
        let there = if listed.is_empty() { "there are none".to_string() } else { listed.join(", ") };
        return Err(Error::NotFound {
            kind: "artifact path",
            name: format!("{path}\" is not among the artifacts ({there}); \"{path}"),
        });
    }
    Ok(found)
}

/// Reads a small file (an `MLmodel`) into a string; larger files are not metadata and are skipped.
async fn read_small(blobs: &BlobStore, path: &RelPath) -> Result<String, Error> {
    let (size, mut stream) = blobs.get_stream(path).await?;
    if size > 1024 * 1024 {
        return Ok(String::new());
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        bytes.extend_from_slice(&chunk?);
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The framework an MLflow `MLmodel` file declares: the first flavor other than
/// `python_function` (which every MLflow model has), with its `{flavor}_version` when present.
pub fn framework_of_mlmodel(text: &str) -> Option<(String, Option<String>)> {
    let doc: serde_yaml::Value = serde_yaml::from_str(text).ok()?;
    let flavors = doc.get("flavors")?.as_mapping()?;
    let pick = flavors
        .iter()
        .find(|(k, _)| k.as_str() != Some("python_function"))
        .or_else(|| flavors.iter().next())?;
    let name = pick.0.as_str()?.to_string();
    let version = pick.1.get(format!("{name}_version")).and_then(|v| match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        _ => None,
    });
    Some((name, version))
}

#[cfg(test)]
mod tests {
    use super::framework_of_mlmodel;

    #[test]
    fn the_framework_is_the_flavor_that_is_not_python_function() {
        let mlmodel = "artifact_path: model\nflavors:\n  python_function:\n    loader_module: mlflow.sklearn\n    \
                       python_version: 3.11.5\n  sklearn:\n    pickled_model: model.pkl\n    sklearn_version: 1.5.2\n\
                       mlflow_version: 3.1.0\n";
        assert_eq!(framework_of_mlmodel(mlmodel), Some(("sklearn".into(), Some("1.5.2".into()))));
        let only_pyfunc = "flavors:\n  python_function:\n    loader_module: x\n";
        assert_eq!(framework_of_mlmodel(only_pyfunc), Some(("python_function".into(), None)));
        assert_eq!(framework_of_mlmodel("not: [yaml"), None);
        assert_eq!(framework_of_mlmodel("flavors: 3\n"), None);
    }
}
