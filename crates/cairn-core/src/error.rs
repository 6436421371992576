//! The error type shared by every layer. Each variant says what went wrong in the user's words;
//! the server turns the variant into an HTTP status and a stable `code`.

/// Result alias used throughout Cairn's libraries.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed: a bad name, a bad path, a missing or mistyped field.
    #[error("{0}")]
    Invalid(String),
    /// No credentials, or credentials that match nothing.
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials without the right to do this.
    #[error("{0}")]
    Forbidden(String),
    /// The named thing does not exist.
    #[error("{kind} \"{name}\" not found")]
    NotFound { kind: &'static str, name: String },
    /// The request conflicts with the current state (already exists, not empty, different content).
    #[error("{0}")]
    Conflict(String),
    /// The request body is larger than the server accepts.
    #[error("{0}")]
    TooLarge(String),
    /// The request was understood but its content is wrong (e.g. a checksum mismatch).
    #[error("{0}")]
    Unprocessable(String),
    /// A dependency is temporarily unable to serve (database locked, storage unreachable).
    #[error("{0}")]
    Unavailable(String),
    /// The server ran out of space for metadata or files.
    #[error("{0}")]
    StorageFull(String),
    /// A bug or an unexpected failure of a dependency.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }
    pub fn conflict(msg: impl Into<String>) -> Self {
        Error::Conflict(msg.into())
    }
    pub fn internal(msg: impl std::fmt::Display) -> Self {
        Error::Internal(msg.to_string())
    }
    pub fn not_found(kind: &'static str, name: impl Into<String>) -> Self {
        Error::NotFound { kind, name: name.into() }
    }

    /// The stable machine-readable code sent in `{"error": {"code": …}}`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Invalid(_) => "invalid_argument",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::Forbidden(_) => "permission_denied",
            Error::NotFound { .. } => "not_found",
            Error::Conflict(_) => "conflict",
            Error::TooLarge(_) => "too_large",
            Error::Unprocessable(_) => "unprocessable",
            Error::Unavailable(_) => "unavailable",
            Error::StorageFull(_) => "storage_full",
            Error::Internal(_) => "internal",
        }
    }
}

/// `text` between double quotes as a message shows a user's path or location: as it is, quotes
/// and backslashes included (a message is text, not a Rust or JSON literal; the JSON body escapes
/// it once more on its own), with only control characters escaped (`\0`, `\n`, `\u{1b}` …) so
/// that none reaches a terminal.
pub fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::quoted;

    #[test]
    fn quotes_once_escaping_only_control_characters() {
        assert_eq!(quoted(r#"a\"b"#), r#""a\"b""#);
        assert_eq!(quoted("a\0b\nc\u{1b}"), r#""a\0b\nc\u{1b}""#);
        assert_eq!(quoted("données/x.csv"), "\"données/x.csv\"");
    }
}
