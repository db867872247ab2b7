//! [`ConfigError`]: what is wrong with a config file, where, and how to fix it.

use std::fmt;
use std::path::{Path, PathBuf};

/// What kind of mistake a [`ConfigError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The config file itself could not be read.
    Read,
    /// The file is not valid TOML (unclosed string or array, duplicate key, ...).
    Syntax,
    /// A key or table that sitelink does not know, usually a typo.
    UnknownKey,
    /// A required key or table is absent.
    MissingKey,
    /// A value has the wrong TOML type, e.g. a string where a number belongs.
    WrongType,
    /// A value has the right type but is not acceptable (out of range, not a prefix, ...).
    InvalidValue,
    /// Two entries that must differ are the same: peer names, public keys, routed prefixes.
    Duplicate,
    /// A key file named by the config is missing, unreadable, too permissive, or not a key.
    KeyFile,
    /// An endpoint's host name does not resolve.
    Resolve,
}

/// A mistake in a gateway config file.
///
/// Displays as `{file}:{line}: {message}` and, on the next line, `  fix: {fix}`. The line is left
/// out only when there is no location, i.e. when the file could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    file: PathBuf,
    line: Option<usize>,
    kind: ConfigErrorKind,
    message: String,
    fix: String,
}

impl ConfigError {
    pub(crate) fn new(
        file: &Path,
        line: Option<usize>,
        kind: ConfigErrorKind,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            file: file.to_owned(),
            line,
            kind,
            message: message.into(),
            fix: fix.into(),
        }
    }

    /// The config file, as the caller named it.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The 1-based line of the mistake, if it has one.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// What kind of mistake this is.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }

    /// What is wrong, without the location.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// How to fix it.
    pub fn fix(&self) -> &str {
        &self.fix
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": {}\n  fix: {}", self.message, self.fix)
    }
}
