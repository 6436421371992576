//! Resource names (workspaces, datastores, tokens): short, lower-case, safe in URLs, file names
//! and DNS labels, so that the same name can be used everywhere without escaping.

use crate::Error;

/// The rule, quoted in every error so that users can fix the name without reading docs.
pub const NAME_RULE: &str =
    "1 to 63 characters: lower-case letters, digits, '-' and '_', starting with a letter or digit";

/// Checks `name` against `[a-z0-9][a-z0-9-_]{0,62}`; `what` names the field in the error.
pub fn validate_name(what: &str, name: &str) -> Result<(), Error> {
    let bytes = name.as_bytes();
    let first_ok = bytes.first().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_ok =
        bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_');
    if first_ok && rest_ok && bytes.len() <= 63 {
        Ok(())
    } else {
        Err(Error::Invalid(format!("invalid {what} {:?}: {NAME_RULE}", truncate(name))))
    }
}

/// The rule for versioned assets' names (models, environments): Azure ML's, so that names from
/// Azure and MLflow habits (`WineModel`, `AzureML-sklearn-1.0`, `wine.model`) work unchanged;
/// still one URL path segment with nothing to escape.
pub const ASSET_NAME_RULE: &str =
    "1 to 255 characters: letters, digits, '-', '_' and '.', starting with a letter or digit";

/// Checks a model name against `[A-Za-z0-9][A-Za-z0-9._-]{0,254}`.
pub fn validate_model_name(name: &str) -> Result<(), Error> {
    validate_asset_name("model name", name)
}

/// Checks an asset's name (`what` names it in the error) against `[A-Za-z0-9][A-Za-z0-9._-]{0,254}`.
pub fn validate_asset_name(what: &str, name: &str) -> Result<(), Error> {
    let bytes = name.as_bytes();
    let first_ok = bytes.first().is_some_and(|b| b.is_ascii_alphanumeric());
    let rest_ok = bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if first_ok && rest_ok && bytes.len() <= 255 {
        Ok(())
    } else {
        Err(Error::Invalid(format!("invalid {what} {:?}: {ASSET_NAME_RULE}", truncate(name))))
    }
}

fn truncate(s: &str) -> String {
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s.to_string()
    }
}

/// An environment reference, as jobs, deployments and the environments API take it: `NAME`,
/// `NAME:VERSION`, `NAME@VERSION`, `NAME@latest` (optionally `azureml:`-prefixed) → name and
/// version (None: the latest). A version that is not a number is an error, never the latest.
pub fn parse_environment_ref(env: &str) -> Result<(String, Option<i64>), Error> {
    let e = env.strip_prefix("azureml:").unwrap_or(env);
    let (name, version) = match e.split_once([':', '@']) {
        // Azure's `azureml:NAME@latest`.
        Some((n, "latest")) => (n, None),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_references() {
        assert_eq!(parse_environment_ref("py").unwrap(), ("py".into(), None));
        assert_eq!(parse_environment_ref("azureml:py:2").unwrap(), ("py".into(), Some(2)));
        assert_eq!(parse_environment_ref("py@3").unwrap(), ("py".into(), Some(3)));
        assert!(parse_environment_ref("py:x").is_err());
        assert!(parse_environment_ref("py@3x").is_err(), "a typo must not mean the latest");
        assert!(parse_environment_ref("@3").is_err());
        assert_eq!(parse_environment_ref("azureml:py@latest").unwrap(), ("py".into(), None));
    }

    #[test]
    fn accepts_names_that_follow_the_rule() {
        for ok in ["a", "0", "wine", "azureml_workspace", "cpu-cluster-2", &"a".repeat(63)] {
            validate_name("workspace name", ok).unwrap();
        }
    }

    #[test]
    fn model_names_follow_azure_mls_rule() {
        for ok in ["wine_model", "WineModel", "wine.model-2", "0", &"A".repeat(255)] {
            validate_model_name(ok).unwrap();
        }
        for bad in ["", ".hidden", "-a", "_a", "a b", "a/b", "a:1", "a@b", "é", "..", &"a".repeat(256)] {
            let err = validate_model_name(bad).unwrap_err().to_string();
            assert!(err.contains("invalid model name") && err.contains("'.'"), "{err}");
        }
    }

    #[test]
    fn rejects_names_that_break_the_rule_and_quotes_it() {
        for bad in ["", "-a", "_a", "Wine", "a b", "a/b", "a.b", "é", &"a".repeat(64)] {
            let err = validate_name("workspace name", bad).unwrap_err().to_string();
            assert!(err.contains("invalid workspace name"), "{err}");
            assert!(err.contains("lower-case"), "{err}");
        }
    }
}
