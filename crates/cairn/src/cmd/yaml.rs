//! The YAML files the CLI takes in Azure ML v2's shapes (jobs, computes, endpoints, deployments):
//! read once here so that every command treats them alike.

use std::path::Path;

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde_yaml::Value;

/// Maps whose values are text. YAML reads `version: 2` or `enabled: true` as a number or a
/// boolean; Azure's files write tags and variables that way, and what is meant is the text.
const TEXT_MAPS: &[&str] = &["tags", "properties", "environment_variables"];

/// Reads `file` as YAML: `$schema` (an editor's hint) dropped, numbers and booleans in the
/// [`TEXT_MAPS`] turned into their text. Anything else is left for the typed parse to judge.
pub fn read(file: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut yaml: Value =
        serde_yaml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    if let Some(map) = yaml.as_mapping_mut() {
        map.remove("$schema");
        for key in TEXT_MAPS {
            if let Some(Value::Mapping(inner)) = map.get_mut(*key) {
                for (_, v) in inner.iter_mut() {
                    if let Some(text) = scalar_text(v) {
                        *v = Value::String(text);
                    }
                }
            }
        }
    }
    Ok(yaml)
}

/// The typed form of a file read with [`read`], errors named after the file.
pub fn parse<T: DeserializeOwned>(file: &Path, yaml: Value) -> anyhow::Result<T> {
    serde_yaml::from_value(yaml).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_booleans_in_text_maps_become_text() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("d.yml");
        std::fs::write(
            &file,
            "$schema: https://example/x.json\nname: blue\ninstance_count: 2\n\
             tags: {version: 2, ratio: 0.5, live: true, team: wine}\n\
             environment_variables: {WORKER_COUNT: 4}\nproperties: {nested: [1]}\n",
        )
        .unwrap();
        let yaml = read(&file).unwrap();
        let map = yaml.as_mapping().unwrap();
        assert!(map.get("$schema").is_none());
        // Only the text maps change: the count stays a number.
        assert_eq!(map.get("instance_count"), Some(&Value::Number(2.into())));
        let tags: std::collections::BTreeMap<String, String> =
            serde_yaml::from_value(map.get("tags").unwrap().clone()).unwrap();
        assert_eq!(tags["version"], "2");
        assert_eq!(tags["ratio"], "0.5");
        assert_eq!(tags["live"], "true");
        assert_eq!(tags["team"], "wine");
        assert_eq!(map.get("environment_variables").unwrap().get("WORKER_COUNT"), Some(&Value::from("4")));
        // A list is not a scalar: left for the typed parse to refuse.
        assert!(map.get("properties").unwrap().get("nested").unwrap().is_sequence());
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.yml");
        assert!(read(&missing).unwrap_err().to_string().contains("none.yml"));
        let bad = dir.path().join("bad.yml");
        std::fs::write(&bad, "name: [unclosed\n").unwrap();
        assert!(read(&bad).unwrap_err().to_string().contains("bad.yml"));
    }
}
