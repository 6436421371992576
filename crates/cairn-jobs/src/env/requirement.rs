//! PEP 508 requirement strings and `requirements.txt` files.
//!
//! Requirements are normalised (PEP 503 names, sorted extras, whitespace-free sorted version
//! clauses) so that `NumPy >= 1.26` and `numpy>=1.26` hash the same. Only plain requirements are
//! accepted: a line that starts with `-` would be read by `uv` as an option (an index URL, an
//! editable path), which could fetch code from somewhere other than PyPI, so pip options are
//! refused with a clear error rather than passed through.

use std::path::Path;

use super::spec::SpecError;

/// How deep `-r other.txt` includes may nest; stops include cycles.
const MAX_INCLUDE_DEPTH: usize = 10;

/// Version comparison operators, longest first so that `===` is not read as `==` + `=`.
const OPERATORS: [&str; 8] = ["===", "~=", "==", "!=", "<=", ">=", "<", ">"];

/// A parsed requirement: its normalised project name and the canonical requirement string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Requirement {
    pub name: String,
    pub text: String,
}

/// PEP 503 normalisation: lower-case, runs of `-`, `_`, `.` become one `-`.
pub(crate) fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// Splits a leading distribution name (`[A-Za-z0-9._-]+`) off `s`.
pub(crate) fn split_name(s: &str) -> (&str, &str) {
    let end =
        s.find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))).unwrap_or(s.len());
    s.split_at(end)
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty() && b[0].is_ascii_alphanumeric() && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Parses one requirement and returns its canonical form; the error is a message without the
/// field, which the caller adds.
pub(crate) fn normalize_requirement(raw: &str) -> Result<Requirement, String> {
    let s = raw.trim();
    if s.is_empty() {
        return Err("empty requirement".into());
    }
    if s.starts_with('-') {
        return Err(format!(
            "pip option `{s}` is not supported: list requirements only (Cairn installs from PyPI)"
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("requirement {s:?} contains a control character"));
    }
    let (name, rest) = split_name(s);
    if !valid_name(name) {
        return Err(if s.contains("://") || s.starts_with(['.', '/']) {
            format!("`{s}` has no project name: write `NAME @ URL`")
        } else {
            format!("`{s}` is not a PEP 508 requirement such as `numpy>=1.26`")
        });
    }
    let name = normalize_name(name);
    let mut rest = rest.trim_start();

    let mut extras_text = String::new();
    if let Some(after) = rest.strip_prefix('[') {
        let Some(close) = after.find(']') else {
            return Err(format!("`{s}`: unclosed `[` in extras"));
        };
        let mut extras = Vec::new();
        for extra in after[..close].split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if !valid_name(extra) || !split_name(extra).1.is_empty() {
                return Err(format!("`{s}`: invalid extra `{extra}`"));
            }
            extras.push(normalize_name(extra));
        }
        extras.sort();
        extras.dedup();
        if !extras.is_empty() {
            extras_text = format!("[{}]", extras.join(","));
        }
        rest = after[close + 1..].trim_start();
    }

    if let Some(url_part) = rest.strip_prefix('@') {
        let url_part = url_part.trim_start();
        let (url, tail) = url_part.split_at(url_part.find(char::is_whitespace).unwrap_or(url_part.len()));
        if !url.contains("://") {
            return Err(format!("`{s}`: `@` must be followed by a URL"));
        }
        let marker = marker_of(tail.trim_start(), s)?;
        return Ok(Requirement { text: format!("{name}{extras_text} @ {url}{marker}"), name });
    }

    let (version_part, marker_part) = match rest.find(';') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let version = normalize_specifier(version_part).map_err(|e| format!("`{s}`: {e}"))?;
    let marker = marker_of(marker_part, s)?;
    Ok(Requirement { text: format!("{name}{extras_text}{version}{marker}"), name })
}

/// `; python_version < "3.9"` → `; python_version < "3.9"` (trimmed); empty stays empty.
fn marker_of(tail: &str, whole: &str) -> Result<String, String> {
    if tail.is_empty() {
        return Ok(String::new());
    }
    let Some(marker) = tail.strip_prefix(';') else {
        return Err(format!("`{whole}`: unexpected `{tail}`"));
    };
    let marker = marker.trim();
    if marker.is_empty() {
        return Err(format!("`{whole}`: empty environment marker after `;`"));
    }
    Ok(format!("; {marker}"))
}

/// Canonical version specifier: parentheses and whitespace removed, clauses sorted.
pub(crate) fn normalize_specifier(spec: &str) -> Result<String, String> {
    let mut compact: String = spec.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.starts_with('(') && compact.ends_with(')') {
        compact = compact[1..compact.len() - 1].to_string();
    }
    if compact.is_empty() {
        return Ok(String::new());
    }
    let mut clauses = Vec::new();
    for clause in compact.split(',') {
        let Some(op) = OPERATORS.iter().find(|op| clause.starts_with(**op)) else {
            return Err(if clause.starts_with('=') {
                format!("`{clause}` is conda syntax; pip uses `=={}`", clause.trim_start_matches('='))
            } else {
                format!("invalid version specifier `{clause}`")
            });
        };
        let version = &clause[op.len()..];
        let ok_chars = version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '*' | '+' | '!' | '_' | '-'));
        if version.is_empty() || !ok_chars {
            return Err(format!("invalid version in `{clause}`"));
        }
        clauses.push(clause.to_string());
    }
    clauses.sort();
    clauses.dedup();
    Ok(clauses.join(","))
}

/// One requirement read from a file, with where it came from for error messages.
#[derive(Debug)]
pub(crate) struct Located {
    pub field: String,
    pub text: String,
}

/// Reads a `requirements.txt`: comments, blank lines, `\` continuations and `-r` includes
/// (relative to the including file). `field` names the YAML field that referenced it.
pub(crate) fn read_requirements_file(path: &Path, field: &str) -> Result<Vec<Located>, SpecError> {
    let mut out = Vec::new();
    read_into(path, field, 0, &mut out)?;
    Ok(out)
}

fn read_into(path: &Path, field: &str, depth: usize, out: &mut Vec<Located>) -> Result<(), SpecError> {
    let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
        field: field.to_string(),
        path: path.to_path_buf(),
        source,
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut pending = String::new();
    let mut start_line = 0;
    for (i, line) in text.lines().enumerate() {
        if pending.is_empty() {
            start_line = i + 1;
        }
        if let Some(cont) = line.strip_suffix('\\') {
            pending.push_str(cont);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let logical = strip_comment(&std::mem::take(&mut pending)).trim().to_string();
        if logical.is_empty() {
            continue;
        }
        let here = format!("{field} ({} line {start_line})", path.display());
        if let Some(include) = include_target(&logical) {
            if depth >= MAX_INCLUDE_DEPTH {
                return Err(SpecError::invalid(here, "`-r` includes nest too deeply (a cycle?)"));
            }
            read_into(&dir.join(include), &here, depth + 1, out)?;
        } else if logical.starts_with('-') || logical.contains(" --") {
            let option = logical.split_whitespace().find(|w| w.starts_with('-')).unwrap_or(&logical);
            return Err(SpecError::invalid(
                here,
                format!(
                    "pip option `{option}` is not supported: list requirements only, installed from PyPI"
                ),
            ));
        } else {
            out.push(Located { field: here, text: logical });
        }
    }
    Ok(())
}

/// pip treats `#` as a comment at the start of a line or after whitespace (not inside URLs).
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return &line[..i];
        }
    }
    line
}

/// `-r other.txt`, `-rother.txt`, `--requirement other.txt`, `--requirement=other.txt`, and
/// conda's `-r file:other.txt` → `other.txt`.
pub(crate) fn include_target(line: &str) -> Option<&str> {
    let rest = line
        .strip_prefix("--requirement")
        .map(|r| r.trim_start_matches('='))
        .or_else(|| line.strip_prefix("-r"))?
        .trim();
    let rest = rest.strip_prefix("file:").unwrap_or(rest);
    (!rest.is_empty()).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        normalize_requirement(s).map(|r| r.text).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn normalises_names_versions_extras_and_markers() {
        assert_eq!(norm("NumPy >= 1.26"), "numpy>=1.26");
        assert_eq!(norm("Typing_Extensions"), "typing-extensions");
        assert_eq!(norm("ruamel.yaml"), "ruamel-yaml");
        assert_eq!(norm("pandas (<3, >=2.0)"), "pandas<3,>=2.0");
        assert_eq!(norm("requests[socks, Security]==2.31"), "requests[security,socks]==2.31");
        assert_eq!(norm("tomli; python_version < \"3.11\""), "tomli; python_version < \"3.11\"");
        assert_eq!(
            norm("pkg @ https://example.org/p.whl ; os_name == 'posix'"),
            "pkg @ https://example.org/p.whl; os_name == 'posix'"
        );
    }

    #[test]
    fn refuses_options_paths_and_conda_syntax() {
        for (bad, needle) in [
            ("--index-url=http://evil", "pip option"),
            ("-e .", "pip option"),
            ("./local/pkg", "no project name"),
            ("numpy=1.26", "conda syntax"),
            ("numpy 1.26", "invalid version specifier"),
            ("pkg @ notaurl", "URL"),
            ("", "empty"),
        ] {
            let err = normalize_requirement(bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn requirements_files_follow_includes_and_name_lines() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("base.txt"), "six==1.16.0  # pinned\n").unwrap();
        std::fs::write(dir.path().join("requirements.txt"), "# top\n\n-r base.txt\nnumpy>=1.26,\\\n  <3\n")
            .unwrap();
        let got = read_requirements_file(&dir.path().join("requirements.txt"), "requirements").unwrap();
        let texts: Vec<_> = got.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["six==1.16.0", "numpy>=1.26,   <3"]);
        assert!(got[1].field.contains("line 4"), "{}", got[1].field);

        std::fs::write(dir.path().join("bad.txt"), "six\n--extra-index-url http://x\n").unwrap();
        let err = read_requirements_file(&dir.path().join("bad.txt"), "requirements").err().unwrap();
        let msg = err.to_string();
        assert!(msg.contains("line 2") && msg.contains("--extra-index-url"), "{msg}");
    }
}
