//! Helpers shared by the config tests (`config_load.rs`, `client_config.rs`).

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use sitelink_core::config::{ConfigError, ConfigErrorKind};

/// A new, empty temp directory named `<prefix>-<pid>-<n>`; the caller removes it.
pub(crate) fn fresh_dir(prefix: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Checks that loading `config_path` failed with an error at `line` of `kind` whose text has the
/// `file:line: ` prefix, a fix line and every one of `words`; returns the error.
pub(crate) fn expect_config_error<T: Debug>(
    result: Result<T, ConfigError>,
    config_path: &Path,
    line: usize,
    kind: ConfigErrorKind,
    words: &[&str],
) -> ConfigError {
    let err = match result {
        Ok(config) => panic!("config should fail, got {config:#?}"),
        Err(e) => e,
    };
    let text = err.to_string();
    eprintln!("{text}\n");
    assert_eq!(err.line(), Some(line), "wrong line in:\n{text}");
    assert_eq!(err.kind(), kind, "wrong kind for:\n{text}");
    let prefix = format!("{}:{line}: ", config_path.display());
    assert!(
        text.starts_with(&prefix),
        "no `file:line: ` prefix in:\n{text}"
    );
    assert!(text.contains("\n  fix: "), "no fix line in:\n{text}");
    assert!(!err.fix().is_empty(), "empty fix in:\n{text}");
    for word in words {
        assert!(text.contains(word), "{word:?} missing from:\n{text}");
    }
    err
}
