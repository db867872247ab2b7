//! Locating sitelink's binaries and using `sitelink-keys`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

pub(crate) const GATEWAY: &str = "sitelink-gateway";
pub(crate) const KEYS: &str = "sitelink-keys";
pub(crate) const CLIENT: &str = "sitelink-client";

/// The path of workspace binary `name`.
///
/// The root package does not own the binaries, so Cargo gives no `CARGO_BIN_EXE_*` for them; they
/// are found next to the test executable (`target/<profile>/deps/<test>` →
/// `target/<profile>/<name>`), or in `$SITELINK_BIN_DIR` when that is set.
///
/// # Panics
/// When the binary is missing, with the command that builds it.
pub(crate) fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("SITELINK_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().expect("current_exe of the test binary");
            let deps = exe.parent().expect("test binary has a parent dir");
            if deps.file_name().is_some_and(|n| n == "deps") {
                deps.parent().expect("deps has a parent dir").to_owned()
            } else {
                deps.to_owned()
            }
        }
    };
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} not found: run `cargo build --workspace` first (or set SITELINK_BIN_DIR)",
        path.display()
    );
    path
}

/// Runs `sitelink-keys ARG` with `stdin`, returns its trimmed stdout.
fn keys(arg: &str, stdin: &str) -> Result<String> {
    let mut child = Command::new(bin(KEYS))
        .arg(arg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning sitelink-keys {arg}"))?;
    child
        .stdin
        .take()
        .context("sitelink-keys stdin")?
        .write_all(stdin.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "sitelink-keys {arg} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8(out.stdout).context("sitelink-keys output is not UTF-8")?;
    let text = text.trim().to_owned();
    if text.is_empty() {
        bail!("sitelink-keys {arg} printed nothing");
    }
    Ok(text)
}

/// Writes `contents` plus a newline to `path` with mode 0600 (created fresh).
pub(crate) fn write_secret(path: &Path, contents: &str) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(file, "{contents}")?;
    Ok(())
}

/// A key pair made with `sitelink-keys`; the private key lives in a 0600 file.
#[derive(Debug, Clone)]
pub(crate) struct KeyPair {
    pub(crate) private_key_file: PathBuf,
    pub(crate) private_key: String,
    pub(crate) public_key: String,
}

impl KeyPair {
    /// `sitelink-keys genkey > path` (0600), then `sitelink-keys pubkey < path`.
    pub(crate) fn generate(path: &Path) -> Result<Self> {
        let private_key = keys("genkey", "")?;
        write_secret(path, &private_key)?;
        let public_key = keys("pubkey", &private_key)?;
        Ok(Self {
            private_key_file: path.to_owned(),
            private_key,
            public_key,
        })
    }
}

/// `sitelink-keys genpsk > path` (0600); returns the key.
pub(crate) fn generate_psk(path: &Path) -> Result<String> {
    let psk = keys("genpsk", "")?;
    write_secret(path, &psk)?;
    Ok(psk)
}
