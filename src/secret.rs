//! Secrets: referenced from configuration (`{ env = "NAME" }` or `{ file = "path" }`), never
//! required inline, and never printed: `Debug` and `Display` show `***`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// Where a secret comes from, as written in the configuration.
#[derive(Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum SecretRef {
    /// An environment variable.
    Env(String),
    /// A file (trailing newline ignored); relative paths are read from the config file's folder.
    File(PathBuf),
    /// Inline value: allowed for demos and tests, discouraged in production.
    Value(Secret),
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "env:{name}"),
            SecretRef::File(path) => write!(f, "file:{}", path.display()),
            SecretRef::Value(_) => f.write_str("value:***"),
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why a secret could not be resolved. Never contains the secret itself.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The environment variable is not set or not UTF-8.
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    /// The file could not be read.
    #[error("cannot read secret file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The value is empty.
    #[error("secret {0} is empty")]
    Empty(String),
    /// A CSV cell is not `env:NAME` or `file:PATH`. The cell may hold a pasted secret, so
    /// only its length is kept.
    #[error("a {0}-character value is not a secret reference: write env:NAME or file:PATH (never the secret itself)")]
    BadReference(usize),
}

impl SecretRef {
    /// Parses the compact form used in CSV files: `env:NAME` or `file:PATH`.
    pub fn parse_compact(text: &str) -> Result<SecretRef, SecretError> {
        if let Some(name) = text.strip_prefix("env:").filter(|n| !n.is_empty()) {
            Ok(SecretRef::Env(name.to_string()))
        } else if let Some(path) = text.strip_prefix("file:").filter(|p| !p.is_empty()) {
            Ok(SecretRef::File(PathBuf::from(path)))
        } else {
            Err(SecretError::BadReference(text.chars().count()))
        }
    }

    /// Reads the secret; `base` is the folder relative file paths are taken from.
    pub fn resolve(&self, base: &Path) -> Result<Secret, SecretError> {
        let value = match self {
            SecretRef::Env(name) => std::env::var(name).map_err(|_| SecretError::MissingEnv(name.clone()))?,
            SecretRef::File(path) => {
                let full = base.join(path);
                let text = std::fs::read_to_string(&full).map_err(|source| SecretError::File { path: full, source })?;
                text.trim_end_matches(['\r', '\n']).to_string()
            }
            SecretRef::Value(secret) => return Ok(secret.clone()),
        };
        if value.is_empty() {
            return Err(SecretError::Empty(self.to_string()));
        }
        Ok(Secret(value))
    }
}

/// A secret value: printed as `***`, readable only through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for signing and sending only: never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        let r = SecretRef::Value(s);
        assert!(!format!("{r} {r:?}").contains("hunter2"));
    }

    #[test]
    fn resolves_env_and_file() {
        std::env::set_var("LOTBRIDGE_TEST_SECRET_A", "abc");
        assert_eq!(SecretRef::Env("LOTBRIDGE_TEST_SECRET_A".into()).resolve(Path::new(".")).unwrap().expose(), "abc");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.txt"), "xyz\n").unwrap();
        let r = SecretRef::parse_compact("file:s.txt").unwrap();
        assert_eq!(r.resolve(dir.path()).unwrap().expose(), "xyz");
        assert!(SecretRef::Env("LOTBRIDGE_TEST_SECRET_UNSET".into()).resolve(Path::new(".")).is_err());
        let bad = SecretRef::parse_compact("plaintextsecretvalue").unwrap_err().to_string();
        assert!(!bad.contains("plaintext"), "not even a prefix of a pasted secret: {bad}");
        assert!(bad.contains("20-character"), "{bad}");
    }
}
