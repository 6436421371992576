//! Relative paths inside a datastore or artifact store. Every path that comes from a user goes
//! through [`RelPath::parse`], which is the one place where traversal is refused.

use std::fmt;

use crate::Error;

/// Longest accepted path, in bytes (S3 keys are limited to 1024).
pub const MAX_PATH_BYTES: usize = 1024;
/// Longest accepted path component, in bytes (most file systems stop at 255).
pub const MAX_COMPONENT_BYTES: usize = 255;

/// A validated, normalised relative path: components separated by `/`, none empty, `.` or `..`,
/// no backslash, NUL or other control character, no leading `/`. May be empty (the root) only
/// when built with [`RelPath::parse_dir`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelPath(String);

impl RelPath {
    /// Parses a path to a file: must not be empty. A trailing `/` is refused.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        if raw.is_empty() {
            return Err(Error::invalid("path must not be empty"));
        }
        Self::check(raw, raw)
    }

    /// Parses a folder path: empty, `/` and `.` mean the root; one trailing `/` is allowed.
    pub fn parse_dir(raw: &str) -> Result<Self, Error> {
        let trimmed = raw.strip_suffix('/').unwrap_or(raw);
        if trimmed.is_empty() || trimmed == "." {
            if raw.starts_with("//") {
                return Err(Self::reject(raw, "it is absolute"));
            }
            return Ok(RelPath(String::new()));
        }
        Self::check(raw, trimmed)
    }

    fn check(raw: &str, body: &str) -> Result<Self, Error> {
        if raw.len() > MAX_PATH_BYTES {
            return Err(Self::reject(raw, &format!("it is longer than {MAX_PATH_BYTES} bytes")));
        }
        if raw.contains('\0') {
            return Err(Self::reject(raw, "it contains a NUL byte"));
        }
        if raw.contains('\\') {
            return Err(Self::reject(raw, "it contains a backslash; use '/' to separate folders"));
        }
        if raw.chars().any(char::is_control) {
            return Err(Self::reject(raw, "it contains a control character"));
        }
        if raw.starts_with('/') || (raw.len() >= 2 && raw.as_bytes()[1] == b':') {
            return Err(Self::reject(raw, "it is absolute; give a path relative to the store"));
        }
        for component in body.split('/') {
            match component {
                "" => return Err(Self::reject(raw, "it has an empty component ('//' or a trailing '/')")),
                "." | ".." => return Err(Self::reject(raw, "it contains '.' or '..'")),
                c if c.len() > MAX_COMPONENT_BYTES => {
                    return Err(Self::reject(
                        raw,
                        &format!("a component is longer than {MAX_COMPONENT_BYTES} bytes"),
                    ))
                }
                _ => {}
            }
        }
        Ok(RelPath(body.to_string()))
    }

    fn reject(raw: &str, why: &str) -> Error {
        let shown: String = raw.chars().take(120).collect();
        Error::Invalid(format!("invalid path {}: {why}", crate::quoted(&shown)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// `self/child`, where `child` is already valid.
    pub fn join(&self, child: &RelPath) -> RelPath {
        match (self.is_root(), child.is_root()) {
            (true, _) => child.clone(),
            (_, true) => self.clone(),
            _ => RelPath(format!("{}/{}", self.0, child.0)),
        }
    }

    /// The path relative to `base`, if it lies inside it.
    pub fn strip_prefix(&self, base: &RelPath) -> Option<RelPath> {
        if base.is_root() {
            return Some(self.clone());
        }
        let rest = self.0.strip_prefix(&base.0)?;
        if rest.is_empty() {
            Some(RelPath(String::new()))
        } else {
            rest.strip_prefix('/').map(|r| RelPath(r.to_string()))
        }
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_relative_paths() {
        assert_eq!(
            RelPath::parse("winedata/winequality_red.csv").unwrap().as_str(),
            "winedata/winequality_red.csv"
        );
        assert_eq!(RelPath::parse("a b/ü.txt").unwrap().as_str(), "a b/ü.txt");
        assert!(RelPath::parse_dir("").unwrap().is_root());
        assert!(RelPath::parse_dir("/").unwrap().is_root());
        assert_eq!(RelPath::parse_dir("winedata/").unwrap().as_str(), "winedata");
    }

    #[test]
    fn refuses_traversal_and_odd_bytes() {
        let long_component = "a".repeat(256);
        let long_path = "a/".repeat(600);
        for bad in [
            "..",
            "../x",
            "a/../../x",
            "a/./b",
            "/etc/passwd",
            "C:/x",
            "a\\b",
            "..\\x",
            "a\0b",
            "a//b",
            "a/",
            "",
            "a\nb",
            &long_component,
            &long_path,
        ] {
            let err = RelPath::parse(bad).unwrap_err();
            assert!(matches!(err, Error::Invalid(_)), "{bad:?} gave {err:?}");
        }
        for bad in ["..", "../", "//", "/abs", "a/../b/"] {
            assert!(RelPath::parse_dir(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_refused_path_is_shown_once_quoted() {
        let message = |raw: &str| RelPath::parse(raw).unwrap_err().to_string();
        assert_eq!(
            message(r#"a\"b"#),
            r#"invalid path "a\"b": it contains a backslash; use '/' to separate folders"#
        );
        assert_eq!(message("q\"/../x"), r#"invalid path "q"/../x": it contains '.' or '..'"#);
        assert_eq!(message("a\0b"), r#"invalid path "a\0b": it contains a NUL byte"#);
    }

    #[test]
    fn joins_and_strips() {
        let base = RelPath::parse_dir("winedata").unwrap();
        let file = RelPath::parse("x/y.csv").unwrap();
        let joined = base.join(&file);
        assert_eq!(joined.as_str(), "winedata/x/y.csv");
        assert_eq!(joined.strip_prefix(&base).unwrap(), file);
        assert!(RelPath::parse("winedatax/y").unwrap().strip_prefix(&base).is_none());
    }
}
